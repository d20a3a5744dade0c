/**
 * MultiLock: hold several keys at once, all or nothing (Redisson's RedissonMultiLock, Curator's
 * InterProcessMultiLock), over any driver.
 *
 * Why this shape:
 * - Keys are taken one at a time in ONE canonical order (sorted by code unit, the same in every
 *   process), so two multi-locks over overlapping keys cannot deadlock: whoever holds the lowest
 *   shared key goes on, the other waits for it. Taking them in parallel would be faster uncontended
 *   but lets two contenders each hold a part the other waits for, until a timeout.
 * - One wait budget for the whole set: `waitMs` bounds the total, not each key.
 * - On any failure (timeout, abort, engine error) the keys already taken are released before the
 *   error is thrown: nothing is left held.
 * - One `signal` for the set: it aborts as soon as any of its locks is lost, with that lock's
 *   {@link LockLostError} as the reason.
 */
import type { AcquireOptions, LockClient } from '../core/client.js';
import { monotonicNow } from '../core/clock.js';
import { linkSignals, type LinkedSignal } from '../core/abort.js';
import { releaseOnDispose, type Lease } from '../core/lease.js';
import { validateKey, validateMs } from '../core/validate.js';
import { usingHeld } from './using.js';
import { InvalidArgumentError, LockTimeoutError } from '../errors.js';

/**
 * Several locks held together, released together. Tokens are per key: {@link tokenOf}.
 *
 * @example
 * ```ts
 * const transfer = new MultiLock(locks, ['account:alice', 'account:bob']);
 * await transfer.using(async (held) => {
 *   // both accounts are exclusive here; held.signal aborts if either lock is lost
 *   await move(100, { fences: held.tokens });
 * });
 * ```
 */
export class MultiLease implements AsyncDisposable {
  private readonly lost: LinkedSignal;
  private released: Promise<boolean> | undefined;

  /** @internal */
  constructor(
    /** One lease per key, in the canonical (sorted) order of {@link keys}. */
    readonly leases: readonly Lease[],
  ) {
    this.lost = linkSignals(...leases.map((l) => l.signal));
  }

  /** The keys, sorted. */
  get keys(): string[] {
    return this.leases.map((l) => l.key);
  }

  /** Fencing token of each key. */
  get tokens(): ReadonlyMap<string, bigint> {
    return new Map(this.leases.map((l) => [l.key, l.token]));
  }

  /** The fencing token of `key`; throws {@link InvalidArgumentError} for a key not in the set. */
  tokenOf(key: string): bigint {
    const lease = this.leases.find((l) => l.key === key);
    if (!lease) throw new InvalidArgumentError(`"${key}" is not one of this multi-lock's keys (${this.keys.join(', ')}).`);
    return lease.token;
  }

  /** Aborted (with the lost lock's {@link LockLostError}) as soon as any of the locks is lost. */
  get signal(): AbortSignal {
    // Reading each lease's signal notices a deadline that passed while the process was paused.
    for (const l of this.leases) if (l.signal.aborted) this.lost.abort(l.signal.reason);
    return this.lost.signal;
  }

  /** Whether every lock may still be relied on (local clock, no I/O). */
  isHeld(): boolean {
    return this.released === undefined && this.leases.every((l) => l.isHeld());
  }

  /**
   * Release every lock (all at once). Idempotent. Resolves `true` when every one was still held,
   * `false` when at least one had already expired or been taken. Rejects with
   * {@link UnavailableError} if some could not be reached (they expire by their TTL); the others
   * are released anyway.
   */
  release(): Promise<boolean> {
    this.released ??= this.doRelease();
    return this.released;
  }

  private async doRelease(): Promise<boolean> {
    this.lost.dispose();
    return releaseAll(this.leases);
  }

  /** `await using held = await multi.acquire()` releases at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return releaseOnDispose(() => this.release());
  }

  /** Run `fn` in every lease's reentrancy scope (see {@link Lease.run}). */
  run<T>(fn: () => T): T {
    return this.leases.reduceRight<() => T>((inner, lease) => () => lease.run(inner), fn)();
  }
}

/** Release leases together; true when all were held; an unreachable engine is reported after all ran. */
async function releaseAll(leases: readonly Lease[]): Promise<boolean> {
  const results = await Promise.allSettled(leases.map((l) => l.release()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.every((r) => r.status === 'fulfilled' && r.value);
}

/**
 * All-or-nothing acquisition of a fixed set of keys on one {@link LockClient}.
 *
 * @example
 * ```ts
 * const both = new MultiLock(locks, ['seat:12A', 'seat:12B']);
 * const held = await both.tryAcquire();      // null when any seat is taken; nothing left held
 * if (held) try { await book(held.tokens) } finally { await held.release() }
 * ```
 */
export class MultiLock {
  /** The keys, deduplicated and sorted: the order in which they are taken. */
  readonly keys: readonly string[];

  /**
   * @param client the lock client the keys are taken through.
   * @param keys one or more keys; duplicates are taken once.
   * @throws InvalidArgumentError for an empty list or an invalid key.
   */
  constructor(
    private readonly client: LockClient,
    keys: Iterable<string>,
  ) {
    if (keys === null || typeof keys !== 'object' || typeof keys[Symbol.iterator] !== 'function') {
      throw new InvalidArgumentError('MultiLock keys must be an array (or another iterable) of strings.');
    }
    const unique = [...new Set([...keys].map((k) => validateKey(k)))];
    if (unique.length === 0) throw new InvalidArgumentError('MultiLock needs at least one key.');
    // Code-unit order: the same in every process and locale (localeCompare is not).
    this.keys = unique.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /**
   * Take every key, waiting at most `waitMs` in total (default: the client's).
   * @throws {@link LockTimeoutError} naming the key that was still busy when the budget ran out;
   *   {@link LockAbortedError} when `signal` aborts; {@link UnavailableError}. In every case the
   *   keys already taken have been released.
   */
  async acquire(options: AcquireOptions = {}): Promise<MultiLease> {
    const waitMs = validateMs('waitMs', options.waitMs, 0, this.client.defaults.waitMs);
    const deadline = monotonicNow() + waitMs;
    return this.take(async (key) => {
      try {
        return await this.client.acquire(key, { ...options, waitMs: Math.max(0, Math.floor(deadline - monotonicNow())) });
      } catch (e) {
        // Report the whole budget, not what was left of it for this key.
        if (e instanceof LockTimeoutError) throw new LockTimeoutError(key, waitMs, { cause: e });
        throw e;
      }
    });
  }

  /** One attempt per key, in order; `null` (with nothing held) as soon as one is busy. */
  tryAcquire(options: Omit<AcquireOptions, 'waitMs'> = {}): Promise<MultiLease | null> {
    return this.take((key) => this.client.tryAcquire(key, options));
  }

  /** Acquire, run `fn`, and always release, even when `fn` throws. */
  using<T>(fn: (held: MultiLease) => Promise<T> | T): Promise<T>;
  using<T>(options: AcquireOptions, fn: (held: MultiLease) => Promise<T> | T): Promise<T>;
  using<T>(optionsOrFn: AcquireOptions | ((held: MultiLease) => Promise<T> | T), maybeFn?: (held: MultiLease) => Promise<T> | T): Promise<T> {
    return usingHeld((options: AcquireOptions) => this.acquire(options), optionsOrFn, maybeFn);
  }


  /** Take the keys in order with `one`; on a `null` (busy) or an error, give back what was taken. */
  private take(one: (key: string) => Promise<Lease>): Promise<MultiLease>;
  private take(one: (key: string) => Promise<Lease | null>): Promise<MultiLease | null>;
  private async take(one: (key: string) => Promise<Lease | null>): Promise<MultiLease | null> {
    const leases: Lease[] = [];
    try {
      for (const key of this.keys) {
        const lease = await one(key);
        if (lease === null) {
          await releaseAll(leases).catch(() => false);
          return null;
        }
        leases.push(lease);
      }
    } catch (e) {
      // Give back what was taken; the original error is the one to report.
      await releaseAll(leases).catch(() => false);
      throw e;
    }
    return new MultiLease(leases);
  }
}
