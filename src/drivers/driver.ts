/**
 * The driver contract: the only thing a backend has to implement.
 *
 * A driver turns one request into one atomic step on its engine (a Lua script, one SQL
 * transaction, ...) and tells how a waiter is woken. It holds no retry loops and no renewal
 * timers: the core (src/core) owns deadlines, abort, backoff, renewal and the Lease.
 *
 * Two kinds of engines fit this contract:
 * - try-set engines (Redis, SQL, SQLite) implement `tryAcquire` + `watch`, and build `acquire`
 *   from the core's {@link TrySetWaitQueue} (try once, wait for a change bounded by the holder's
 *   remaining TTL, try again);
 * - queue engines (ZooKeeper, etcd) implement `acquire` natively (enqueue, wait for the
 *   predecessor) and `tryAcquire` as "enqueue, and withdraw unless first".
 */

/** One acquisition attempt. */
export interface AcquireRequest {
  /** The user's lock name (validated: a non-empty string). */
  readonly key: string;
  /** Unique per acquisition: `host:pid:random:seq`. */
  readonly owner: string;
  /** Time to live on the engine, in ms. */
  readonly ttlMs: number;
}

/** How the core should bound a wait. */
export interface WaitContext {
  /** Aborted by the caller's signal, by the deadline, or by `close()`. */
  readonly signal: AbortSignal;
  /** Monotonic deadline (ms, {@link monotonicNow}) after which the driver must give up. */
  readonly deadline: number;
}

/** What a successful acquisition returns. */
export interface Grant {
  /** Fencing token: strictly increasing per key across all holders. */
  readonly token: bigint;
  /**
   * Monotonic time (ms) at which the successful request was sent: the TTL counts from no
   * earlier than this, so `sentAt + ttlMs - drift` is a safe local deadline.
   */
  readonly sentAt: number;
  /**
   * For drivers whose liveness is a session (ZooKeeper session, etcd lease, SQL connection):
   * aborted when the session that carries this grant ends. Omitted for per-key TTL drivers.
   */
  readonly session?: AbortSignal;
  /**
   * With `session`: the session's local deadline (monotonic ms), read on every validity check:
   * the last moment the engine confirmed the session (a heartbeat or reply received, counted from
   * when it was sent) plus the session timeout, minus drift. The driver keeps it current while
   * connected and stops advancing it while disconnected, so `lease.isHeld()` turns false no later
   * than the engine could give the lock to someone else. The driver aborts `session` when the
   * session is lost: with a `LockLostError` whose reason the lease adopts (e.g. `'expired'` when
   * the deadline passed while disconnected), or with any other reason (then `'session-lost'`).
   */
  readonly validUntil?: () => number;
}

/** The answer of a single try. */
export type TryResult =
  | { readonly ok: true; readonly grant: Grant }
  | {
      readonly ok: false;
      /** The holder's remaining TTL in ms as the engine sees it; -1 when unknown. */
      readonly retryAfterMs: number;
    };

/** A lock handed to a waiter by the engine itself (direct handoff), delivered through its watch. */
export interface HandedOver {
  readonly token: bigint;
}

/** Change notifications for one key, opened before the waiter's decisive try. */
export interface ChangeWatch {
  /**
   * Resolve `true` once a change (a release) has been seen since the watch opened or since the
   * previous `next()` resolved, `false` after `maxMs`, or a {@link HandedOver} when the engine
   * granted the lock to this waiter directly. Rejects only with `signal.reason`.
   */
  next(maxMs: number, signal: AbortSignal): Promise<boolean | HandedOver>;
  /** Stop listening. Idempotent. */
  close(): void;
}

/** Who holds a key, as the engine sees it. */
export interface LockState {
  readonly owner: string;
  readonly token: bigint;
  /** Remaining TTL on the engine in ms; -1 when the lock lives as long as a session. */
  readonly remainingMs: number;
}

/** Renewal request for one held key. */
export interface ExtendItem {
  readonly key: string;
  readonly owner: string;
  readonly ttlMs: number;
}

/** What a driver declares about itself. */
export interface DriverInfo {
  /** Short name: `memory`, `redis`, `sqlite`, ... */
  readonly name: string;
  /**
   * `lease`: each key has a TTL on the engine that the core renews. `session`: the engine keeps
   * the lock while the driver's session lives (ZooKeeper session, etcd lease, SQL connection);
   * grants carry `session` and `validUntil`, and the core gives the lock back when a lease is lost
   * locally (deadline, `maxHoldMs`), since the engine would not free it by itself.
   */
  readonly liveness: 'lease' | 'session';
  /** Whether waiters are granted in arrival order across processes. */
  readonly fair: boolean;
  /** Whether separate processes (or hosts) can share locks through this driver. */
  readonly scope: 'process' | 'host' | 'distributed';
}

/** The contract every backend implements. See the file header. */
export interface LockDriver {
  readonly info: DriverInfo;
  /**
   * Exactly one attempt; never waits for the holder. With `queue`, the caller is a waiter whose
   * watch is open: a driver with a server-side queue may enqueue it when busy (and must then
   * accept `cancel`), so that a release can hand the lock over directly.
   */
  tryAcquire(req: AcquireRequest, queue?: boolean): Promise<TryResult>;
  /**
   * Wait until granted or `wait.deadline` (resolve `null`); reject with `wait.signal.reason`
   * when the signal aborts. Must leave nothing behind on the engine when it does not grant.
   */
  acquire(req: AcquireRequest, wait: WaitContext): Promise<Grant | null>;
  /**
   * Renew several keys in one batch; `true` where the owner still held the key. Session drivers
   * (liveness `session`: the engine frees the lock when the session ends, whatever `ttlMs` says)
   * confirm here that their session still holds each key (one round trip for the batch); the core
   * renews them like any lease, which bounds a lease's local validity by its `ttlMs` as well as
   * by the session's deadline (`Grant.validUntil`).
   */
  extend(items: readonly ExtendItem[]): Promise<boolean[]>;
  /** Remove the key only if `owner` holds it; `true` when it did. Wakes waiters. */
  release(key: string, owner: string): Promise<boolean>;
  /**
   * Optional, with a server-side queue: the waiter `owner` gives up. Leave the queue; if the lock
   * was handed to it meanwhile, release it (to the next waiter).
   */
  cancel?(key: string, owner: string): Promise<void>;
  /** Read who holds `key` without acquiring it. */
  inspect(key: string): Promise<LockState | null>;
  /** Free every resource the driver opened (connections it created, watchers, timers). */
  close(): Promise<void>;
  /**
   * Optional: a durable per-key high-water mark kept beside the lock (never expires), used by
   * worker-id leases so a new holder of a recycled slot never reuses its predecessor's time.
   * Resolves 0n when never written.
   */
  readMark?(key: string): Promise<bigint>;
  /**
   * Optional: set the mark to max(current, `mark`), only while `owner` holds `key`, in one atomic
   * step. Resolves false (and changes nothing) when `owner` does not hold it.
   */
  raiseMark?(key: string, owner: string, mark: bigint): Promise<boolean>;
  /**
   * Optional: advance the durable counter `name` by `count` (>= 1) in one atomic step and resolve
   * its new value, the END of the range (inclusive): the caller owns `[end - count + 1, end]`.
   * Counters start at 0, never expire and never go backwards (as far as the engine keeps its
   * writes), so ranges never overlap. Used by segment ids (src/ids/segment.ts). Rejects with
   * `IdsExhaustedError` (src/errors.ts) and changes nothing when the counter would pass 2^63 - 1.
   */
  allocateRange?(name: string, count: bigint): Promise<bigint>;
}

/**
 * The health of a session driver's session (ZooKeeper session, etcd lease, SQL connection):
 * - `connected`: the engine confirms the session; grants it carries are valid;
 * - `suspended`: the connection is down but the session may still live on the engine: validity is
 *   in doubt, leases count down to their local deadline (`lease.remainingMs()`) and are lost at
 *   it, unless the connection comes back first;
 * - `lost`: the session ended (expired, killed, or closed); every lease it carried was aborted.
 *   A driver opens a new session on its next acquisition.
 */
export type SessionState = 'connected' | 'suspended' | 'lost';

/** What session drivers add to {@link LockDriver}, so that operators and apps can watch it. */
export interface SessionDriver extends LockDriver {
  /** The current session's state (`lost` before the first session opens, and after close). */
  readonly sessionState: SessionState;
  /** Call `listener` on every change of {@link sessionState}; returns an unsubscribe function. */
  onSessionState(listener: (state: SessionState) => void): () => void;
}

/** The listeners of a {@link SessionDriver}'s `onSessionState`, shared by every session driver. */
export class SessionListeners {
  private readonly listeners = new Set<(state: SessionState) => void>();

  /** Add `listener`; returns its unsubscribe function. */
  add(listener: (state: SessionState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Tell every listener; a listener that throws never breaks the driver. */
  emit(state: SessionState): void {
    for (const l of [...this.listeners]) {
      try {
        l(state);
      } catch {
        // a listener never breaks the driver
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}
