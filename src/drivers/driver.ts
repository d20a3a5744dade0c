/**
 * The driver contract: the only thing a backend has to implement.
 *
 * A driver turns one request into one atomic step on its engine (a Lua script, one SQL
 * transaction, a ZooKeeper create, an etcd transaction) and tells how a waiter is woken. It holds
 * no wait loops, no retry loops and no renewal timers: the core (src/core/wait-loop.ts) owns the
 * one wait loop for every engine (deadline, AbortSignal, close(), jittered backoff on engine
 * errors, re-queue after a lost session, the local FIFO gate, giving back a grant that lands after
 * the wait ended, and the error that ends a wait), the queue algorithm, renewal and the Lease.
 *
 * Engines come in three kinds, each written as small atomic steps ({@link LockDriver}):
 * - {@link TrySetDriver} (Redis, Redlock, SQLite, the SQL lease tables, memory): "grant if free,
 *   else tell me how long the holder may still hold it" + "tell me when it changes";
 * - {@link QueueDriver} (ZooKeeper, etcd): "enqueue me", "read the queue as it stands before my
 *   entry", "tell me when this entry goes", "withdraw me": the queue algorithm over these steps is
 *   written once, in the core (Curator's LockInternals, etcd's `waitDeletes`);
 * - {@link BlockingDriver} (PostgreSQL advisory locks, MySQL `GET_LOCK` on dedicated
 *   connections): "try once" + "block on the server for at most N ms, cancellably".
 */
/**
 * How a request shares its key with the other holders of that key. One rule for every primitive
 * (Curator writes mutex, semaphore and read-write lock as one algorithm with different admission
 * rules): a mutex and the write side of a read-write lock are `exclusive`, the read side is
 * `shared`, a semaphore asks for `permits` of a `limit`. The rule itself is `admits()`
 * (src/core/admission.ts): each engine's atomic step applies it to the
 * holders (and, in fair mode, the waiters queued ahead), or the core applies it to a queue read.
 */
export type Admission =
  | {
      /** Alone: a mutex, the write side of a read-write lock. */
      readonly mode: 'exclusive';
    }
  | {
      /** Beside any other shared holder, never beside an exclusive one: the read side. */
      readonly mode: 'shared';
    }
  | {
      /** `permits` of `limit` (a semaphore): admitted while the permits held, plus these, fit in `limit`. */
      readonly mode: 'permits';
      /** Permits this request takes, all or nothing (1 to `limit`). */
      readonly permits: number;
      /** The semaphore's size: how many permits may be held at once. */
      readonly limit: number;
    };

/** The admission modes, for {@link DriverInfo.modes}. */
export type AdmissionMode = Admission['mode'];

/** One acquisition attempt. */
export interface AcquireRequest {
  /** The user's lock name (validated: a non-empty string). */
  readonly key: string;
  /** Unique per acquisition: `host:pid:random:seq`. */
  readonly owner: string;
  /** Time to live on the engine, in ms. */
  readonly ttlMs: number;
  /** How it shares the key; absent: exclusive (every mutex request). */
  readonly admission?: Admission;
  /**
   * Strict FIFO: not admitted while a waiter queued earlier waits, even when the holders would
   * allow it. Absent or false on a driver that offers the choice: bounded barging (see
   * {@link DriverInfo.fairness}).
   */
  readonly fair?: boolean;
  /**
   * Admit at once while this owner (of the same client) holds the key exclusively: the write
   * holder taking the read side, which it keeps after releasing the write side (downgrade).
   */
  readonly alongside?: string;
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
  | {
      /** Granted. */
      readonly ok: true;
      /** The grant: token, and for session drivers the session. */
      readonly grant: Grant;
    }
  | {
      /** Busy: someone else holds the key. */
      readonly ok: false;
      /** The holder's remaining TTL in ms as the engine sees it; -1 when unknown. */
      readonly retryAfterMs: number;
      /**
       * The driver's watch will not see this holder go (a holder of another mode, say, that
       * releases without waking this mode's waiters): the core then bounds each wait on the watch
       * by its jittered backoff as well, the one place where such a wait polls.
       */
      readonly unseen?: boolean;
    };

/** A lock handed to a waiter by the engine itself (direct handoff), delivered through its watch. */
export interface HandedOver {
  /** The fencing token of the handed-over lock. */
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
  /** Owner id of the holder (`host:pid:clientId:seq`). */
  readonly owner: string;
  /** The holder's fencing token. */
  readonly token: bigint;
  /** Remaining TTL on the engine in ms; -1 when the lock lives as long as a session. */
  readonly remainingMs: number;
  /** How it holds the key; absent: exclusive. */
  readonly admission?: Admission;
}

/** Every holder of a key and its queue, as the engine sees them ({@link DriverBase.keyState}). */
export interface KeyState {
  /** The holders, oldest grant first. */
  readonly holders: readonly LockState[];
  /** Waiters queued on the engine for this key (0 when the engine keeps no queue). */
  readonly waiters: number;
}

/** One page of held keys ({@link DriverBase.list}). */
export interface KeyPage {
  /** Keys (as the user named them) with at least one live holder, in the engine's order. */
  readonly keys: readonly string[];
  /** Pass it back for the next page; absent when this was the last page. */
  readonly cursor?: string;
}

/** What {@link DriverBase.forceRelease} did. */
export interface ForceReleased {
  /** How many holds it removed (0 when the key was free). */
  readonly released: number;
  /**
   * The key's fencing counter after the release: every later grant's token is greater, and it is
   * at least every token this key ever carried (tokens are never reused after a force-release).
   */
  readonly fence: bigint;
}

/** Renewal request for one held key. */
export interface ExtendItem {
  /** The lock key. */
  readonly key: string;
  /** The owner id that must still hold it. */
  readonly owner: string;
  /** The new TTL, in ms. */
  readonly ttlMs: number;
}

/** The three kinds of engine the core knows how to wait on (see the file header). */
export type EngineKind = LockDriver['kind'];

/** What a driver declares about itself. */
export interface DriverInfo {
  /** Short name: `memory`, `redis`, `sqlite`, ... */
  readonly name: string;
  /**
   * `lease`: each key has a TTL on the engine that the core renews. `session`: the engine keeps
   * the lock while the driver's session lives (ZooKeeper session, etcd lease, SQL connection);
   * grants carry `session` and `validUntil`. Either way the core gives the lock back when a lease
   * is lost locally (deadline, `maxHoldMs`), so that what remains on the engine does not outlive it.
   */
  readonly liveness: 'lease' | 'session';
  /** Whether waiters are granted in arrival order across processes (whatever the request asks). */
  readonly fair: boolean;
  /**
   * The admission modes this driver grants (see {@link Admission}); absent: `exclusive` only.
   * A primitive that needs a mode the driver lacks refuses at construction with an
   * `UnsupportedModeError` saying why and what to use instead.
   */
  readonly modes?: readonly AdmissionMode[];
  /**
   * Optional: why this driver lacks the modes it does not list, and what to use instead, for the
   * `UnsupportedModeError` a primitive throws (e.g. MySQL session mode: use the table mode).
   */
  readonly modeAdvice?: {
    /** Why the missing modes are missing, e.g. that GET_LOCK has no shared mode. */
    readonly why: string;
    /** What to do instead, e.g. to connect with `mode: 'table'` (`?mode=table` in the URL). */
    readonly instead: string;
  };
  /**
   * How waiters are ordered: `fifo` (always in arrival order, both modes), `choice` (strict FIFO
   * with `fair: true`, bounded barging otherwise: a newcomer or the releaser may take a free key
   * only while the queue's head has waited less than the driver's bound), `none` (whoever tries
   * first after a release). Absent: `fifo` when `fair`, else `none`.
   */
  readonly fairness?: 'fifo' | 'choice' | 'none';
  /** Whether separate processes (or hosts) can share locks through this driver. */
  readonly scope: 'process' | 'host' | 'distributed';
}

/** What every kind of driver implements besides its way of waiting. */
export interface DriverBase {
  /** What the driver declares about itself (name, liveness, fairness, scope). */
  readonly info: DriverInfo;
  /**
   * Exactly one attempt; never waits for the holder. Try-set drivers: with `queue`, the caller is
   * a waiter whose watch is open: a driver with a server-side queue may enqueue it when busy (and
   * must then accept `cancel`), so that a release can hand the lock over directly. Queue drivers:
   * never barge past waiters and leave nothing behind when busy.
   */
  tryAcquire(req: AcquireRequest, queue?: boolean): Promise<TryResult>;
  /**
   * Renew several keys in one batch; `true` where the owner still held the key. Session drivers
   * (liveness `session`: the engine frees the lock when the session ends, whatever `ttlMs` says)
   * confirm here that their session still holds each key (one round trip for the batch); the core
   * renews them like any lease, which bounds a lease's local validity by its `ttlMs` as well as
   * by the session's deadline (`Grant.validUntil`).
   */
  extend(items: readonly ExtendItem[]): Promise<boolean[]>;
  /**
   * Remove the key only if `owner` holds it; `true` when it did. Wakes waiters. A try-set driver
   * with {@link TrySetDriver.passOn} may answer `'left'` instead of `true` (see there).
   */
  release(key: string, owner: string): Promise<boolean | 'left'>;
  /** Read who holds `key` without acquiring it (the oldest holder when several share it). */
  inspect(key: string): Promise<LockState | null>;
  /**
   * Optional, on drivers with {@link DriverInfo.modes} beyond `exclusive`: every holder of `key`
   * (shared holders, semaphore holders with their permits) and the number of queued waiters.
   */
  keyState?(key: string): Promise<KeyState>;
  /**
   * One bounded page of the keys that have a live holder and start with `prefix` (every key for
   * `''`), at most `limit` of them, for listing tools. Never a blocking scan of the whole engine
   * (Redis SCAN, SQL ranges with LIMIT, ZooKeeper children, etcd ranges with a limit). A page may
   * hold fewer keys than `limit` while a cursor still follows.
   */
  list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage>;
  /**
   * An operator's eviction: remove every hold of `key` whoever owns it, wake its waiters, and make
   * sure the key's fencing counter never goes back (the next grant's token is greater than the
   * evicted holder's, so a fenced resource rejects the evicted holder's writes once the next holder
   * has written). The evicted holder's client notices at its next renewal (its lease signal
   * aborts). Session engines that cannot remove another session's hold end that session instead
   * (documented per driver).
   */
  forceRelease(key: string): Promise<ForceReleased>;
  /** Free every resource the driver opened (connections it created, watchers, timers). */
  close(): Promise<void>;
}

/** A try-set engine: try once, watch for a change (see the file header). */
export interface TrySetDriver extends DriverBase {
  /** How the core waits on this driver: try, watch for a release, try again. */
  readonly kind: 'try-set';
  /** Open change notifications for a key (pub/sub, file watch...). Absent: jittered backoff. */
  watch?(key: string, owner: string): Promise<ChangeWatch>;
  /**
   * Optional: the same watch, opened at once when that costs the engine nothing (its channel is
   * subscribed already), else `undefined`. With it the core makes a wait's first try the decisive
   * one (queued, its watch open before it), which saves a second try per wait; the core closes
   * it, and cancels the queue entry, however the wait ends.
   */
  watchNow?(key: string, owner: string): ChangeWatch | undefined;
  /**
   * Optional, with a server-side queue: the waiter `owner` gives up. Leave the queue; if the lock
   * was handed to it meanwhile, release it (to the next waiter).
   */
  cancel?(key: string, owner: string): Promise<void>;
  /**
   * Optional, with bounded barging: hand `key`, if it is free, to the waiters at the head of its
   * queue now, due or not (a key someone holds meanwhile is left to that holder's release).
   * A release answers `'left'` (released) when it left the key free for a barger while the queue's
   * head waits for its turn, so that a releaser that asks again at once keeps its key without a
   * cross-process wake-up. The core then calls `passOn(key)` at its next event-loop turn, unless
   * this client asked for the key again first, and before the driver closes; the driver keeps no
   * timer or bookkeeping for it. The head's own due-time try stays the fallback.
   */
  passOn?(key: string): Promise<void>;
}

/** A server-blocking engine: try once, or block on the server (see the file header). */
export interface BlockingDriver extends DriverBase {
  /** How the core waits on this driver: the engine blocks the request until granted. */
  readonly kind: 'server-blocking';
  /**
   * One blocking attempt: wait on the server for the lock at most `maxMs`, on a connection of its
   * own, then answer (a busy answer when the server's wait ran out or was interrupted). When
   * `signal` aborts, cancel the server's wait and settle once it is over (one round trip): reject
   * with `signal.reason`, or resolve what the server answered first (a grant that landed is
   * given back by the core, which waits for this at most a second). An abort that comes while
   * the attempt is still getting its connection stops it before anything waits on the server.
   * Engine errors reject (the core backs off and calls again). No loops, no timers: the core
   * calls again while the wait lasts.
   */
  block(req: AcquireRequest, maxMs: number, signal: AbortSignal): Promise<TryResult>;
  /**
   * Optional: at most this many `block()` calls at once (each occupies a connection of its own);
   * the core queues the others in arrival order, abortably, within their wait.
   */
  readonly maxBlocking?: number;
}

/**
 * One contender's entry in a queue engine (a znode, an etcd key). A driver may return a subtype
 * that carries what it needs to find the entry again (the session it was created on, its token):
 * the core hands back the very object the driver gave it.
 */
export interface QueueEntry {
  /** The entry's name on the engine (znode path, etcd key), for watching and withdrawing. */
  readonly id: string;
  /** Its place: entries are served in ascending `seq` (znode sequence, create revision). */
  readonly seq: bigint;
}

/** The queue as it stands before one entry, read in one step. */
export interface QueueView {
  /**
   * False when the entry is gone or no longer belongs to this driver's live session (then the
   * core enqueues again).
   */
  readonly mine: boolean;
  /**
   * Number of entries ahead of ours. Exclusive requests only need to know whether it is 0 (the
   * turn is ours), 1 (the one ahead is the holder: when it goes, the turn is ours) or more, so an
   * engine that cannot count in the same read may answer 2 for "two or more" (etcd's range
   * filters leave its count unfiltered).
   */
  readonly ahead: number;
  /** The entry just ahead of ours (undefined when none is). */
  readonly predecessor: QueueEntry | undefined;
  /** Monotonic time at which the read was sent. */
  readonly sentAt: number;
  /**
   * For a request with a non-exclusive admission: every entry ahead of ours, oldest first, with
   * its owner and admission, so that the core applies the rule (src/core/admission.ts) to them.
   * Exclusive requests need only `ahead` and `predecessor`.
   */
  readonly before?: readonly QueuedClaim[];
}

/** An entry of a queue engine with the claim it makes (see {@link QueueView.before}). */
export interface QueuedClaim extends QueueEntry {
  /** The entry's owner id. */
  readonly owner: string;
  /** Its admission; absent: exclusive. */
  readonly admission?: Admission | undefined;
}

/** How a {@link QueueDriver.waitGone} ended. */
export type GoneResult =
  /** The watched entry is gone: take the turn if it was the only one ahead, else look again. */
  | 'gone'
  /** Our own entry went (deleted by someone else, or its session ended): enqueue again. */
  | 'mine-gone'
  /**
   * The engine can no longer tell (its watch stream failed, the connection dropped before the
   * watch was in place): look at the queue again, whatever was ahead.
   */
  | 'look';

/**
 * A queue engine: enqueue, read the queue, wait for an entry to go, withdraw (see the file header).
 * Each method is one step (one round trip where the engine allows); the core runs the algorithm:
 * enqueue → the turn is ours when nobody is ahead → else `waitGone(predecessor, mine)` → the turn
 * is ours when the predecessor was the only one ahead, else `look()` again. It keeps the entry
 * across engine errors (a later `look()` says whether it is still ours), enqueues again when
 * `mine` goes, and withdraws an entry that goes out of use without a grant.
 */
export interface QueueDriver<E extends QueueEntry = QueueEntry> extends DriverBase {
  /** How the core waits on this driver: a queue entry on the engine, granted in order. */
  readonly kind: 'queue';
  /**
   * Create `req.owner`'s entry for `req.key` on the current session (opening one if needed) and
   * read the queue before it, in one step where the engine allows. Idempotent per owner: a call
   * retried after an error finds the entry the failed one may have created. Rejects on engine
   * errors (the core backs off).
   */
  enqueue(req: AcquireRequest): Promise<{
    /** The caller's entry. */
    readonly entry: E;
    /** The queue as seen right after enqueuing. */
    readonly view: QueueView;
  }>;
  /** Read the queue before `entry` (one round trip). */
  look(req: AcquireRequest, entry: E): Promise<QueueView>;
  /**
   * Resolve once `watched` is gone ('gone'), once `mine` went ('mine-gone': its session ended,
   * or someone deleted it), or when the engine can no longer tell ('look'); reject with
   * `signal.reason` when it aborts, or on an engine error. The watches on both entries must be
   * in place before it checks that they still exist, so that a deletion is never missed, and
   * `mine` going must be reported ahead of `watched` going when both went: the core takes the
   * turn on 'gone' without a second look when `watched` was the only entry ahead. Sends nothing
   * while both stay.
   */
  waitGone(req: AcquireRequest, watched: QueueEntry, mine: E, signal: AbortSignal): Promise<GoneResult>;
  /**
   * Optional, for semaphores: like {@link waitGone}, resolving 'gone' once ANY of `watched` goes
   * (any holder's release may admit a permits request). Without it the core watches the oldest.
   */
  waitAnyGone?(req: AcquireRequest, watched: readonly QueueEntry[], mine: E, signal: AbortSignal): Promise<GoneResult>;
  /**
   * Our turn came (`view.ahead` is 0, or the entry we waited for went and it was the only one
   * ahead): the grant, riding on the entry's session. `sentAt` bounds the TTL-based validity.
   * Returns null when the session that carries `entry` is no longer usable (then the core
   * withdraws the entry and enqueues again). No round trip.
   */
  grant(req: AcquireRequest, entry: E, sentAt: number): Grant | null;
  /**
   * Remove our entry: the wait ended without a grant, or the entry went out of use (its session
   * ended). Never removes a newer entry of the same owner. `entry` undefined: the enqueue that
   * would have created it failed, and may still have created it. Must not fail the caller; the
   * core bounds how long it waits for it.
   */
  withdraw(req: AcquireRequest, entry: E | undefined): Promise<void>;
}

/** The contract every backend implements: one of the three kinds. */
export type LockDriver = TrySetDriver | QueueDriver | BlockingDriver;

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

/** What session drivers add to their kind, so that operators and apps can watch the session. */
export interface SessionSource {
  /** The current session's state (`lost` before the first session opens, and after close). */
  readonly sessionState: SessionState;
  /** Call `listener` on every change of {@link sessionState}; returns an unsubscribe function. */
  onSessionState(listener: (state: SessionState) => void): () => void;
}

/** A driver whose liveness is a session (ZooKeeper, etcd, the SQL session modes). */
export type SessionDriver = LockDriver & SessionSource;

/** Whether `driver` reports a session (see {@link SessionSource}). */
export function isSessionDriver(driver: LockDriver): driver is SessionDriver {
  return typeof (driver as Partial<SessionSource>).onSessionState === 'function';
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

  /** Remove every listener. */
  clear(): void {
    this.listeners.clear();
  }
}
