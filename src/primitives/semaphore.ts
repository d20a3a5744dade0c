/**
 * Semaphore: at most `permits` permits held at once, over any driver.
 *
 * On a driver that grants permits (`driver.info.modes` includes `permits`): an admission rule on
 * ONE key (src/core/admission.ts). A holder takes k permits at once, all or nothing; a waiter
 * waits on that one key's queue (event-driven, 0 engine commands while nothing changes); in fair
 * mode waiters are served in arrival order, a large request at the head is not overtaken by
 * smaller ones; each holder's permits are a {@link Lease}: a TTL (or session) returns them when
 * it crashes, renewal keeps them, the lease's signal tells their loss, its token fences. Limits
 * up to {@link MAX_LIMIT}: the cost of an acquisition does not depend on the limit.
 *
 * On the other drivers: the older construction, one lock per permit (`<name>:permit:<i>`), kept
 * because it works on every engine: at most {@link MAX_PERMITS} permits, one per acquisition,
 * not FIFO, and a waiter waits on every permit. `semaphore.construction` says which is in use.
 */
import type { AcquireOptions, LockClient, LockInfo } from '../core/client.js';
import { MAX_LIMIT, validateLimit, validatePermits } from '../core/admission.js';
import { monotonicNow } from '../core/clock.js';
import { unboundedController } from '../core/abort.js';
import type { Lease } from '../core/lease.js';
import { validateKey, validateMs, validateSignal } from '../core/validate.js';
import { usingHeld } from './using.js';
import { InvalidArgumentError, LockAbortedError, LockTimeoutError, UnavailableError, UnsupportedModeError } from '../errors.js';

/** Options of a {@link Semaphore}. */
export interface SemaphoreOptions {
  /** How many permits it has. A whole number from 1 to {@link MAX_LIMIT} (1024 per-permit locks on drivers without permits). */
  permits: number;
}

/** Per-call options of a semaphore's `acquire`, `tryAcquire` and `using`. */
export interface PermitOptions extends Omit<AcquireOptions, 'admission' | 'reentrant'> {
  /** Permits to take at once, all or nothing. Default 1. */
  permits?: number;
}

/** Most permits of the per-permit construction (drivers without the `permits` mode). */
export const MAX_PERMITS = 1024;

/**
 * At most `permits` permits held at once, across processes and machines.
 *
 * @example
 * ```ts
 * const pool = new Semaphore(locks, 'partner-api', { permits: 4 });
 * await pool.using({ waitMs: 10_000 }, async (permit) => {
 *   // at most 4 of these run at once in the whole fleet; permit.signal aborts if it is lost
 *   await callPartnerApi({ signal: permit.signal });
 * });
 * const batch = await pool.acquire({ permits: 3 }); // three at once, all or nothing
 * await batch.release();
 * ```
 */
export class Semaphore {
  /** The engine keys it uses: its name alone (permits mode), or one key per permit. */
  readonly keys: readonly string[];
  /** `admission` (one key, an admission rule) or `per-permit` (one lock per permit). */
  readonly construction: 'admission' | 'per-permit';
  /** Number of permits. */
  readonly permits: number;

  /**
   * @param client the lock client permits are taken through.
   * @param name the semaphore's name (its engine key).
   */
  constructor(
    private readonly client: LockClient,
    readonly name: string,
    options: SemaphoreOptions,
  ) {
    validateKey(name);
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Semaphore options must be an object such as { permits: 4 }.');
    const admission = client.driver.info.modes?.includes('permits') === true;
    this.construction = admission ? 'admission' : 'per-permit';
    const { permits } = options;
    if (admission) {
      this.permits = validateLimit(permits);
      this.keys = [name];
    } else {
      if (typeof permits !== 'number' || !Number.isInteger(permits) || permits < 1 || permits > MAX_PERMITS) {
        throw new InvalidArgumentError(
          `Semaphore permits must be a whole number from 1 to ${MAX_PERMITS} on the "${client.driver.info.name}" driver (one lock per permit; drivers with the permits mode allow up to ${MAX_LIMIT}), got ${String(permits)}.`,
        );
      }
      this.permits = permits;
      this.keys = Array.from({ length: permits }, (_, i) => `${name}:permit:${i}`);
    }
  }

  /** One attempt; `null` when the permits asked for are not free (or, fair, others queue first). */
  async tryAcquire(options: Omit<PermitOptions, 'waitMs'> = {}): Promise<Lease | null> {
    const k = this.count(options);
    if (this.construction === 'admission') return this.client.tryAcquire(this.name, this.forClient(options, k));
    const start = Math.floor(Math.random() * this.keys.length);
    for (let i = 0; i < this.keys.length; i++) {
      const lease = await this.client.tryAcquire(this.keys[(start + i) % this.keys.length]!, this.forClient(options, k));
      if (lease) return lease;
    }
    return null;
  }

  /**
   * Take permits (default 1), waiting up to `waitMs` (default: the client's) for them to free.
   * @throws {@link LockTimeoutError} (its `key` is the semaphore's name) when they did not free in
   *   time; {@link LockAbortedError} when `signal` aborts; {@link UnavailableError}.
   */
  async acquire(options: PermitOptions = {}): Promise<Lease> {
    const k = this.count(options);
    if (this.construction === 'admission') return this.client.acquire(this.name, this.forClient(options, k));
    return this.acquireAnyPermit(options);
  }

  /** Take permits, run `fn`, and always give them back, even when `fn` throws. */
  using<T>(fn: (permit: Lease) => Promise<T> | T): Promise<T>;
  using<T>(options: PermitOptions, fn: (permit: Lease) => Promise<T> | T): Promise<T>;
  using<T>(optionsOrFn: PermitOptions | ((permit: Lease) => Promise<T> | T), maybeFn?: (permit: Lease) => Promise<T> | T): Promise<T> {
    return usingHeld((options: PermitOptions) => this.acquire(options), optionsOrFn, maybeFn);
  }

  /** Who holds permits right now, with how many each (`permits`), oldest first. */
  async holders(): Promise<LockInfo[]> {
    if (this.construction === 'admission') return [...(await this.client.inspectAll(this.name)).holders];
    const states = await Promise.all(this.keys.map((k) => this.client.inspect(k)));
    return states.filter((s): s is LockInfo => s !== null);
  }

  /** Permits held right now (the sum over {@link holders}). */
  async inUse(): Promise<number> {
    return (await this.holders()).reduce((n, h) => n + h.permits, 0);
  }

  private count(options: PermitOptions): number {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
    const k = validatePermits(options.permits, this.permits);
    if (k > 1 && this.construction === 'per-permit') {
      throw new UnsupportedModeError(
        this.client.driver.info.name,
        'several permits in one acquisition',
        'without the permits mode a semaphore is one lock per permit',
        this.client.driver.info.modeAdvice?.instead ?? 'Take them one by one, or use a driver whose info.modes includes "permits".',
      );
    }
    return k;
  }

  private forClient(options: PermitOptions, k: number): AcquireOptions {
    // The client's options field by field: an object rest (`{ permits, ...rest }`) was ~3% of a
    // cycle's client CPU. Fields left out stay absent (the client then takes its defaults).
    const o = options as AcquireOptions;
    const out: AcquireOptions = {};
    if (o.ttlMs !== undefined) out.ttlMs = o.ttlMs;
    if (o.waitMs !== undefined) out.waitMs = o.waitMs;
    if (o.signal !== undefined) out.signal = o.signal;
    if (o.reentrant !== undefined) out.reentrant = o.reentrant;
    if (o.renew !== undefined) out.renew = o.renew;
    if (o.maxHoldMs !== undefined) out.maxHoldMs = o.maxHoldMs;
    if (o.fair !== undefined) out.fair = o.fair;
    if (this.construction === 'admission') out.admission = { mode: 'permits', permits: k, limit: this.permits };
    return out;
  }

  /** Per-permit construction: wait on every permit at once, keep the first grant. */
  private async acquireAnyPermit(options: PermitOptions): Promise<Lease> {
    const waitMs = validateMs('waitMs', options.waitMs, 0, this.client.defaults.waitMs);
    const caller = validateSignal(options.signal);
    const deadline = monotonicNow() + waitMs;
    // An engine that is down (or not up yet) is a reason to wait, as for a single lock: the
    // per-permit waits below back off and retry until the deadline.
    const first = await this.tryAcquire(options).catch((e: unknown) => {
      if (e instanceof UnavailableError) return null;
      throw e;
    });
    if (first) return first;
    const remaining = Math.max(0, Math.floor(deadline - monotonicNow()));
    if (remaining === 0) throw new LockTimeoutError(this.name, waitMs);
    const race = unboundedController(); // one listener per permit
    const onCaller = (): void => race.abort(caller?.reason);
    caller?.addEventListener('abort', onCaller, { once: true });
    let winner: Lease | undefined;
    const attempts = this.keys.map((key) =>
      this.client.acquire(key, { ...this.forClient(options, 1), waitMs: remaining, signal: race.signal }).then((lease) => {
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
}

const WON = new Error('another permit was granted first');
