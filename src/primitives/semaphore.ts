/**
 * Semaphore: at most `permits` holders at once, over any driver.
 *
 * Construction: one lock per permit (`<name>:permit:<i>`), the way worker ids are leased. A
 * permit is an ordinary {@link Lease}, so it gets everything a lock has on every engine: a TTL
 * that frees the permit of a crashed holder, renewal with a lost signal, a fencing token (per
 * permit), inspection. Why not a counter or a sorted set: those exist on some engines only, and a
 * counter cannot tell a crashed holder's permit from a live one without the lease machinery this
 * reuses.
 *
 * Taking a permit: first one attempt per permit, starting at a random one (so contenders spread
 * instead of all trying permit 0 first); when every permit is busy, wait on all of them at once
 * (event-driven on each) and keep the first grant, giving back any other that lands. The cost: a
 * waiter waits on `permits` locks, so this suits small counts (connection slots, concurrent jobs:
 * up to a few dozen), and it is not FIFO across permits.
 */
import type { AcquireOptions, LockClient, LockInfo } from '../core/client.js';
import { monotonicNow } from '../core/clock.js';
import { unboundedController } from '../core/abort.js';
import type { Lease } from '../core/lease.js';
import { validateKey, validateMs, validateSignal } from '../core/validate.js';
import { usingHeld } from './using.js';
import { InvalidArgumentError, LockAbortedError, LockTimeoutError } from '../errors.js';

/** Options of a {@link Semaphore}. */
export interface SemaphoreOptions {
  /** How many holders at once. A whole number from 1 to 1024. */
  permits: number;
}

/** Most permits one semaphore may have: a busy semaphore's waiter waits on every permit. */
export const MAX_PERMITS = 1024;

/**
 * At most `permits` holders of `name` at once, across processes and machines.
 *
 * @example
 * ```ts
 * const pool = new Semaphore(locks, 'partner-api', { permits: 4 });
 * await pool.using({ waitMs: 10_000 }, async (permit) => {
 *   // at most 4 of these run at once in the whole fleet; permit.signal aborts if it is lost
 *   await callPartnerApi({ signal: permit.signal });
 * });
 * ```
 */
export class Semaphore {
  /** The lock key of each permit. */
  readonly keys: readonly string[];

  /**
   * @param client the lock client permits are taken through.
   * @param name the semaphore's name (its permits' keys start with it).
   */
  constructor(
    private readonly client: LockClient,
    readonly name: string,
    options: SemaphoreOptions,
  ) {
    validateKey(name);
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Semaphore options must be an object such as { permits: 4 }.');
    const { permits } = options;
    if (typeof permits !== 'number' || !Number.isInteger(permits) || permits < 1 || permits > MAX_PERMITS) {
      throw new InvalidArgumentError(`Semaphore permits must be a whole number from 1 to ${MAX_PERMITS}, got ${String(permits)}.`);
    }
    this.keys = Array.from({ length: permits }, (_, i) => `${name}:permit:${i}`);
  }

  /** Number of permits. */
  get permits(): number {
    return this.keys.length;
  }

  /** One attempt per permit; `null` when all are taken. */
  async tryAcquire(options: Omit<AcquireOptions, 'waitMs'> = {}): Promise<Lease | null> {
    const start = Math.floor(Math.random() * this.keys.length);
    for (let i = 0; i < this.keys.length; i++) {
      const lease = await this.client.tryAcquire(this.keys[(start + i) % this.keys.length]!, options);
      if (lease) return lease;
    }
    return null;
  }

  /**
   * Take a permit, waiting up to `waitMs` (default: the client's) for one to free.
   * @throws {@link LockTimeoutError} (its `key` is the semaphore's name) when none freed in time;
   *   {@link LockAbortedError} when `signal` aborts; {@link UnavailableError}.
   */
  async acquire(options: AcquireOptions = {}): Promise<Lease> {
    const waitMs = validateMs('waitMs', options.waitMs, 0, this.client.defaults.waitMs);
    const caller = validateSignal(options.signal);
    const deadline = monotonicNow() + waitMs;
    const first = await this.tryAcquire(options);
    if (first) return first;
    const remaining = Math.max(0, Math.floor(deadline - monotonicNow()));
    if (remaining === 0) throw new LockTimeoutError(this.name, waitMs);

    // Every permit is busy: wait on all of them, keep the first grant, give back the others.
    const race = unboundedController(); // one listener per permit
    const onCaller = (): void => race.abort(caller?.reason);
    caller?.addEventListener('abort', onCaller, { once: true });
    let winner: Lease | undefined;
    const attempts = this.keys.map((key) =>
      this.client.acquire(key, { ...options, waitMs: remaining, signal: race.signal }).then((lease) => {
        if (winner) {
          void lease.release().catch(() => false);
          return;
        }
        winner = lease;
        race.abort(WON);
      }),
    );
    const settled = await Promise.allSettled(attempts);
    caller?.removeEventListener('abort', onCaller);
    if (winner) return winner;
    if (caller?.aborted) throw new LockAbortedError(this.name, caller.reason);
    const failures = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    const other = failures.find((e) => !(e instanceof LockTimeoutError) && !(e instanceof LockAbortedError));
    if (other !== undefined) throw other as Error;
    throw new LockTimeoutError(this.name, waitMs);
  }

  /** Take a permit, run `fn`, and always give the permit back, even when `fn` throws. */
  using<T>(fn: (permit: Lease) => Promise<T> | T): Promise<T>;
  using<T>(options: AcquireOptions, fn: (permit: Lease) => Promise<T> | T): Promise<T>;
  using<T>(optionsOrFn: AcquireOptions | ((permit: Lease) => Promise<T> | T), maybeFn?: (permit: Lease) => Promise<T> | T): Promise<T> {
    return usingHeld((options: AcquireOptions) => this.acquire(options), optionsOrFn, maybeFn);
  }


  /** Who holds a permit right now (one entry per taken permit); no I/O beyond one inspect each. */
  async holders(): Promise<LockInfo[]> {
    const states = await Promise.all(this.keys.map((k) => this.client.inspect(k)));
    return states.filter((s): s is LockInfo => s !== null);
  }
}

const WON = new Error('another permit was granted first');
