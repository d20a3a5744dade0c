import { AsyncLocalStorage } from 'node:async_hooks';
import { LockLostError, LockNotHeldError, UnavailableError, type LockLostReason } from '../errors.js';
import { monotonicNow } from './clock.js';
import type { Admission } from '../drivers/driver.js';

/** What a Lease needs from the client that created it. */
export interface LeaseHost {
  /** Ask the engine to extend; resolves the new local deadline, or throws. */
  extend(held: HeldLock, ttlMs: number): Promise<void>;
  /** Final release of the engine's key (hold count reached zero). */
  release(held: HeldLock): Promise<boolean>;
  /** The client's reentrancy scope. */
  readonly scope: AsyncLocalStorage<ReadonlyMap<string, HeldLock>>;
}

/**
 * The shared state of one engine-level hold. Reentrant re-acquisitions create more {@link Lease}
 * handles over the same HeldLock; the engine key is released when the last handle is.
 */
export class HeldLock {
  state: 'held' | 'released' | 'lost' = 'held';
  holds = 1;
  /** Monotonic ms after which the hold is no longer safe to rely on. */
  validUntil: number;
  /** Monotonic ms at which the scheduler should renew next; Infinity: never. */
  nextRenewAt = Number.POSITIVE_INFINITY;
  renewing = false;
  /** Set once renewal stopped because `maxHoldMs` was reached. */
  maxHoldReached = false;
  lostError: LockLostError | undefined;
  releasePromise: Promise<boolean> | undefined;
  /** Lost locally: the bounded background give-back of what remains on the engine (release() waits for it). */
  givingBack: Promise<unknown> | undefined;
  /**
   * For session drivers: the session's own local deadline (see `Grant.validUntil`), checked on
   * top of {@link validUntil}.
   */
  liveUntil: (() => number) | undefined;
  /** Drops what ties this hold to its session (called on release). */
  detach: (() => void) | undefined;
  /** For session drivers: aborted when the session carrying this hold ends (the engine frees it then). */
  session: AbortSignal | undefined;
  /** How this hold shares its key (absent: exclusive). */
  admission: Admission | undefined;
  /** Called once when the hold becomes lost (session drivers give the engine's lock back). */
  onLost: ((held: HeldLock, reason: LockLostReason, error: LockLostError) => void) | undefined;
  private controller: AbortController | undefined;

  constructor(
    readonly key: string,
    readonly owner: string,
    readonly token: bigint,
    public ttlMs: number,
    readonly acquiredAt: number,
    validUntil: number,
    /** Monotonic ms after which renewal stops (`maxHoldMs`); Infinity when unbounded. */
    readonly maxHoldUntil: number,
  ) {
    this.validUntil = validUntil;
  }

  /** Created on first use: most leases are never asked for their signal. */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.state === 'lost' && !this.controller.signal.aborted) this.controller.abort(this.lostError);
    return this.controller.signal;
  }

  /** Held, and the local monotonic deadline has not passed. Marks the lock lost when it has. */
  check(now = monotonicNow()): boolean {
    if (this.state !== 'held') return false;
    if (now >= this.deadline()) {
      this.lose(this.maxHoldReached ? 'max-hold' : 'expired');
      return false;
    }
    return true;
  }

  /** The local monotonic deadline: the TTL's, or the session's when that comes first. */
  deadline(): number {
    return this.liveUntil ? Math.min(this.validUntil, this.liveUntil()) : this.validUntil;
  }

  /** Mark lost and abort the signal (once). Never throws. */
  lose(reason: LockLostReason, cause?: unknown): void {
    if (this.state !== 'held') return;
    this.state = 'lost';
    this.lostError = new LockLostError(this.key, reason, cause === undefined ? undefined : { cause });
    this.controller?.abort(this.lostError);
    try {
      this.onLost?.(this, reason, this.lostError);
    } catch {
      // a hook never breaks the caller
    }
  }
}

/**
 * A held lock. Obtained from `client.acquire()`, `client.tryAcquire()` or inside `client.using()`.
 *
 * @example
 * ```ts
 * await using lease = await client.acquire('orders:42');
 * await db.write(..., { fence: lease.token });   // reject stale holders downstream
 * if (lease.signal.aborted) return;              // lost: stop touching the resource
 * ```
 */
export class Lease implements AsyncDisposable {
  private released: Promise<boolean> | undefined;

  /** @internal */
  constructor(
    private readonly held: HeldLock,
    private readonly host: LeaseHost,
  ) {}

  /** The lock's key. */
  get key(): string {
    return this.held.key;
  }

  /**
   * Fencing token: strictly increasing per key across all holders, processes and restarts of
   * the client. Pass it to the protected resource and have it reject lower tokens.
   */
  get token(): bigint {
    return this.held.token;
  }

  /** The owner id recorded on the engine: `host:pid:clientId:seq`. */
  get owner(): string {
    return this.held.owner;
  }

  /**
   * Aborted, with a {@link LockLostError} as its reason, when the lock is lost: renewal found the
   * key gone or taken, the local deadline passed without a renewal, `maxHoldMs` ran out, the
   * session ended, or the client closed. Not aborted by a normal `release()`.
   *
   * Reading this property checks the local deadline first, so read it (or call {@link isHeld})
   * right before touching the resource: a reference to the signal kept from earlier aborts only
   * when the client's timer runs, and a process resumed after a long pause may handle an I/O
   * callback before that timer.
   */
  get signal(): AbortSignal {
    this.held.check();
    return this.held.signal;
  }

  /** How many reentrant holds share this engine lock. */
  get holdCount(): number {
    return this.held.holds;
  }

  /**
   * Whether this lease may still rely on the lock, by the local monotonic clock; no network I/O.
   * A paused process sees `false` as soon as it resumes past its deadline.
   */
  isHeld(): boolean {
    return this.released === undefined && this.held.check();
  }

  /** Milliseconds of local validity left (0 when not held). */
  remainingMs(): number {
    return this.isHeld() ? Math.max(0, Math.floor(this.held.deadline() - monotonicNow())) : 0;
  }

  /** Throw {@link LockLostError} (or {@link LockNotHeldError} after release) unless held; no I/O. */
  assertHeld(): void {
    if (this.isHeld()) return;
    if (this.released !== undefined || this.held.state === 'released') {
      throw new LockNotHeldError(this.key, 'it was released');
    }
    throw this.held.lostError ?? new LockLostError(this.key, 'expired');
  }

  /**
   * Extend the TTL now (renewal does this automatically unless disabled). With `ttlMs`, it also
   * becomes the TTL of later automatic renewals. Throws {@link LockLostError} when the engine no
   * longer records us as the holder.
   */
  async extend(ttlMs?: number): Promise<void> {
    this.assertHeld();
    await this.host.extend(this.held, ttlMs ?? this.held.ttlMs);
  }

  /**
   * Release this hold. Idempotent: every call resolves the same answer. Resolves `true` when the
   * engine still recorded us as the holder (so the release took effect), `false` when the lock had
   * already expired or been taken. It can never remove another owner's lock. For a reentrant hold,
   * the engine lock is released when the last handle is.
   */
  release(): Promise<boolean> {
    this.released ??= this.doRelease();
    return this.released;
  }

  private async doRelease(): Promise<boolean> {
    const held = this.held;
    if (held.holds > 1) {
      held.holds -= 1;
      return held.state === 'held';
    }
    held.holds = 0;
    held.releasePromise ??= this.host.release(held);
    return held.releasePromise;
  }

  /** `await using lease = await client.acquire(key)` releases at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return releaseOnDispose(() => this.release());
  }

  /**
   * Run `fn` in this lease's reentrancy scope: a `reentrant` acquire of the same key on the same
   * client inside `fn` re-enters instead of waiting for itself. `client.using()` does this for you.
   */
  run<T>(fn: () => T): T {
    const outer = this.host.scope.getStore();
    const next = new Map(outer);
    next.set(this.key, this.held);
    return this.host.scope.run(next, fn);
  }
}

/**
 * What `await using` does at the end of a block: release, and swallow an unreachable engine (the
 * key still expires by its TTL; disposal must not mask the block's own error).
 * @internal
 */
export async function releaseOnDispose(release: () => Promise<unknown>): Promise<void> {
  try {
    await release();
  } catch (e) {
    if (!(e instanceof UnavailableError)) throw e;
  }
}
