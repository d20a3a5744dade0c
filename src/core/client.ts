import { AsyncLocalStorage } from 'node:async_hooks';
import { isSessionDriver, type AcquireRequest, type Admission, type ForceReleased, type Grant, type LockDriver, type LockState, type TryResult } from '../drivers/driver.js';
import { modeOf, permitsOf, validateLimit, validatePermits } from './admission.js';
import {
  ClosedError,
  InvalidArgumentError,
  LockAbortedError,
  LockLostError,
  type LockLostReason,
  LockTimeoutError,
  OutOfRangeError,
  UnavailableError,
  UnsupportedModeError,
  isDlockError,
} from '../errors.js';
import { backoffMs, raceAbort, settleWithin, unboundedController } from './abort.js';
import { driftFor, monotonicNow } from './clock.js';
import { LockEvents, type LockEventBase, type LockEventListener, type LockEventName, type WaitOutcome } from './events.js';
import { HeldLock, Lease, type LeaseHost } from './lease.js';
import { OwnerIds, parseOwner, type OwnerInfo } from './owner.js';
import { RenewalScheduler, type Logger } from './renewal.js';
import { validateBool, validateKey, validateMs, validateRatio, validateSignal } from './validate.js';
import { WaitLoop } from './wait-loop.js';
import { PassOn } from './pass-on.js';

/** Bound on the background clean-up of a lease already known lost (see `release()`). */
const LOST_CLEANUP_MS = 2000;
/** How long close() gives the keys its releases left to bargers to reach their queue's heads. */
const PASS_ON_AT_CLOSE_MS = 1000;

/** Default bound of {@link LockClient.list}, in keys. */
const LIST_LIMIT = 10_000;
/** Keys asked of the driver per page by {@link LockClient.list}. */
const LIST_PAGE = 500;

/** Defaults of a {@link LockClient}; every one can be overridden per call. */
export interface LockClientOptions {
  /** Time to live of a lock on the engine, in ms. Default 30,000. */
  ttlMs?: number;
  /** How long `acquire()` waits for a busy lock, in ms. Default 30,000. */
  waitMs?: number;
  /** Renew held locks automatically (the watchdog). Default true. */
  renew?: boolean;
  /**
   * Renew when this fraction of the TTL has passed. Default 1/3 (three tries per TTL). A renewal
   * that fails is retried after this fraction or a tenth of the TTL, whichever is shorter, until
   * it succeeds or the lease's local deadline passes.
   */
  renewRatio?: number;
  /** Stop renewing after this many ms of holding, so a stuck holder cannot keep a key forever. */
  maxHoldMs?: number;
  /** Make acquisitions reentrant by default (see {@link AcquireOptions.reentrant}). Default false. */
  reentrant?: boolean;
  /**
   * Strict FIFO by default (see {@link AcquireOptions.fair}). Default false: bounded barging on
   * drivers that offer the choice, which is faster under contention and still serves every waiter
   * within the driver's bound plus a handoff.
   */
  fair?: boolean;
  /** Diagnostics; silent when omitted. */
  logger?: Logger;
}

/** Per-call options of `acquire`, `tryAcquire` and `using`. */
export interface AcquireOptions {
  /** Time to live on the engine, in ms. */
  ttlMs?: number;
  /** How long to wait for a busy lock (acquire/using only). 0 means one attempt. */
  waitMs?: number;
  /** Abort the wait; the promise rejects with {@link LockAbortedError} and nothing is left held. */
  signal?: AbortSignal;
  /**
   * Re-enter a lock this client already holds in the current async scope (inside `using()` or
   * `lease.run()`): the hold count goes up and the token stays the same. The engine lock is freed
   * when every reentrant hold has been released.
   */
  reentrant?: boolean;
  /** Override the client's `renew`. */
  renew?: boolean;
  /** Override the client's `maxHoldMs`. */
  maxHoldMs?: number;
  /**
   * Strict FIFO for this acquisition: it is not granted while a waiter that queued earlier waits.
   * `false`: the driver's fast mode (bounded barging where the driver offers the choice, see
   * `driver.info.fairness`). Default: the client's `fair`.
   */
  fair?: boolean;
  /**
   * How the acquisition shares the key (the low-level form of {@link ReadWriteLock} and
   * {@link Semaphore}, which set it): exclusive (default), shared, or permits of a limit.
   */
  admission?: Admission;
}

/** Who holds a key, as returned by {@link LockClient.inspect}. */
export interface LockInfo {
  /** The lock key. */
  readonly key: string;
  /** The raw owner id. */
  readonly owner: string;
  /** Decoded owner id (host, pid, client id, sequence); null for foreign ids. */
  readonly holder: OwnerInfo | null;
  /** The holder's fencing token. */
  readonly token: bigint;
  /** Remaining TTL on the engine in ms; -1 when it lives as long as a session. */
  readonly remainingMs: number;
  /** How it holds the key: `exclusive`, `shared`, or `permits` (with `permits` and `limit`). */
  readonly mode: Admission['mode'];
  /** Permits held (semaphores); 1 for the other modes. */
  readonly permits: number;
}

/** Every holder of a key and its queue, as returned by {@link LockClient.inspectAll}. */
export interface KeyInfo {
  /** The lock key. */
  readonly key: string;
  /** `free`, `exclusive`, `shared` (readers), or `permits` (a semaphore). */
  readonly mode: 'free' | Admission['mode'];
  /** Every holder, oldest grant first. */
  readonly holders: readonly LockInfo[];
  /** Waiters queued on the engine (0 on engines that keep no queue). */
  readonly waiters: number;
  /** Semaphores: the limit their holders asked for. */
  readonly limit?: number;
}

/** {@link LockClientOptions} with their defaults applied. */
interface ClientDefaults {
  ttlMs: number;
  waitMs: number;
  renew: boolean;
  reentrant: boolean;
  maxHoldMs: number | undefined;
  renewRatio: number;
  fair: boolean;
}

/**
 * Check {@link LockClientOptions} as the {@link LockClient} constructor does (same errors:
 * `InvalidArgumentError`, `OutOfRangeError`) and apply the defaults. `connect()` calls it before
 * opening any connection, so a bad option leaves nothing open.
 * @internal
 */
export function validateClientOptions(options: LockClientOptions = {}): ClientDefaults {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
  return {
    ttlMs: validateMs('ttlMs', options.ttlMs, 1, 30_000),
    waitMs: validateMs('waitMs', options.waitMs, 0, 30_000),
    renew: validateBool('renew', options.renew, true),
    reentrant: validateBool('reentrant', options.reentrant, false),
    maxHoldMs: options.maxHoldMs === undefined ? undefined : validateMs('maxHoldMs', options.maxHoldMs, 1, 0),
    renewRatio: validateRatio('renewRatio', options.renewRatio, 1 / 3),
    fair: validateBool('fair', options.fair, false),
  };
}

interface Resolved {
  key: string;
  ttlMs: number;
  waitMs: number;
  signal: AbortSignal | undefined;
  reentrant: boolean;
  renew: boolean;
  maxHoldMs: number | undefined;
  fair: boolean;
  admission: Admission | undefined;
}

/**
 * Locks over one driver. Create one per process (it batches renewals and shares connections) and
 * `close()` it on shutdown.
 *
 * @example
 * ```ts
 * import { connect } from 'dlock';
 * const locks = await connect('redis://127.0.0.1:6379');
 * await locks.using('cart:42', async (lease) => {
 *   // exclusive here; lease.token is the fencing token
 * });
 * await locks.close();
 * ```
 */
export class LockClient {
  private readonly ttlMs: number;
  private readonly waitMs: number;
  private readonly renew: boolean;
  private readonly maxHoldMs: number | undefined;
  private readonly reentrant: boolean;
  private readonly fair: boolean;
  private readonly owners = new OwnerIds();
  private readonly scheduler: RenewalScheduler;
  private readonly held = new Set<HeldLock>();
  private readonly closing = unboundedController();
  private closed: Promise<void> | undefined;
  private readonly host: LeaseHost;
  private readonly waits: WaitLoop;
  /** Releases that left their key to bargers, passed on unless this client asks again (see PassOn). */
  private readonly passOn: PassOn;
  /** Requests that had to wait (for the `acquired` event's `waited`). */
  private readonly waited = new WeakSet<AcquireRequest>();
  private readonly offSession: (() => void) | undefined;
  /** Holds whose release the engine did not answer, retried in the background (see retryRelease). */
  private readonly unreleased = new Set<HeldLock>();
  /** Background clean-ups of lost leases (close() waits for them, bounded). */
  private readonly cleanups = new Set<Promise<unknown>>();
  /** What every lost hold goes through (one function for all, not a closure per lease). */
  private readonly onHeldLost = (held: HeldLock, reason: LockLostReason, error: LockLostError): void => {
    held.detach?.();
    // A lost lease stops renewing at once.
    this.scheduler.delete(held);
    this.held.delete(held);
    if (this.events.has('lost')) this.events.emit('lost', { ...this.base(held.key, held.owner, held.admission), token: held.token, holdMs: monotonicNow() - held.acquiredAt, reason, error });
    // Lost locally (deadline, max-hold): give back what remains on the engine (a session keeps
    // the lock as long as it lives; a quorum engine keeps it on the nodes that still have it),
    // in the background and bounded. Not when the engine itself says it is gone, or on close.
    if (reason === 'expired' || reason === 'max-hold') held.givingBack = this.cleanUp(() => this.passOn.release(held.key, held.owner));
  };
  /**
   * The event stream (see {@link LockEvents}): acquired, waiting, not-acquired, released, lost,
   * renewal-failed, handed-over, unavailable, session. Also reachable as {@link on}.
   */
  readonly events = new LockEvents();

  /**
   * @param driver the backend; the client takes ownership and closes it in `close()`.
   */
  constructor(
    readonly driver: LockDriver,
    options: LockClientOptions = {},
  ) {
    const { ttlMs, waitMs, renew, reentrant, maxHoldMs, renewRatio, fair } = validateClientOptions(options);
    [this.ttlMs, this.waitMs, this.renew, this.reentrant, this.maxHoldMs, this.fair] = [ttlMs, waitMs, renew, reentrant, maxHoldMs, fair];
    this.scheduler = new RenewalScheduler(driver, renewRatio, options.logger, (held, error) => {
      if (this.events.has('renewal-failed')) this.events.emit('renewal-failed', { ...this.base(held.key, held.owner, held.admission), token: held.token, error });
    });
    const engine = driver.info.name;
    this.passOn = new PassOn(driver);
    this.waits = new WaitLoop(driver, {
      waiting: (req) => {
        this.waited.add(req);
        if (this.events.has('waiting')) this.events.emit('waiting', this.base(req.key, req.owner, req.admission));
      },
      handedOver: (req, token) => {
        if (this.events.has('handed-over')) this.events.emit('handed-over', { ...this.base(req.key, req.owner, req.admission), token });
      },
      engineError: (req, error) => {
        if (this.events.has('unavailable')) this.events.emit('unavailable', { engine, key: req.key, operation: 'acquire', error });
      },
    }, this.passOn);
    if (isSessionDriver(driver)) {
      this.offSession = driver.onSessionState((state) => {
        if (this.events.has('session')) this.events.emit('session', { engine, state });
      });
    }
    const scope = new AsyncLocalStorage<ReadonlyMap<string, HeldLock>>();
    this.host = {
      scope,
      extend: (held, ttlMs) => this.extendNow(held, ttlMs),
      release: (held) => this.releaseNow(held),
    };
  }

  /**
   * Hear every `name` event of this client (see {@link LockEvents}); returns the function that
   * stops it. Cheap when nobody listens.
   *
   * @example
   * ```ts fragment
   * const off = locks.on('lost', (e) => metrics.count('lock_lost', { reason: e.reason }));
   * ```
   */
  on<K extends LockEventName>(name: K, listener: LockEventListener<K>): () => void {
    return this.events.on(name, listener);
  }

  /**
   * Acquire `key`, waiting up to `waitMs` (event-driven: the engine wakes us on release).
   * @throws {@link LockTimeoutError} when the wait runs out; {@link LockAbortedError} when `signal` aborts;
   *   {@link UnavailableError} when the engine cannot be reached within the wait.
   */
  acquire(key: string, options: AcquireOptions = {}): Promise<Lease> {
    // A promise chain, not an async function: a waiter parked behind 10,000 others keeps no
    // suspended frame of its own here (see the `waiters` benchmark).
    let o: Resolved;
    try {
      o = this.resolve(key, options, true);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return this.obtain(o).then((lease) => {
      if (!lease) throw new LockTimeoutError(o.key, o.waitMs);
      return lease;
    });
  }

  /** The fields of every lock event (built only when someone listens). */
  private base(key: string, owner: string, admission: Admission | undefined): LockEventBase {
    return { key, owner, engine: this.driver.info.name, mode: modeOf(admission), permits: admission?.mode === 'permits' ? admission.permits : 1 };
  }

  /** Exactly one attempt. Resolves `null` when the lock is busy. */
  async tryAcquire(key: string, options: Omit<AcquireOptions, 'waitMs'> = {}): Promise<Lease | null> {
    return this.obtain(this.resolve(key, { ...options, waitMs: 0 }, false));
  }

  /**
   * Acquire, run `fn`, and always release, even when `fn` throws. Inside `fn`, a `reentrant`
   * acquire of the same key re-enters. Pass `lease.signal` to the work you do so that it stops if
   * the lock is lost.
   */
  using<T>(key: string, fn: (lease: Lease) => Promise<T> | T): Promise<T>;
  using<T>(key: string, options: AcquireOptions, fn: (lease: Lease) => Promise<T> | T): Promise<T>;
  async using<T>(
    key: string,
    optionsOrFn: AcquireOptions | ((lease: Lease) => Promise<T> | T),
    maybeFn?: (lease: Lease) => Promise<T> | T,
  ): Promise<T> {
    const fn = typeof optionsOrFn === 'function' ? optionsOrFn : maybeFn;
    const options = typeof optionsOrFn === 'function' ? {} : optionsOrFn;
    if (typeof fn !== 'function') throw new InvalidArgumentError('using(key, [options], fn): fn must be a function.');
    const lease = await this.acquire(key, options);
    try {
      return await lease.run(() => fn(lease));
    } finally {
      await lease[Symbol.asyncDispose]();
    }
  }

  /** Who holds `key` right now, without acquiring it (the oldest holder when several share it); `null` when free. */
  async inspect(key: string): Promise<LockInfo | null> {
    validateKey(key);
    this.assertOpen('inspect');
    const state = await this.callDriver(`Inspecting lock "${key}"`, () => this.driver.inspect(key));
    return state ? lockInfo(key, state) : null;
  }

  /**
   * Every holder of `key` (readers of a read-write lock, holders of a semaphore's permits) and the
   * number of waiters queued on the engine. On a driver that grants exclusive holds only, the one
   * holder {@link inspect} sees.
   */
  async inspectAll(key: string): Promise<KeyInfo> {
    validateKey(key);
    this.assertOpen('inspect');
    const d = this.driver;
    const state = d.keyState
      ? await this.callDriver(`Inspecting lock "${key}"`, () => d.keyState!(key))
      : { holders: await this.callDriver(`Inspecting lock "${key}"`, () => d.inspect(key)).then((s) => (s ? [s] : [])), waiters: 0 };
    const holders = state.holders.map((h) => lockInfo(key, h));
    const first = state.holders[0]?.admission;
    return {
      key,
      mode: holders.length === 0 ? 'free' : modeOf(first),
      holders,
      waiters: state.waiters,
      ...(first?.mode === 'permits' ? { limit: first.limit } : {}),
    };
  }

  /**
   * Every key that is held right now and starts with `prefix` (all keys for `''`), sorted by key,
   * each with all its holders (owner, mode, permits, token, remaining TTL) and its waiters, as
   * {@link inspectAll} reports them. Reads the engine in bounded pages (Redis SCAN, SQL ranges,
   * ZooKeeper children, etcd ranges): never a blocking scan. Stops after `limit` keys (default
   * 10,000); a key released between the listing and its inspection is left out.
   *
   * @example
   * ```ts
   * const busy = (await locks.list('cart:')).filter((info) => info.waiters > 0).map((info) => info.key);
   * ```
   */
  async list(prefix = '', options: { limit?: number } = {}): Promise<KeyInfo[]> {
    if (typeof prefix !== 'string') throw new InvalidArgumentError(`list() prefix must be a string, got ${typeof prefix}.`);
    const limit = options.limit ?? LIST_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1) throw new OutOfRangeError('limit', `list() limit must be a whole number >= 1, got ${String(limit)}.`);
    this.assertOpen('list');
    const d = this.driver;
    const keys: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.callDriver(`Listing locks "${prefix}*"`, () => d.list(prefix, { limit: Math.min(LIST_PAGE, limit - keys.length), ...(cursor === undefined ? {} : { cursor }) }), undefined, 'list');
      keys.push(...page.keys.slice(0, limit - keys.length));
      cursor = page.cursor;
    } while (cursor !== undefined && keys.length < limit);
    const infos: KeyInfo[] = [];
    for (const key of [...new Set(keys)].sort()) {
      const info = await this.inspectAll(key);
      if (info.holders.length > 0) infos.push(info);
    }
    return infos;
  }

  /**
   * Free `key` whoever holds it: the operator's way out of a stuck holder (Redisson's
   * `forceUnlock`). Every hold is removed and waiters are woken; the key's fencing counter never
   * goes back, so the next holder's token is greater than the evicted one's and a fenced resource
   * rejects the evicted holder's writes once the next holder has written. The evicted holder's
   * lease signal aborts (reason `not-held`, or `session-lost` where the session was ended) at its next renewal.
   * On PostgreSQL and MySQL session modes the engine cannot drop another connection's lock, so
   * the holder's connection is terminated (every lock it held goes): see the README.
   *
   * @example
   * ```ts
   * const { released, fence } = await locks.forceRelease('cart:42');
   * ```
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    validateKey(key);
    this.assertOpen('forceRelease');
    const d = this.driver;
    return this.callDriver(`Force-releasing lock "${key}"`, () => d.forceRelease(key), key, 'forceRelease');
  }

  /** The client's defaults (from its options), which per-call options override. */
  get defaults(): {
    /** Default TTL of a lock, in ms. */
    readonly ttlMs: number;
    /** Default wait of `acquire()`, in ms. */
    readonly waitMs: number;
    /** Whether held locks are renewed. */
    readonly renew: boolean;
    /** Whether acquisitions are reentrant. */
    readonly reentrant: boolean;
    /** Hold limit after which renewal stops, in ms; undefined: none. */
    readonly maxHoldMs: number | undefined;
    /** Whether acquisitions are strictly FIFO. */
    readonly fair: boolean;
  } {
    return { ttlMs: this.ttlMs, waitMs: this.waitMs, renew: this.renew, reentrant: this.reentrant, maxHoldMs: this.maxHoldMs, fair: this.fair };
  }

  /** Number of locks this client currently holds. */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Abort pending waits, release every held lock (best effort: keys that cannot be released
   * expire by their TTL), stop renewal and close the driver. Idempotent. Afterwards the process
   * can exit: no timers or sockets are left.
   */
  close(): Promise<void> {
    this.closed ??= this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<void> {
    this.closing.abort(new ClosedError('Waiting for a lock'));
    this.waits.abortAll(this.closing.signal.reason);
    this.scheduler.stop();
    this.offSession?.();
    const releases = [...this.held].map(async (h) => {
      h.lose('closed');
      await this.passOn.release(h.key, h.owner).catch(() => false);
    });
    // Releases still being retried (the engine did not answer): one last attempt.
    for (const h of this.unreleased) releases.push(this.passOn.release(h.key, h.owner).then(() => undefined, () => undefined));
    this.unreleased.clear();
    this.held.clear();
    await Promise.all(releases);
    // Waits that were aborted leave the engine's queues before the driver closes (bounded).
    await this.waits.drain(2000);
    await settleWithin(Promise.allSettled([...this.cleanups]), LOST_CLEANUP_MS);
    // Keys left to bargers go to their queue's heads before the driver closes (bounded: the
    // heads' own due-time tries remain).
    await settleWithin(this.passOn.flush(), PASS_ON_AT_CLOSE_MS);
    await this.driver.close();
    this.events.clear();
  }

  private assertOpen(what: string): void {
    if (this.closing.signal.aborted) throw new ClosedError(what);
  }

  private resolve(key: string, options: AcquireOptions, waiting: boolean): Resolved {
    validateKey(key);
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
    const ttlMs = validateMs('ttlMs', options.ttlMs, 1, this.ttlMs);
    const maxHoldMs = options.maxHoldMs === undefined ? this.maxHoldMs : validateMs('maxHoldMs', options.maxHoldMs, 1, 0);
    const renew = validateBool('renew', options.renew, this.renew);
    if (renew && ttlMs < 30) {
      throw new OutOfRangeError('ttlMs', `ttlMs must be at least 30 ms when renewal is on (got ${ttlMs}); renewals need time to travel.`);
    }
    return {
      key,
      ttlMs,
      waitMs: waiting ? validateMs('waitMs', options.waitMs, 0, this.waitMs) : 0,
      signal: validateSignal(options.signal),
      reentrant: validateBool('reentrant', options.reentrant, this.reentrant),
      renew,
      maxHoldMs,
      fair: validateBool('fair', options.fair, this.fair),
      admission: this.validateAdmission(options.admission),
    };
  }

  /** Check an admission and that the driver grants its mode (see {@link AcquireOptions.admission}). */
  private validateAdmission(a: unknown): Admission | undefined {
    if (a === undefined) return undefined;
    if (typeof a !== 'object' || a === null) throw new InvalidArgumentError('admission must be an object such as { mode: "shared" }.');
    const mode = (a as { mode?: unknown }).mode;
    let checked: Admission;
    if (mode === 'exclusive' || mode === 'shared') checked = { mode };
    else if (mode === 'permits') {
      const limit = validateLimit((a as { limit?: unknown }).limit);
      checked = { mode, limit, permits: validatePermits((a as { permits?: unknown }).permits, limit) };
    } else throw new InvalidArgumentError(`admission.mode must be "exclusive", "shared" or "permits", got ${JSON.stringify(mode)}.`);
    assertMode(this.driver, checked.mode);
    return checked.mode === 'exclusive' ? undefined : checked;
  }

  private async obtain(o: Resolved): Promise<Lease | null> {
    this.assertOpen(`Acquiring lock "${o.key}"`);
    if (o.signal?.aborted) throw new LockAbortedError(o.key, o.signal.reason);
    let alongside: string | undefined;
    if (o.reentrant) {
      const mine = this.host.scope.getStore()?.get(o.key);
      if (mine?.check()) {
        const had = modeOf(mine.admission);
        const wants = modeOf(o.admission);
        if (had === wants && permitsOf(mine.admission) === permitsOf(o.admission)) {
          mine.holds += 1;
          if (this.events.has('acquired')) this.events.emit('acquired', { ...this.base(o.key, mine.owner, mine.admission), token: mine.token, waitMs: 0, waited: false, reentrant: true });
          return new Lease(mine, this.host);
        }
        // The write holder takes the read side beside its own hold (kept after the write goes).
        if (had === 'exclusive' && wants === 'shared') alongside = mine.owner;
        else {
          throw new InvalidArgumentError(
            `Lock "${o.key}" is held here in ${had} mode; a ${wants} hold cannot be taken inside it (an upgrade would wait for itself). Release it first, or take the write side first and the read side inside it.`,
          );
        }
      }
    }
    const start = monotonicNow();
    let req: AcquireRequest | undefined;
    try {
      for (;;) {
        // Built field by field: cheaper than object spreads on this hot path.
        const r: { -readonly [K in keyof AcquireRequest]: AcquireRequest[K] } = { key: o.key, owner: this.owners.next(), ttlMs: o.ttlMs };
        if (o.admission) r.admission = o.admission;
        if (o.fair) r.fair = true;
        if (alongside) r.alongside = alongside;
        req = r;
        if (o.waitMs !== 0 && start + o.waitMs - monotonicNow() <= 0) break;
        // Beside our own write hold: one try, past the local queue (a local writer waiting there
        // waits for our write); if the write hold is gone meanwhile, an ordinary wait.
        const grant = alongside ? await this.attempt({ ...o, waitMs: 0 }, req, start) : await this.attempt(o, req, start);
        if (!grant && alongside) {
          alongside = undefined;
          continue;
        }
        if (!grant) break;
        if (this.closing.signal.aborted) {
          this.passOn.release(req.key, req.owner).catch(() => undefined);
          throw new ClosedError(`Acquiring lock "${o.key}"`);
        }
        const lease = this.adopt(o, req, grant);
        if (lease) {
          if (this.events.has('acquired')) {
            this.events.emit('acquired', { ...this.base(o.key, req.owner, req.admission), token: grant.token, waitMs: monotonicNow() - start, waited: this.waited.has(req), reentrant: false });
          }
          return lease;
        }
        // The grant arrived after its own validity (a stalled process or a slow engine): it was
        // never reported. Give the key back before trying again (bounded), so that the next
        // attempt, or an inspect() after a refused tryAcquire, does not find our own stale hold.
        await settleWithin(this.passOn.release(req.key, req.owner), 1000);
        if (o.waitMs === 0) break;
      }
    } catch (e) {
      if (this.events.has('not-acquired')) this.notAcquired(o, req, start, outcomeOf(e), e);
      throw e;
    }
    if (this.events.has('not-acquired')) this.notAcquired(o, req, start, o.waitMs === 0 ? 'busy' : 'timeout');
    return null;
  }

  private notAcquired(o: Resolved, req: AcquireRequest | undefined, start: number, outcome: WaitOutcome | 'busy', error?: unknown): void {
    this.events.emit('not-acquired', { ...this.base(o.key, req?.owner ?? '', o.admission), outcome, waitMs: monotonicNow() - start, ...(error === undefined ? {} : { error }) });
  }

  /** One engine acquisition: a single try (`waitMs` 0) or a wait until the deadline. */
  private attempt(o: Resolved, req: AcquireRequest, start: number): Promise<Grant | null> {
    // Promise chains rather than an async function, for the reason given in acquire().
    const fail = (e: unknown): never => {
      throw this.attemptError(o, e);
    };
    if (o.waitMs !== 0) return this.waits.acquire(req, start + o.waitMs, o.signal).catch(fail);
    let trying: Promise<TryResult>;
    try {
      this.passOn.asked(req.key);
      trying = this.driver.tryAcquire(req);
    } catch (e) {
      return Promise.reject(this.attemptError(o, e));
    }
    const answered = o.signal
      ? raceAbort(trying, o.signal, (late) => {
          if (late.ok) this.passOn.release(req.key, req.owner).catch(() => undefined);
        })
      : trying;
    return answered.then((r) => {
      this.waits.heard();
      return r.ok ? r.grant : null;
    }, fail);
  }

  /** The error an acquisition attempt ends with, from what the driver or the wait threw. */
  private attemptError(o: Resolved, e: unknown): Error {
    if (o.signal?.aborted) return new LockAbortedError(o.key, o.signal.reason);
    if (this.closing.signal.aborted) return new ClosedError(`Acquiring lock "${o.key}"`);
    if (isDlockError(e)) return e;
    if (this.events.has('unavailable')) this.events.emit('unavailable', { engine: this.driver.info.name, key: o.key, operation: 'acquire', error: e });
    return new UnavailableError(`Acquiring lock "${o.key}"`, { cause: e });
  }

  private adopt(o: Resolved, req: AcquireRequest, grant: Grant): Lease | null {
    const validUntil = grant.sentAt + o.ttlMs - driftFor(o.ttlMs);
    const maxHoldUntil = o.maxHoldMs === undefined ? Number.POSITIVE_INFINITY : grant.sentAt + o.maxHoldMs;
    const held = new HeldLock(o.key, req.owner, grant.token, o.ttlMs, grant.sentAt, validUntil, maxHoldUntil);
    held.liveUntil = grant.validUntil;
    held.admission = req.admission;
    // A grant that arrived after its own validity is never reported (the caller gives it back).
    if (!held.check() || grant.session?.aborted) return null;
    this.held.add(held);
    held.onLost = this.onHeldLost;
    const s = grant.session;
    held.session = s;
    if (s) {
      const onSessionLost = (): void => {
        const r: unknown = s.reason;
        if (r instanceof LockLostError) held.lose(r.reason, r.cause ?? r);
        else held.lose('session-lost', r);
      };
      s.addEventListener('abort', onSessionLost, { once: true });
      held.detach = () => s.removeEventListener('abort', onSessionLost);
    }
    // Session drivers renew too: their extend() confirms that the session still holds the key,
    // which bounds the lease's local validity by ttlMs like any other driver.
    this.scheduler.add(held, o.renew);
    return new Lease(held, this.host);
  }

  /**
   * Run a clean-up in the background, on a later turn of the event loop (a synchronous driver
   * must not hold up whoever noticed the loss), tracked so that close() waits for it (bounded);
   * its failure is dropped.
   */
  private cleanUp(work: () => Promise<unknown>): Promise<unknown> {
    const bounded = settleWithin(
      new Promise<void>((resolve) => setImmediate(resolve)).then(work),
      LOST_CLEANUP_MS,
    );
    this.cleanups.add(bounded);
    void bounded.then(() => this.cleanups.delete(bounded));
    return bounded;
  }

  /**
   * Retry the release of `held` in the background (jittered backoff, 50 ms to 1 s) until the
   * engine answers, or the engine frees the key on its own: the session carrying the hold ended,
   * or (per-key TTL drivers) one TTL has passed since the failed release (renewal stopped before
   * it). close() makes one last attempt, bounded, and stops the retries. The owner id is unique to
   * this hold, so a retry never removes another owner's lock.
   */
  private retryRelease(held: HeldLock): void {
    const until = held.session ? Number.POSITIVE_INFINITY : monotonicNow() + held.ttlMs;
    this.unreleased.add(held);
    const retry = async (): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        await pause(backoffMs(attempt, 50, 1000), this.closing.signal);
        if (this.closing.signal.aborted || held.session?.aborted || monotonicNow() >= until) return;
        try {
          await this.passOn.release(held.key, held.owner);
          return;
        } catch (e) {
          if (isDlockError(e) && !(e instanceof UnavailableError)) return;
        }
      }
    };
    void retry()
      .catch(() => undefined)
      .then(() => this.unreleased.delete(held));
  }

  private async extendNow(held: HeldLock, ttlMs: number): Promise<void> {
    validateMs('ttlMs', ttlMs, 1, 0);
    const sentAt = monotonicNow();
    const [ok] = await this.callDriver(`Extending lock "${held.key}"`, () =>
      this.driver.extend([{ key: held.key, owner: held.owner, ttlMs }]),
    );
    if (held.state !== 'held') throw held.lostError ?? new LockLostError(held.key, 'not-held');
    if (!ok) {
      held.lose('not-held');
      this.scheduler.delete(held);
      throw held.lostError ?? new LockLostError(held.key, 'not-held');
    }
    held.ttlMs = ttlMs;
    this.scheduler.renewed(held, sentAt, ttlMs);
  }

  private async releaseNow(held: HeldLock): Promise<boolean> {
    const wasHeld = held.check();
    const wasLost = held.state === 'lost';
    if (held.state === 'held') held.state = 'released';
    held.detach?.();
    this.scheduler.delete(held);
    this.held.delete(held);
    let ok = wasHeld;
    if (wasLost) {
      // Known lost: the answer is false. What may remain on the engine is being given back in the
      // background since the loss was noticed (see onHeldLost); release() waits for that
      // (bounded), so that after it the engine no longer shows this owner's hold when it
      // answered. It frees it by TTL or session at the latest.
      ok = false;
      if (held.givingBack) await held.givingBack;
    } else if (!this.closing.signal.aborted) {
      try {
        ok = await this.callDriver(`Releasing lock "${held.key}"`, () => this.passOn.release(held.key, held.owner), held.key, 'release');
      } catch (e) {
        // The engine did not answer: the caller is told, and the release is retried in the
        // background, so a session engine (which keeps the lock while the session lives, e.g.
        // an etcd lease kept alive through other members) does not hold it until close().
        if (e instanceof UnavailableError) this.retryRelease(held);
        throw e;
      }
    }
    if (this.events.has('released')) this.events.emit('released', { ...this.base(held.key, held.owner, held.admission), token: held.token, holdMs: monotonicNow() - held.acquiredAt, ok });
    return ok;
  }

  private async callDriver<T>(what: string, fn: () => Promise<T>, key?: string, operation = 'call'): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (this.events.has('unavailable') && !isDlockError(e)) this.events.emit('unavailable', { engine: this.driver.info.name, ...(key === undefined ? {} : { key }), operation, error: e });
      if (isDlockError(e)) throw e;
      throw new UnavailableError(what, { cause: e });
    }
  }
}

/**
 * Resolve after `ms` or once `signal` aborts, whichever is first; the timer does not keep the
 * process alive (a background retry must not hold up its exit).
 */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener('abort', done, { once: true });
  });
}

/** A driver's LockState as the client reports it. */
function lockInfo(key: string, s: LockState): LockInfo {
  return {
    key,
    owner: s.owner,
    holder: parseOwner(s.owner),
    token: s.token,
    remainingMs: s.remainingMs,
    mode: modeOf(s.admission),
    permits: s.admission?.mode === 'permits' ? s.admission.permits : 1,
  };
}

/**
 * Throw {@link UnsupportedModeError} unless `driver` grants `mode` (see `DriverInfo.modes`).
 * @internal
 */
export function assertMode(driver: LockDriver, mode: Admission['mode']): void {
  if (mode === 'exclusive') return;
  if (driver.info.modes?.includes(mode)) return;
  const what = mode === 'shared' ? 'shared (read) holds' : 'semaphore permits';
  throw new UnsupportedModeError(
    driver.info.name,
    what,
    driver.info.modeAdvice?.why ?? `its engine step grants one exclusive holder per key`,
    driver.info.modeAdvice?.instead ?? 'Use a driver that lists it in info.modes (see the README\'s table of engines), or a mutex.',
  );
}

/** What ended a wait that threw. */
function outcomeOf(e: unknown): WaitOutcome {
  if (e instanceof LockAbortedError) return 'aborted';
  if (e instanceof ClosedError) return 'closed';
  return 'unavailable';
}
