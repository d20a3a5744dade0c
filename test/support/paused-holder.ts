/**
 * The paused-holder scenario behind the fencing tests (no vitest here): `workers` processes
 * (paused-holder-worker.ts) each take the lock `increments` times and add one to a counter kept
 * in the engine (fenced-counter/<kind>.ts). The first to hold the lock in worker 0 (the victim)
 * reads the counter and is then frozen (SIGSTOP) for `pauseMs` (default 1.5 x TTL): its renewals
 * cannot run, its lock may go to others, who go on incrementing. Resumed, it writes its stale
 * value anyway. With a fenced write the engine refuses it and no increment is lost; with a plain
 * write (the control run) increments are lost, which shows the check can see the failure.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { openCounter, type CounterKind, type FencedCounter } from './fenced-counter/index.js';
import { alive, safeKill } from './processes.js';

const WORKER = fileURLToPath(new URL('./paused-holder-worker.ts', import.meta.url));

/** What the victim said when it held the lock (plus its counter's `holding` facts). */
export interface Holding {
  type: 'holding';
  token: string;
  pid: number;
  [fact: string]: unknown;
}

export interface WorkerDone {
  accepted: number;
  rejected: number;
  /** The victim's view of its paused lease when it resumed. */
  paused?: { abortedBeforeWrite: boolean; reason?: string; token: string };
}

export interface PausedHolderOptions {
  /** Which engine keeps the counter. */
  counter: CounterKind;
  /** The lock URL the workers connect to (also where the counter is). */
  url: string;
  mode: 'fenced' | 'plain';
  ttlMs: number;
  /** How long the victim stays frozen. Default 1.5 x `ttlMs`. */
  pauseMs?: number;
  /** Default 4. */
  workers?: number;
  /** Lock-and-increment cycles per worker. Default 12. */
  increments?: number;
  /** Create the counter `id` before the workers start (e.g. insert its row). */
  prepare?(id: string): Promise<void>;
  /**
   * Runs while the victim is frozen, from the SIGSTOP; `pauseOver` resolves after `pauseMs`. The
   * victim is resumed once both this and `pauseMs` are over.
   */
  whilePaused?(ctx: { holding: Holding; counter: FencedCounter; pauseOver: Promise<void> }): Promise<void>;
}

export interface PausedHolderResult {
  /** The counter at the end. */
  final: number;
  /** Per worker; [0] is the victim. */
  done: WorkerDone[];
  /** Writes accepted / refused as stale, summed over the workers. */
  accepted: number;
  rejected: number;
  /** How long the victim was really frozen. */
  pausedMs: number;
}

/** Run the scenario once on a fresh key and counter; every worker is gone when it settles. */
export async function runPausedHolder(opts: PausedHolderOptions): Promise<PausedHolderResult> {
  const id = randomUUID();
  const key = `fence-test:${id}`;
  const pauseMs = opts.pauseMs ?? opts.ttlMs * 1.5;
  const increments = opts.increments ?? 12;
  await opts.prepare?.(id);
  const counter = await openCounter(opts.counter, opts.url, id);
  const procs: ChildProcess[] = [];
  try {
    for (let i = 0; i < (opts.workers ?? 4); i++) {
      const args = [opts.counter, opts.url, key, id, opts.mode, String(increments), String(opts.ttlMs), i === 0 ? '1' : '0'];
      procs.push(fork(WORKER, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    }
    const done = procs.map(
      (c) =>
        new Promise<WorkerDone>((resolve, reject) => {
          c.on('message', (m: { type: string } & WorkerDone) => {
            if (m.type === 'done') resolve(m);
          });
          c.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))));
        }),
    );
    // Every rejection is handled by Promise.all below; this keeps an early one from going unhandled.
    for (const d of done) d.catch(() => undefined);

    const victim = procs[0]!;
    let pausedMs = 0;
    let pauseFailed: Error | undefined;
    victim.on('message', (m: Holding) => {
      if (m.type !== 'holding') return;
      process.kill(victim.pid!, 'SIGSTOP');
      const t0 = performance.now();
      const pauseOver = delay(pauseMs);
      void Promise.all([pauseOver, opts.whilePaused?.({ holding: m, counter, pauseOver })])
        .catch((e: unknown) => (pauseFailed = e instanceof Error ? e : new Error(String(e))))
        .finally(() => {
          process.kill(victim.pid!, 'SIGCONT');
          pausedMs = performance.now() - t0;
          setTimeout(() => victim.send({ type: 'write' }), 50);
        });
    });
    // Start them together once every worker is connected.
    const ready = Promise.all(procs.map((c) => new Promise<void>((resolve) => c.on('message', (m: { type: string }) => m.type === 'ready' && resolve()))));
    await Promise.race([ready, Promise.all(done)]);
    for (const c of procs) c.send({ type: 'go' });
    const results = await Promise.all(done);
    if (pauseFailed !== undefined) throw pauseFailed;
    return {
      final: await counter.read(),
      done: results,
      accepted: results.reduce((s, d) => s + d.accepted, 0),
      rejected: results.reduce((s, d) => s + d.rejected, 0),
      pausedMs,
    };
  } finally {
    for (const c of procs) {
      if (alive(c) && c.pid !== undefined) {
        safeKill(c.pid, 'SIGCONT');
        safeKill(c.pid, 'SIGKILL');
      }
    }
    await counter.close();
  }
}
