import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isWorkerMessage, type ParentMessage, type WorkerConfig, type WorkerMessage } from './protocol.js';
import { DemoError } from './store.js';

type Done = Extract<WorkerMessage, { type: 'done' }>;

/** Where the compiled worker is, next to this module (dist/esm/cli/flash-sale/worker.js). */
function workerModule(): { path: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const path = fileURLToPath(new URL(fromSource ? './worker.ts' : './worker.js', import.meta.url));
  // Running from source (tsx): the workers need the same loader.
  return { path, execArgv: fromSource ? ['--import', 'tsx'] : [] };
}

/**
 * The forked worker processes of one run. Any failure of any worker (an 'error' message, an exit
 * before 'done', a spawn error) fails the whole pool: every pending {@link until} rejects with it.
 */
export class WorkerPool {
  private readonly children: ChildProcess[] = [];
  private readonly closed = new Set<number>();
  private readonly stderrTails: string[] = [];
  private readonly failure = new AbortController();
  private readonly waiters = new Set<() => void>();
  readonly ready = new Set<number>();
  readonly done: number[] = [];
  readonly orders: number[] = [];
  /** Lock acquisitions by worker (with the lock). */
  readonly locks: number[] = [];
  readonly results: (Done | undefined)[] = [];

  constructor(private readonly onProgress: () => void) {}

  /** The workers' pids, by worker index. */
  pids(): (number | undefined)[] {
    return this.children.map((c) => c.pid);
  }

  get size(): number {
    return this.children.length;
  }

  spawn(configs: readonly WorkerConfig[]): void {
    const { path, execArgv } = workerModule();
    for (const cfg of configs) {
      const i = cfg.index;
      this.done[i] = 0;
      this.orders[i] = 0;
      this.stderrTails[i] = '';
      const child = fork(path, [JSON.stringify(cfg)], {
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        execArgv: [...process.execArgv, ...execArgv],
        serialization: 'json',
      });
      this.children[i] = child;
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (d: string) => {
        this.stderrTails[i] = ((this.stderrTails[i] ?? '') + d).slice(-2000);
      });
      child.on('message', (m: unknown) => {
        if (isWorkerMessage(m)) this.onMessage(m);
      });
      child.on('error', (e) => this.fail(new DemoError(`Worker ${i} failed: ${e.message}`, { cause: e })));
      // 'close' comes after the IPC channel closed, so a 'done' sent before exiting is already in.
      child.on('close', (code, signal) => {
        this.closed.add(i);
        if (!this.results[i]) {
          const tail = (this.stderrTails[i] ?? '').trim();
          this.fail(
            new DemoError(
              `Worker ${i} (pid ${child.pid}) exited (${signal ?? `code ${code}`}) before finishing.` +
                (tail ? `\n${tail}` : ''),
            ),
          );
        }
        this.notify();
      });
    }
  }

  private onMessage(m: WorkerMessage): void {
    switch (m.type) {
      case 'ready':
        this.ready.add(m.index);
        break;
      case 'progress':
        this.done[m.index] = m.done;
        this.orders[m.index] = m.orders;
        this.locks[m.index] = m.locks ?? 0;
        this.onProgress();
        break;
      case 'done':
        this.done[m.index] = m.done;
        this.orders[m.index] = m.orders;
        this.locks[m.index] = m.locks ?? 0;
        this.results[m.index] = m;
        this.onProgress();
        break;
      case 'error':
        this.fail(new DemoError(`Worker ${m.index}: ${m.message}`));
        break;
    }
    this.notify();
  }

  /** Fail the run (first failure wins). */
  fail(err: Error): void {
    if (!this.failure.signal.aborted) this.failure.abort(err);
    this.notify();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolve once `cond()` holds; reject on the pool's failure, `signal`, or after `timeoutMs`. */
  until(cond: () => boolean, timeoutMs: number, what: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const finish = (err?: Error): void => {
        this.waiters.delete(check);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err === undefined) resolve();
        else reject(err);
      };
      const check = (): void => {
        if (this.failure.signal.aborted) finish(this.failure.signal.reason as Error);
        else if (cond()) finish();
      };
      const onAbort = (): void => finish(signal?.reason as Error);
      const timer = setTimeout(() => finish(new DemoError(`Timed out after ${timeoutMs} ms ${what}.`)), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(check);
      if (signal?.aborted) onAbort();
      else check();
    });
  }

  send(msg: ParentMessage): void {
    for (const child of this.children) if (child.connected) child.send(msg);
  }

  /** Stop every worker still running, by pid: SIGTERM, then SIGKILL after `graceMs`. */
  async kill(graceMs = 1000): Promise<void> {
    const alive = (): ChildProcess[] => this.children.filter((c, i) => c && !this.closed.has(i) && c.exitCode === null && c.signalCode === null);
    for (const c of alive()) c.kill('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (alive().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of alive()) c.kill('SIGKILL');
  }

  /** Wait (bounded) for every worker to be gone, so nothing is left running. */
  async exited(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.closed.size < this.children.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }
}
