import { fork, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { safeKill } from './processes.js';
import type { GoMessage, LogEntry, WorkerMessage, WorkerSpec } from './protocol.js';

export type { LogEntry, WorkerSpec } from './protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Repository root: `--import tsx` resolves from here. */
export const repoRoot = join(here, '..', '..');
const workerFile = join(here, 'lock-worker.ts');

/** A forked process speaking JSON messages `{ type, ... }` over IPC. */
export interface Supervised<In extends { type: string }, Out> {
  readonly pid: number;
  readonly child: ChildProcess;
  /** The next message of `type` (buffered); rejects on a worker error, an early exit, or timeout. */
  next<T extends In['type']>(type: T, timeoutMs: number): Promise<Extract<In, { type: T }>>;
  send(msg: Out): void;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Last lines the worker wrote to stderr/stdout (for failure messages). */
  output(): string;
}

/** A forked lock worker. */
export type WorkerHandle = Supervised<WorkerMessage, GoMessage>;

/** Every worker forked by this process that has not exited yet. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) if (c.pid !== undefined) safeKill(c.pid, 'SIGKILL');
});

/**
 * Watch a forked child (stdio piped, IPC): buffer its messages, keep the tail of its output, turn
 * an `{ type: 'error', message }` message or an early exit into a rejection of `next()`, and kill
 * it when this process exits.
 */
export function supervise<In extends { type: string; message?: string }, Out>(child: ChildProcess, label: string): Supervised<In, Out> {
  const pid = child.pid;
  if (pid === undefined) throw new Error('fork failed: no pid');
  live.add(child);
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const inbox: In[] = [];
  const waiters = new Set<() => void>();
  let failure: Error | undefined;
  const poke = (): void => {
    for (const w of [...waiters]) w();
  };
  child.on('message', (m: In) => {
    if (m.type === 'error') failure ??= new Error(`${label} ${pid} failed: ${m.message ?? ''}`);
    else inbox.push(m);
    poke();
  });
  child.once('error', (e) => {
    failure ??= e;
    poke();
  });
  // 'close' comes after the IPC channel has delivered every message ('exit' may come before the
  // last one): only then is "exited before X" true.
  let closed = false;
  child.once('close', () => {
    closed = true;
    poke();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
      poke();
    });
  });
  return {
    pid,
    child,
    exited,
    output: () => out,
    send: (msg) => {
      if (child.connected) child.send(msg as object);
    },
    next: <T extends In['type']>(type: T, timeoutMs: number) =>
      new Promise<Extract<In, { type: T }>>((resolve, reject) => {
        const check = (): void => {
          const i = inbox.findIndex((m) => m.type === type);
          if (i >= 0) {
            done();
            resolve(inbox.splice(i, 1)[0] as Extract<In, { type: T }>);
          } else if (failure) {
            done();
            reject(new Error(`${failure.message}\n--- worker output ---\n${out}`));
          } else if (closed) {
            done();
            reject(
              new Error(`${label} ${pid} exited (code ${child.exitCode}, signal ${child.signalCode}) before sending "${type}"\n--- worker output ---\n${out}`),
            );
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${label} ${pid}: no "${type}" within ${timeoutMs} ms\n--- worker output ---\n${out}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
}

/**
 * Fork a lock worker running TypeScript through tsx. It talks JSON over IPC: see protocol.ts.
 */
export function forkWorker(spec: WorkerSpec): WorkerHandle {
  const child = fork(workerFile, [JSON.stringify(spec)], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'json',
  });
  return supervise<WorkerMessage, GoMessage>(child, 'worker');
}

/**
 * Wait until every worker is `ready`, then send all of them the same start instant on the shared
 * monotonic clock, `leadMs` from now.
 */
export async function startTogether(workers: readonly WorkerHandle[], opts: { readyTimeoutMs?: number; leadMs?: number } = {}): Promise<bigint> {
  await Promise.all(workers.map((w) => w.next('ready', opts.readyTimeoutMs ?? 30_000)));
  const at = process.hrtime.bigint() + BigInt((opts.leadMs ?? 200) * 1e6);
  for (const w of workers) w.send({ type: 'go', at: at.toString() });
  return at;
}

/** Run lock-loop workers to completion; returns every worker's log. Kills them all on failure. */
export async function runLockLoops(
  specs: readonly Extract<WorkerSpec, { mode: 'loop' }>[],
  opts: { timeoutMs: number },
): Promise<{ logs: LogEntry[]; startAt: bigint }> {
  const workers = specs.map((s) => forkWorker(s));
  try {
    const startAt = await startTogether(workers);
    const results = await Promise.all(workers.map((w) => w.next('done', opts.timeoutMs)));
    const exits = await Promise.all(workers.map((w) => w.exited));
    exits.forEach((e, i) => {
      if (e.code !== 0) throw new Error(`worker ${workers[i]?.pid} exited with code ${e.code}, signal ${e.signal}`);
    });
    return { logs: results.flatMap((r) => r.log), startAt };
  } finally {
    await killWorkers(workers);
  }
}

/** SIGKILL the given workers (or every live one; SIGCONT first, in case they are stopped) and wait for them to exit. */
export async function killWorkers(workers?: readonly { readonly child: ChildProcess }[]): Promise<void> {
  const targets = workers ? workers.map((w) => w.child) : [...live];
  await Promise.all(
    targets.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
      const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      safeKill(c.pid, 'SIGCONT');
      safeKill(c.pid, 'SIGKILL');
      await gone;
    }),
  );
}
