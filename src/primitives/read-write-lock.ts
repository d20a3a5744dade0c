/**
 * Read-write lock: many readers at once, or one writer alone, on one key (the admission rule of
 * src/core/admission.ts: the write side is `exclusive`, the read side `shared`).
 *
 * - A queued writer stops new readers (a reader is admitted only while no writer is ahead of it),
 *   so a stream of readers cannot starve a writer, on drivers that queue waiters on the engine
 *   (`driver.info.fairness` is `fifo` or `choice`); on the others a reader that arrives while
 *   only readers hold is admitted.
 * - The write holder may take the read side inside its scope (`using()` / `lease.run()`, with
 *   `reentrant`): granted at once beside its own write hold, and kept after the write side is
 *   released (downgrade). The reverse (a reader taking the write side) would wait for itself
 *   and is refused with an `InvalidArgumentError`.
 * - Every grant, read or write, carries a fencing token strictly increasing per name across both
 *   sides; each side has the same `Lease` as a mutex (TTL or session liveness, renewal, lost
 *   signal). A mutex on the same name is the write side.
 */
import type { AcquireOptions, KeyInfo, LockClient } from '../core/client.js';
import { assertMode } from '../core/client.js';
import type { Lease } from '../core/lease.js';
import { validateKey } from '../core/validate.js';
import type { Admission } from '../drivers/driver.js';

/** One side of a {@link ReadWriteLock}: `acquire`, `tryAcquire` and `using` as on a client. */
export class LockSide {
  /** @internal */
  constructor(
    private readonly client: LockClient,
    /** The lock's name (its engine key). */
    readonly name: string,
    private readonly admission: Admission,
  ) {}

  /** Which side this is. */
  get mode(): 'read' | 'write' {
    return this.admission.mode === 'shared' ? 'read' : 'write';
  }

  /**
   * Take this side, waiting up to `waitMs`.
   * @throws {@link LockTimeoutError}, {@link LockAbortedError}, {@link UnavailableError} as `client.acquire`.
   */
  acquire(options: Omit<AcquireOptions, 'admission'> = {}): Promise<Lease> {
    return this.client.acquire(this.name, { ...options, admission: this.admission });
  }

  /** Exactly one attempt; `null` when this side cannot be taken now. */
  tryAcquire(options: Omit<AcquireOptions, 'admission' | 'waitMs'> = {}): Promise<Lease | null> {
    return this.client.tryAcquire(this.name, { ...options, admission: this.admission });
  }

  /** Take this side, run `fn`, and always release, even when `fn` throws. */
  using<T>(fn: (lease: Lease) => Promise<T> | T): Promise<T>;
  using<T>(options: Omit<AcquireOptions, 'admission'>, fn: (lease: Lease) => Promise<T> | T): Promise<T>;
  using<T>(
    optionsOrFn: Omit<AcquireOptions, 'admission'> | ((lease: Lease) => Promise<T> | T),
    maybeFn?: (lease: Lease) => Promise<T> | T,
  ): Promise<T> {
    if (typeof optionsOrFn === 'function') return this.client.using(this.name, { admission: this.admission }, optionsOrFn);
    return this.client.using(this.name, { ...optionsOrFn, admission: this.admission }, maybeFn as (lease: Lease) => Promise<T> | T);
  }
}

/**
 * Many readers or one writer, across processes and machines.
 *
 * @example
 * ```ts
 * const prices = new ReadWriteLock(locks, 'prices');
 * await prices.read.using(async () => {
 *   // any number of readers here at once, never beside a writer
 * });
 * await prices.write.using({ waitMs: 5000 }, async (lease) => {
 *   // alone; lease.token fences the write
 * });
 * ```
 */
export class ReadWriteLock {
  /** The read side: shared with other readers. */
  readonly read: LockSide;
  /** The write side: alone (the same as a mutex on this name). */
  readonly write: LockSide;

  /**
   * @param client the lock client both sides are taken through.
   * @param name the lock's name (its engine key).
   * @throws {@link UnsupportedModeError} when the client's driver cannot grant shared holds.
   */
  constructor(
    client: LockClient,
    readonly name: string,
  ) {
    validateKey(name);
    assertMode(client.driver, 'shared');
    this.read = new LockSide(client, name, { mode: 'shared' });
    this.write = new LockSide(client, name, { mode: 'exclusive' });
    this.inspect = () => client.inspectAll(name);
  }

  /** Every holder (readers, or the writer) and the number of waiters. */
  readonly inspect: () => Promise<KeyInfo>;
}
