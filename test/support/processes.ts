/**
 * The engine processes and temp dirs the test harness starts (no vitest imports: the benchmarks
 * use the starters too). Every server child is a {@link ServerProcess}: stopped by pid (a signal,
 * a grace period, then SIGKILL), paused with SIGSTOP and resumed with SIGCONT, and killed by one
 * exit hook if a test forgot it (a paused one gets SIGCONT first). Temp dirs made with
 * {@link tempDir} are removed by the same hook unless {@link removeDir} removed them before.
 * Never by name (no pkill): only the pids this process spawned.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** Whether `child` was spawned and has not exited. */
export function alive(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Whether every thread of `pid` is stopped (state T or t in /proc; true when /proc cannot tell). */
function allStopped(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state === 'T' || state === 't';
    });
  } catch {
    return true; // no /proc (not Linux) or the process is gone
  }
}

/** Block (at most `limitMs`, 1 ms steps) until {@link allStopped}: pause() is synchronous for its callers. */
function waitStopped(pid: number, limitMs: number): void {
  const until = Date.now() + limitMs;
  const tick = new Int32Array(new SharedArrayBuffer(4));
  while (!allStopped(pid) && Date.now() < until) Atomics.wait(tick, 0, 0, 1);
}

/** Resolves once `child` has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (!alive(child)) return Promise.resolve();
  return new Promise<void>((resolve) => child.once('exit', () => resolve()));
}

/** `process.kill` that ignores a process already gone. */
export function safeKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

const live = new Set<ServerProcess>();
const dirs = new Set<string>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // Last resort (a test that forgot to stop, an aborted run): nothing may outlive the process.
  process.on('exit', () => {
    for (const p of live) p.killNow();
    live.clear();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    dirs.clear();
  });
}

/** A fresh temp dir `<tmp>/<prefix>XXXXXX`, removed by the exit hook unless {@link removeDir} did. */
export function tempDir(prefix: string): string {
  hookExit();
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** Remove a dir made by {@link tempDir} (or any dir). Idempotent. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  dirs.delete(dir);
}

/**
 * One server process slot: the current child (replaced on restart), whether it is paused, and how
 * to kill it at once (default SIGCONT + SIGKILL of its pid; a server with worker processes, such
 * as postgres, passes a function that kills the whole tree).
 */
export class ServerProcess {
  child: ChildProcess | undefined;
  paused = false;

  constructor(private readonly kill: (pid: number) => void = (pid) => {
    safeKill(pid, 'SIGCONT');
    safeKill(pid, 'SIGKILL');
  }) {}

  /**
   * Take charge of a child just spawned (it replaces the previous one): tracked for the exit hook,
   * and unref'd, since the exit hook (not a ref'd handle) guarantees the cleanup. A spawn 'error'
   * is ignored here; callers that report it listen for it themselves.
   */
  adopt(child: ChildProcess): ChildProcess {
    child.unref();
    child.once('error', () => undefined);
    this.child = child;
    this.paused = false;
    live.add(this);
    hookExit();
    return child;
  }

  get running(): boolean {
    return alive(this.child);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * SIGSTOP: the server keeps its sockets but answers nothing. Returns once every thread of the
   * process is stopped (bounded, 1 s): kill() returns before the signal has stopped them all,
   * and a JVM's threads took 1.8 ms (p50) to 6.6 ms (max) here, long enough for ZooKeeper to
   * apply a request sent right after pause() (seen in 3 of 30 tries).
   */
  pause(): void {
    if (!alive(this.child)) return;
    this.paused = true;
    this.child.kill('SIGSTOP');
    const pid = this.child.pid;
    if (pid !== undefined) waitStopped(pid, 1000);
  }

  /** SIGCONT. */
  resume(): void {
    if (!alive(this.child)) return;
    this.paused = false;
    this.child.kill('SIGCONT');
  }

  /**
   * Send `signal` (SIGCONT first if paused), wait up to `graceMs` for the exit, then kill it at
   * once and wait; then it is no longer tracked. Resolves at once if it is not running.
   */
  async stop(signal: NodeJS.Signals, graceMs = 5000): Promise<void> {
    const child = this.child;
    if (alive(child)) {
      if (this.paused) child.kill('SIGCONT');
      this.paused = false;
      if (signal === 'SIGKILL') this.killNow();
      else child.kill(signal);
      const gone = await Promise.race([exited(child).then(() => true), delay(graceMs).then(() => false)]);
      if (!gone) {
        this.killNow();
        await exited(child);
      }
    }
    this.paused = false;
    live.delete(this);
  }

  /** Kill it now, synchronously (the exit hook's way). */
  killNow(): void {
    const pid = this.child?.pid;
    if (pid !== undefined && alive(this.child)) this.kill(pid);
  }
}
