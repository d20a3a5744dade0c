/**
 * Release notifications between processes that share one SQLite lock file.
 *
 * A release writes one byte at offset 0 of a small file beside the database (so the file never
 * grows); every driver instance that has waiters keeps ONE `fs.watch` (inotify on Linux) on that
 * file and wakes all of its open watches. Waking all is cheap: the core's wait queue keeps a single
 * engine waiter per key per process, and each one re-tries in one transaction.
 *
 * A notification is a hint, never a grant: a lost one costs at most the holder's remaining TTL,
 * which bounds every wait. When the file cannot be watched at all (inotify limit reached, the path
 * is not a regular file...), open watches fall back to a jittered backoff so waits still end.
 */
import { LatchWatch } from '../../core/change-watch.js';
import { closeSync, constants, openSync, watch as watchFile, writeSync, type FSWatcher } from 'node:fs';
import { backoffMs } from '../../core/abort.js';
import { MAX_TIMER_MS } from '../../core/validate.js';
import type { ChangeWatch } from '../driver.js';

const POKE = Buffer.from([1]);

/** One notify file, watched lazily while at least one {@link ChangeWatch} is open. */
export class ReleaseNotifier {
  private watcher: FSWatcher | undefined;
  private readonly listeners = new Set<() => void>();
  private closed = false;
  private watched = false;

  constructor(readonly file: string) {}

  /** Number of open watches (lets tests check that finished waits leave nothing behind). */
  get openWatches(): number {
    return this.listeners.size;
  }

  /** Whether a file watch is active right now (false: waits fall back to backoff). */
  get watching(): boolean {
    return this.watcher !== undefined;
  }

  /**
   * Open a watch. The file watch is registered before this returns, so a release committed after
   * it (the waiter's decisive try comes next) cannot go unseen.
   */
  open(): ChangeWatch {
    let attempt = 0;
    const latch = new LatchWatch(() => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stopWatcher();
    });
    const listener = (): void => latch.changed();
    this.listeners.add(listener);
    this.ensureWatcher();
    return {
      next: (maxMs, signal) => {
        if (this.listeners.has(listener)) this.ensureWatcher();
        // Without a file watch only our own releases are seen: retry after a backoff instead.
        const delay = this.watcher ? maxMs : Math.min(maxMs, backoffMs(attempt++));
        return latch.next(Math.min(Math.max(0, delay), MAX_TIMER_MS), signal);
      },
      close: () => latch.close(),
    };
  }

  /**
   * A lock was released: wake this instance's watches at once, and every other instance (in any
   * process) through the file. Never throws: the release itself already succeeded.
   */
  publish(): void {
    this.dispatch();
    let fd: number | undefined;
    try {
      fd = openSync(this.file, constants.O_WRONLY | constants.O_CREAT);
      writeSync(fd, POKE, 0, 1, 0);
    } catch {
      // Waiters elsewhere still wake by the holder's TTL (or their backoff without a watch).
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  /**
   * Stop watching and wake every open watch (their next try then reports the closed driver).
   * Resolves once libuv has finished closing any file watch this notifier ever opened: a watch's
   * handle is only released at the end of the event-loop turn in which `close()` was called.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.stopWatcher();
    this.dispatch();
    this.listeners.clear();
    if (this.watched) await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }

  private dispatch(): void {
    for (const listener of [...this.listeners]) listener();
  }

  private ensureWatcher(): void {
    if (this.watcher || this.closed) return;
    let w: FSWatcher;
    try {
      closeSync(openSync(this.file, constants.O_WRONLY | constants.O_CREAT));
      // Persistent, like the wait's own timer: it exists only while someone waits, and a leaked
      // watch shows in process.getActiveResourcesInfo().
      w = watchFile(this.file);
    } catch {
      return;
    }
    w.on('change', (type: string) => {
      // 'rename': the file was removed or replaced; watch the new one on the next wait.
      if (type === 'rename') this.dropWatcher(w);
      this.dispatch();
    });
    w.on('error', () => {
      this.dropWatcher(w);
      this.dispatch();
    });
    this.watcher = w;
    this.watched = true;
  }

  private dropWatcher(w: FSWatcher): void {
    if (this.watcher === w) this.watcher = undefined;
    w.close();
  }

  private stopWatcher(): void {
    if (this.watcher) this.dropWatcher(this.watcher);
  }
}
