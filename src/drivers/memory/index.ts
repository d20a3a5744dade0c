/**
 * In-memory reference driver: the executable specification of the driver contract.
 *
 * Guarantees: everything the contract promises, within ONE process (tokens strictly increase per
 * key for the lifetime of the driver, across every admission mode; TTLs by the monotonic clock;
 * release wakes waiters at once). Every admission mode (exclusive, shared, permits: see
 * src/core/admission.ts), with a queue of waiters per key: `fair` requests are granted in
 * arrival order and handed over directly on release; other requests may barge while the queue's
 * head has waited less than {@link BARGE_BOUND_MS}, after which the key goes to the head.
 * Does not: share locks between processes, or survive a restart. Use it for tests and for code
 * that only needs to coordinate async tasks in one process.
 */
import { monotonicNow } from '../../core/clock.js';
import { LatchWatch } from '../../core/change-watch.js';
import { admits, BARGE_BOUND_MS, type Claim } from '../../core/admission.js';
import type {
  AcquireRequest,
  Admission,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  ForceReleased,
  KeyPage,
  KeyState,
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
  admission?: Admission | undefined;
}

/** A waiter queued on a key (`tryAcquire(req, true)` while busy). */
interface Waiter {
  readonly owner: string;
  readonly since: number;
  ttlMs: number;
  expiresAt: number;
  readonly admission?: Admission | undefined;
  readonly fair: boolean;
  readonly alongside?: string | undefined;
}

/** The holders and the queue of one key. */
interface KeyEntry {
  holders: Entry[];
  queue: Waiter[];
}

/** See the file header. */
export class MemoryDriver implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = {
    name: 'memory',
    liveness: 'lease',
    fair: false,
    scope: 'process',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'choice',
  };
  private readonly keys = new Map<string, KeyEntry>();
  private readonly fences = new Map<string, bigint>();
  private readonly marks = new Map<string, bigint>();
  private readonly sequences = new Map<string, bigint>();
  private readonly listeners = new Map<string, Set<LatchWatch>>();
  /** The watch of each queued owner, for direct handoff. */
  private readonly watchOf = new Map<string, LatchWatch>();
  private closed = false;

  tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    if (this.closed) return Promise.reject(new ClosedError('memory driver'));
    const now = monotonicNow();
    const k = this.live(req.key, now);
    // Already ours (a handoff whose message we have not seen yet): confirm and extend it.
    const mine = k?.holders.find((h) => h.owner === req.owner);
    if (mine) {
      mine.expiresAt = now + req.ttlMs;
      this.dequeue(k!, req.owner);
      return Promise.resolve({ ok: true, grant: { token: mine.token, sentAt: now } });
    }
    const holders = k?.holders ?? [];
    const waiting = k?.queue ?? [];
    const at = waiting.findIndex((w) => w.owner === req.owner);
    const before = at >= 0 ? waiting.slice(0, at) : waiting;
    // Fair: behind every earlier waiter. Barging: only once the head has waited past the bound.
    const strict = req.fair === true || (before.length > 0 && now - before[0]!.since > BARGE_BOUND_MS);
    const ask = { admission: req.admission, alongside: req.alongside };
    if (admits(ask, strict ? [...holders, ...before] : holders)) {
      const entry = this.grant(req.key, req.owner, req.ttlMs, req.admission, now);
      if (k && at >= 0) k.queue.splice(at, 1);
      return Promise.resolve({ ok: true, grant: { token: entry.token, sentAt: now } });
    }
    if (queue) {
      const entry = this.entry(req.key);
      const w = entry.queue.find((x) => x.owner === req.owner);
      if (w) {
        w.ttlMs = req.ttlMs;
        w.expiresAt = now + req.ttlMs;
      } else {
        entry.queue.push({ owner: req.owner, since: now, ttlMs: req.ttlMs, expiresAt: now + req.ttlMs, admission: req.admission, fair: req.fair === true, alongside: req.alongside });
      }
    }
    const soonest = holders.reduce((m, h) => Math.min(m, h.expiresAt), Number.POSITIVE_INFINITY);
    return Promise.resolve({ ok: false, retryAfterMs: Number.isFinite(soonest) ? Math.ceil(soonest - now) : -1 });
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (this.closed) return Promise.reject(new ClosedError('memory driver'));
    const now = monotonicNow();
    return Promise.resolve(
      items.map((it) => {
        const cur = this.live(it.key, now)?.holders.find((h) => h.owner === it.owner);
        if (!cur) return false;
        cur.expiresAt = now + it.ttlMs;
        return true;
      }),
    );
  }

  release(key: string, owner: string): Promise<boolean> {
    const now = monotonicNow();
    const k = this.live(key, now);
    const i = k ? k.holders.findIndex((h) => h.owner === owner) : -1;
    if (!k || i < 0) return Promise.resolve(false);
    k.holders.splice(i, 1);
    this.handOver(key, k, now);
    this.notify(key);
    return Promise.resolve(true);
  }

  cancel(key: string, owner: string): Promise<void> {
    const k = this.keys.get(key);
    if (k) {
      this.dequeue(k, owner);
      // Handed to us while we gave up: pass it on.
      if (k.holders.some((h) => h.owner === owner)) return this.release(key, owner).then(() => undefined);
      this.tidy(key, k);
    }
    return Promise.resolve();
  }

  inspect(key: string): Promise<LockState | null> {
    const now = monotonicNow();
    const first = this.live(key, now)?.holders[0];
    return Promise.resolve(first ? this.state(first, now) : null);
  }

  keyState(key: string): Promise<KeyState> {
    const now = monotonicNow();
    const k = this.live(key, now);
    return Promise.resolve({ holders: (k?.holders ?? []).map((h) => this.state(h, now)), waiters: k?.queue.length ?? 0 });
  }

  /** Open a change watch on `key` (see `LockDriver.watch`). */
  watch(key: string, owner = ''): Promise<ChangeWatch> {
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    const watchers = set;
    const watch = new LatchWatch((w) => {
      watchers.delete(w);
      if (this.watchOf.get(owner) === w) this.watchOf.delete(owner);
      if (watchers.size === 0 && this.listeners.get(key) === watchers) this.listeners.delete(key);
    });
    watchers.add(watch);
    if (owner !== '') this.watchOf.set(owner, watch);
    return Promise.resolve(watch);
  }

  readMark(key: string): Promise<bigint> {
    return Promise.resolve(this.marks.get(key) ?? 0n);
  }

  raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    const cur = this.live(key, monotonicNow())?.holders.find((h) => h.owner === owner);
    if (!cur) return Promise.resolve(false);
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

  list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    const now = monotonicNow();
    const after = page.cursor;
    const keys = [...this.keys.keys()]
      .filter((k) => k.startsWith(prefix) && (after === undefined || k > after))
      .sort()
      .filter((k) => (this.live(k, now)?.holders.length ?? 0) > 0);
    const out = keys.slice(0, page.limit);
    return Promise.resolve(keys.length > page.limit ? { keys: out, cursor: out[out.length - 1]! } : { keys: out });
  }

  forceRelease(key: string): Promise<ForceReleased> {
    const k = this.live(key, monotonicNow());
    const released = k?.holders.length ?? 0;
    if (released > 0) this.forget(key);
    return Promise.resolve({ released, fence: this.fences.get(key) ?? 0n });
  }

  /** Test hook: forget a key behind the holder's back, as an operator's DEL would. */
  forget(key: string): void {
    const k = this.keys.get(key);
    if (k) {
      k.holders = [];
      this.handOver(key, k, monotonicNow());
    }
    this.notify(key);
  }

  close(): Promise<void> {
    this.closed = true;
    this.keys.clear();
    this.listeners.clear();
    this.watchOf.clear();
    return Promise.resolve();
  }

  /** The key's holders and queue, with expired holders and waiters dropped (undefined: none). */
  private live(key: string, now: number): KeyEntry | undefined {
    const k = this.keys.get(key);
    if (!k) return undefined;
    const before = k.holders.length;
    k.holders = k.holders.filter((h) => h.expiresAt > now);
    k.queue = k.queue.filter((w) => w.expiresAt > now);
    // A holder expired: the next waiters may be admitted now (direct handoff where due).
    if (k.holders.length < before) this.handOver(key, k, now);
    return this.tidy(key, k) ? undefined : k;
  }

  /** Forget an empty key; true when it was empty. */
  private tidy(key: string, k: KeyEntry): boolean {
    if (k.holders.length > 0 || k.queue.length > 0) return false;
    if (this.keys.get(key) === k) this.keys.delete(key);
    return true;
  }

  private entry(key: string): KeyEntry {
    let k = this.keys.get(key);
    if (!k) this.keys.set(key, (k = { holders: [], queue: [] }));
    return k;
  }

  private grant(key: string, owner: string, ttlMs: number, admission: Admission | undefined, now: number): Entry {
    const token = (this.fences.get(key) ?? 0n) + 1n;
    this.fences.set(key, token);
    const e: Entry = { owner, token, expiresAt: now + ttlMs, admission };
    this.entry(key).holders.push(e);
    return e;
  }

  private dequeue(k: KeyEntry, owner: string): void {
    const i = k.queue.findIndex((w) => w.owner === owner);
    if (i >= 0) k.queue.splice(i, 1);
  }

  /**
   * After a release or an expiry: hand the key to the waiters at the head of the queue, in order,
   * while the rule admits them (strict FIFO: stop at the first that does not fit), when the head
   * asked for fairness or has waited past the barging bound. Each is told through its watch.
   */
  private handOver(key: string, k: KeyEntry, now: number): void {
    const head = k.queue[0];
    if (!head || (!head.fair && now - head.since <= BARGE_BOUND_MS)) return;
    while (k.queue.length > 0) {
      const w = k.queue[0]!;
      const claims: Claim[] = k.holders;
      if (!admits({ admission: w.admission, alongside: w.alongside }, claims)) break;
      k.queue.shift();
      const e = this.grant(key, w.owner, w.ttlMs, w.admission, now);
      this.watchOf.get(w.owner)?.granted(e.token);
    }
  }

  private state(h: Entry, now: number): LockState {
    return { owner: h.owner, token: h.token, remainingMs: Math.ceil(h.expiresAt - now), ...(h.admission ? { admission: h.admission } : {}) };
  }

  private notify(key: string): void {
    for (const w of this.listeners.get(key) ?? []) w.changed();
  }
}
