/**
 * contended: `processes` forked processes, one key, each looping lock -> GET -> +1 -> SET ->
 * unlock for `seconds`. Reports throughput (cycles completed inside the window per second), the
 * longest and p99 wait for the lock, the share of releases after which the releaser itself took
 * the lock again (acquisition order from the counter values), and lost updates (a counter value
 * seen twice: mutual exclusion broken).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FromWorker, ToWorker } from './contended-worker.js';
import type { DlockSource, LibSpec } from './libs.js';
import { between, now, quantile, snapshot, workerExecArgv, type ServerMonitor } from './support.js';

export interface ContendedOptions {
  processes: number;
  seconds: number;
  warmupSeconds: number;
  dlock: DlockSource;
}

export interface ContendedResult {
  cyclesPerSecond: number;
  maxWaitMs: number;
  p99WaitMs: number;
  retakenPct: number;
  lostUpdates: number;
  giveUps: number;
  commandsPerCycle: number;
  /** Calls per cycle of each Redis command (INFO commandstats), largest first. */
  commandBreakdown: Array<[command: string, perCycle: number]>;
  serverCpuPct: number;
}

type Done = Extract<FromWorker, { type: 'done' }>;

/** The forked processes, kept for every library and repetition of the scenario. */
export class WorkerPool {
  private readonly workers: ChildProcess[] = [];

  static start(n: number): WorkerPool {
    const pool = new WorkerPool();
    const file = fileURLToPath(new URL('./contended-worker.ts', import.meta.url));
    const execArgv = workerExecArgv();
    for (let i = 0; i < n; i++) {
      pool.workers.push(fork(file, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    }
    return pool;
  }

  /** Send `m` to every worker; resolve their next message of type `type` (reject on 'failed'). */
  private all<T extends FromWorker['type']>(m: ToWorker | ((i: number) => ToWorker), type: T): Promise<Extract<FromWorker, { type: T }>[]> {
    return Promise.all(
      this.workers.map(
        (w, i) =>
          new Promise<Extract<FromWorker, { type: T }>>((resolve, reject) => {
            const onMessage = (r: FromWorker): void => {
              w.off('message', onMessage);
              w.off('exit', onExit);
              if (r.type === type) resolve(r as Extract<FromWorker, { type: T }>);
              else reject(new Error(r.type === 'failed' ? r.error : `unexpected ${r.type}`));
            };
            const onExit = (code: number | null): void => reject(new Error(`worker ${i} exited (${code})`));
            w.on('message', onMessage);
            w.once('exit', onExit);
            w.send(typeof m === 'function' ? m(i) : m);
          }),
      ),
    );
  }

  async run(spec: LibSpec, url: string, monitor: ServerMonitor, opts: ContendedOptions, tag: string): Promise<ContendedResult> {
    const key = `bench:cont:${spec.id}:${tag}`;
    const counter = `${key}:counter`;
    await this.all({ type: 'prepare', lib: spec.id, url, key, counter, dlock: opts.dlock }, 'ready');
    try {
      const go = (seconds: number, warmup: boolean): Promise<Done[]> => {
        const startAt = now() + 100_000_000n;
        const stopAt = startAt + BigInt(Math.round(seconds * 1e9));
        return this.all({ type: 'go', startAt: String(startAt), stopAt: String(stopAt), warmup }, 'done');
      };
      await go(opts.warmupSeconds, true); // the same contention, untimed: JIT and connections warm
      const statsA = await monitor.commandStats();
      const a = await snapshot(monitor);
      const done = await go(opts.seconds, false);
      const b = await snapshot(monitor);
      const statsB = await monitor.commandStats();

      // Acquisition order = counter order. Who took value v+1 after the holder of v released?
      const byValue = new Map<number, number>();
      let lostUpdates = 0;
      let total = 0;
      done.forEach((d, worker) => {
        for (const v of d.values) {
          if (byValue.has(v)) lostUpdates++;
          else byValue.set(v, worker);
          total++;
        }
      });
      const order = [...byValue.keys()].sort((x, y) => x - y);
      let retaken = 0;
      for (let i = 1; i < order.length; i++) {
        if (byValue.get(order[i] ?? -1) === byValue.get(order[i - 1] ?? -2)) retaken++;
      }
      const waits = done.flatMap((d) => d.waits).sort((x, y) => x - y);
      const inWindow = done.reduce((s, d) => s + d.inWindow, 0);
      const errors = done.flatMap((d) => d.errors);
      if (errors.length > 0) process.stderr.write(`  ${spec.name}: ${errors.length} acquire errors, e.g. ${errors[0]}\n`);
      const d = between(a, b);
      const commandBreakdown: Array<[string, number]> = [...statsB]
        .map(([cmd, calls]): [string, number] => [cmd, (calls - (statsA.get(cmd) ?? 0)) / Math.max(1, total)])
        .filter(([cmd, perCycle]) => cmd !== 'info' && perCycle > 0)
        .sort((x, y) => y[1] - x[1]);
      return {
        cyclesPerSecond: inWindow / opts.seconds,
        maxWaitMs: waits[waits.length - 1] ?? Number.NaN,
        p99WaitMs: quantile(waits, 0.99),
        retakenPct: order.length > 1 ? (100 * retaken) / (order.length - 1) : Number.NaN,
        lostUpdates,
        giveUps: done.reduce((s, x) => s + x.giveUps, 0),
        // Everything sent while the processes ran (including the GET/SET of the work itself).
        commandsPerCycle: d.commands / Math.max(1, total),
        commandBreakdown,
        serverCpuPct: d.serverCpuPct,
      };
    } finally {
      await this.all({ type: 'close' }, 'closed');
    }
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.exitCode !== null || w.signalCode !== null) return resolve();
            const timer = setTimeout(() => w.kill('SIGKILL'), 5000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            w.send({ type: 'exit' } satisfies ToWorker);
          }),
      ),
    );
  }
}
