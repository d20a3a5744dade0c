/**
 * In-memory reference driver: the executable specification of the driver contract.
 *
 * Guarantees: everything the contract promises, within ONE process (tokens strictly increase per
 * key for the lifetime of the driver; TTLs by the monotonic clock; release wakes waiters at once).
 * Does not: share locks between processes, or survive a restart. Use it for tests and for code
 * that only needs to coordinate async tasks in one process.
 */
import { monotonicNow } from '../../core/clock.js';
import { LatchWatch } from '../../core/change-watch.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  TrySetDriver,
  LockState,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import { ClosedError, IdsExhaustedError } from '../../errors.js';

/** Every engine's counters are signed 64-bit integers. */
const INT64_MAX = 2n ** 63n - 1n;

interface Entry {
  owner: string;
  token: bigint;
  expiresAt: number;
}

/** See the file header. */
export class MemoryDriver implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = { name: 'memory', liveness: 'lease', fair: false, scope: 'process' };
  private readonly locks = new Map<string, Entry>();
  private readonly fences = new Map<string, bigint>();
  private readonly marks = new Map<string, bigint>();
  private readonly sequences = new Map<string, bigint>();
  private readonly listeners = new Map<string, Set<LatchWatch>>();
  private closed = false;

  tryAcquire(req: AcquireRequest): Promise<TryResult> {
    if (this.closed) return Promise.reject(new ClosedError('memory driver'));
    const now = monotonicNow();
    const cur = this.live(req.key, now);
    if (cur) return Promise.resolve({ ok: false, retryAfterMs: Math.ceil(cur.expiresAt - now) });
    const token = (this.fences.get(req.key) ?? 0n) + 1n;
    this.fences.set(req.key, token);
    this.locks.set(req.key, { owner: req.owner, token, expiresAt: now + req.ttlMs });
    return Promise.resolve({ ok: true, grant: { token, sentAt: now } });
  }


  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (this.closed) return Promise.reject(new ClosedError('memory driver'));
    const now = monotonicNow();
    return Promise.resolve(
      items.map((it) => {
        const cur = this.live(it.key, now);
        if (!cur || cur.owner !== it.owner) return false;
        cur.expiresAt = now + it.ttlMs;
        return true;
      }),
    );
  }

  release(key: string, owner: string): Promise<boolean> {
    const cur = this.live(key, monotonicNow());
    if (!cur || cur.owner !== owner) return Promise.resolve(false);
    this.locks.delete(key);
    this.notify(key);
    return Promise.resolve(true);
  }

  inspect(key: string): Promise<LockState | null> {
    const now = monotonicNow();
    const cur = this.live(key, now);
    return Promise.resolve(cur ? { owner: cur.owner, token: cur.token, remainingMs: Math.ceil(cur.expiresAt - now) } : null);
  }

  /** Open a change watch on `key` (see `LockDriver.watch`). */
  watch(key: string): Promise<ChangeWatch> {
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    const watchers = set;
    const watch = new LatchWatch((w) => {
      watchers.delete(w);
      if (watchers.size === 0 && this.listeners.get(key) === watchers) this.listeners.delete(key);
    });
    watchers.add(watch);
    return Promise.resolve(watch);
  }

  readMark(key: string): Promise<bigint> {
    return Promise.resolve(this.marks.get(key) ?? 0n);
  }

  raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    const cur = this.live(key, monotonicNow());
    if (!cur || cur.owner !== owner) return Promise.resolve(false);
    if (mark > (this.marks.get(key) ?? 0n)) this.marks.set(key, mark);
    return Promise.resolve(true);
  }

  allocateRange(name: string, count: bigint): Promise<bigint> {
    if (this.closed) return Promise.reject(new ClosedError('memory driver'));
    const end = (this.sequences.get(name) ?? 0n) + count;
    if (end > INT64_MAX) return Promise.reject(new IdsExhaustedError(name, 'the counter would pass 2^63 - 1'));
    this.sequences.set(name, end);
    return Promise.resolve(end);
  }

  /** Number of keys with open watches (lets tests check that aborted waits leave nothing). */
  get watchedKeys(): number {
    return this.listeners.size;
  }

  /** Test hook: forget a key behind the holder's back, as an operator's DEL would. */
  forget(key: string): void {
    this.locks.delete(key);
    this.notify(key);
  }

  close(): Promise<void> {
    this.closed = true;
    this.locks.clear();
    this.listeners.clear();
    return Promise.resolve();
  }

  private live(key: string, now: number): Entry | undefined {
    const cur = this.locks.get(key);
    if (cur && cur.expiresAt <= now) {
      this.locks.delete(key);
      return undefined;
    }
    return cur;
  }

  private notify(key: string): void {
    for (const w of this.listeners.get(key) ?? []) w.changed();
  }
}
