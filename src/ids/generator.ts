/**
 * IdGenerator: a {@link Snowflake} whose worker id is leased through a dlock engine.
 *
 * `await IdGenerator.start({ url | client, name })` claims a free worker id (see worker-lease.ts),
 * reads the slot's high-water mark and issues only above it (the floor), raises the mark ahead of
 * its own time on an unref'd timer and never issues beyond the last mark the engine accepted (the
 * ceiling), and stops issuing once the lease is lost. `next()` stays synchronous: the lease and the
 * marks are kept in the background, and the hot path only compares numbers. The background needs
 * the event loop, though: one synchronous loop of `next()` calls (or one `nextBatch`) running
 * longer than markAheadMs reaches the ceiling; yield between large batches.
 *
 * Guarantees (besides Snowflake's per-generator ones): no two generators with the same `name` on
 * the same engine issue the same id, across processes, hosts (for a distributed engine), crashes,
 * restarts that reuse a worker id, pauses past the lease TTL and clock steps, as long as the
 * engine keeps its writes (see worker-lease.ts). When the lease is lost, `next()` throws
 * {@link WorkerLeaseLostError} at once (the lease's abort event) or at the latest on the next time
 * unit (`lease.isHeld()`, checked by the monotonic clock, no I/O: a process resumed after a pause
 * sees it before issuing anything); even a generator that missed both could not pass its ceiling.
 *
 * Timing, by default (ttlMs 10 s): the mark runs `markAheadMs` = min(2 s, TTL/2) ahead of the
 * generator's time and is raised every markAheadMs/4. Borrowing is capped at markAheadMs/2, so a
 * healthy engine never lets the generator reach its ceiling; a stalled one stops it within
 * markAheadMs ({@link WorkerMarkStalledError}; ids resume after the next accepted write). A
 * successor after a crash waits the TTL for the slot and then finds the mark already behind its
 * clock; after a clean `close()` the mark may still be up to markAheadMs ahead, which is why the
 * claim prefers other slots, and why `close()` does not write a "final" mark: the mark on the
 * engine already covers every id issued (ids never pass the ceiling), and marks can only be raised.
 */
import type { LockClient } from '../core/client.js';
import { monotonicNow, sleep } from '../core/clock.js';
import { validateMs } from '../core/validate.js';
import { connect } from '../connect.js';
import {
  ClockBackwardsError,
  ClosedError,
  InvalidArgumentError,
  LockLostError,
  OutOfRangeError,
  WorkerLeaseLostError,
  WorkerMarkStalledError,
} from '../errors.js';
import { LogicalClock, type IdClock } from './clock.js';
import { IdLayout } from './layout.js';
import { Snowflake, type SnowflakeTuning } from './snowflake.js';
import { WorkerLease } from './worker-lease.js';

/** Options of {@link IdGenerator.start}. Give exactly one of `client` and `url`. */
export interface IdGeneratorOptions extends SnowflakeTuning {
  /**
   * Lease worker ids through this client (its driver needs readMark/raiseMark). Not closed by the
   * generator. A `maxHoldMs` set on the client ends the worker lease (and the generator) after that.
   */
  client?: LockClient;
  /** Or connect to this engine (`sqlite:PATH`, `redis://...`); the generator closes that client. */
  url?: string;
  /** The id space: generators with the same name on the same engine share worker ids. */
  name: string;
  /** Use exactly this worker id (default: any free one). */
  slot?: number;
  /** Worker lease TTL on the engine, in ms (renewed automatically). Default 10,000. */
  ttlMs?: number;
  /** Wait this long for a free worker id, in ms. Default 0 (fail at once with NoFreeWorkerError). */
  waitMs?: number;
  /** How far ahead of the generator's time the slot's mark is kept, in ms. Default min(2000, ttlMs / 2). */
  markAheadMs?: number;
  /** Longest wait at start for the clock to pass a recycled slot's mark, in ms. Default 10,000. */
  maxStartWaitMs?: number;
  /** Abort `start()`. */
  signal?: AbortSignal;
}

/** See the file header. */
export class IdGenerator extends Snowflake {
  /** The id space's name. */
  readonly name: string;
  /** The engine key of this generator's worker slot. */
  readonly workerKey: string;
  private readonly wl: WorkerLease;
  private readonly ownedClient: LockClient | undefined;
  private readonly aheadUnits: number;
  private readonly markEveryMs: number;
  private readonly stopped = new AbortController();
  private ceilingUnit: number;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private lastMarkError: unknown;

  /**
   * Claim a worker id and start generating. Resolves once the first mark ahead is on the engine.
   * @throws {@link NoFreeWorkerError} when every worker id is leased (after `waitMs`);
   *   `UnsupportedDriverError` when the driver keeps no marks; {@link ClockBackwardsError} (source
   *   `mark`) when the only usable slot's mark is more than `maxStartWaitMs` ahead of our clock.
   */
  static async start(options: IdGeneratorOptions): Promise<IdGenerator> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('IdGenerator options must be an object.');
    const name = options.name;
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
      throw new InvalidArgumentError('name must be a non-empty string of at most 200 characters.');
    }
    if ((options.client === undefined) === (options.url === undefined)) {
      throw new InvalidArgumentError('Give exactly one of client (a LockClient) or url (e.g. "sqlite:/var/tmp/ids.db").');
    }
    const layout = IdLayout.from(options.layout);
    const clock = options.clock ?? new LogicalClock();
    const ttlMs = validateMs('ttlMs', options.ttlMs, 30, 10_000);
    const markAheadMs = validateMs('markAheadMs', options.markAheadMs, 4 * layout.unitMs, Math.min(2000, Math.floor(ttlMs / 2)));
    if (markAheadMs >= ttlMs) {
      throw new OutOfRangeError('markAheadMs', `markAheadMs (${markAheadMs}) must be below ttlMs (${ttlMs}), or a successor would wait for the mark after every crash.`);
    }
    const maxBorrowMs = validateMs('maxBorrowMs', options.maxBorrowMs, 0, Math.min(1000, Math.floor(markAheadMs / 2)));
    if (maxBorrowMs > markAheadMs / 2) {
      throw new OutOfRangeError('maxBorrowMs', `maxBorrowMs (${maxBorrowMs}) must be at most markAheadMs / 2 (${markAheadMs / 2}): borrowed time must stay under the mark.`);
    }
    const maxStartWaitMs = validateMs('maxStartWaitMs', options.maxStartWaitMs, 0, 10_000);
    const waitMs = validateMs('waitMs', options.waitMs, 0, 0);
    const slot = options.slot;
    if (slot !== undefined && (typeof slot !== 'number' || !Number.isInteger(slot) || slot < 0 || slot > layout.maxWorker)) {
      throw new OutOfRangeError('slot', `slot must be a whole number from 0 to ${layout.maxWorker}, got ${String(slot)}.`);
    }
    const borrowUnits = Math.floor(maxBorrowMs / layout.unitMs);
    // Ms until the clock is close enough to the first unit above `markMs` to borrow the rest.
    const waitForMark = (markMs: number): number => {
      if (markMs <= 0) return 0;
      const need = layout.unitOf(markMs) + 1 - borrowUnits;
      return Math.max(0, layout.msOf(need) - clock.now());
    };

    const ownedClient = options.url !== undefined ? await connect(options.url) : undefined;
    const client = options.client ?? ownedClient;
    if (typeof client?.tryAcquire !== 'function' || typeof client.driver !== 'object') {
      throw new InvalidArgumentError('client must be a LockClient.');
    }
    let wl: WorkerLease | undefined;
    try {
      wl = await WorkerLease.claim({
        client,
        name,
        slots: layout.maxWorker + 1,
        slot,
        ttlMs,
        waitMs,
        maxMarkWaitMs: maxStartWaitMs,
        waitForMark,
        signal: options.signal,
      });
      const waitStarted = monotonicNow();
      for (let wait = waitForMark(wl.markMs); wait > 0; wait = waitForMark(wl.markMs)) {
        const waited = monotonicNow() - waitStarted;
        if (waited + wait > maxStartWaitMs) {
          throw new ClockBackwardsError(
            'mark',
            Math.round(wait + maxBorrowMs),
            Math.round(waited),
            `Worker id ${wl.slot} of id generator "${name}" was used up to ${new Date(wl.markMs).toISOString()}, ` +
              `${Math.round(wait + maxBorrowMs)} ms ahead of this host's clock: the previous holder's clock was ahead of ours, ` +
              "or ours was stepped back. Issuing now could repeat the previous holder's ids, and waiting would take longer than " +
              `maxStartWaitMs (${maxStartWaitMs} ms). Check the hosts' clocks (NTP), raise maxStartWaitMs, or let the generator pick another worker id.`,
          );
        }
        await sleep(wait, options.signal);
      }
      const gen = new IdGenerator(options, layout, clock, maxBorrowMs, wl, ownedClient, markAheadMs);
      // The first mark ahead must land before any id: retry a busy or failing engine for a while.
      const markStarted = monotonicNow();
      for (let attempt = 0; ; attempt++) {
        await gen.writeMark();
        if (gen.haltedWith) throw gen.haltedWith;
        if (gen.ceilingUnit > gen.lastUnit) break;
        if (monotonicNow() - markStarted > ttlMs / 2 || !wl.lease.isHeld()) {
          throw new WorkerMarkStalledError(name, wl.slot, layout.msOf(gen.ceilingUnit), { cause: gen.lastMarkError });
        }
        await sleep(Math.min(25 * 2 ** attempt, 500), options.signal);
      }
      gen.schedule();
      return gen;
    } catch (e) {
      await wl?.release().catch(() => false);
      await ownedClient?.close().catch(() => undefined);
      throw e;
    }
  }

  private constructor(
    options: IdGeneratorOptions,
    layout: IdLayout,
    clock: IdClock,
    maxBorrowMs: number,
    wl: WorkerLease,
    ownedClient: LockClient | undefined,
    markAheadMs: number,
  ) {
    super({
      ...options,
      layout,
      clock,
      maxBorrowMs,
      workerId: wl.slot,
      floorMs: wl.markMs > 0 ? wl.markMs : undefined,
    });
    this.name = options.name;
    this.label = `id generator "${options.name}" (worker id ${wl.slot})`;
    this.workerKey = wl.key;
    this.wl = wl;
    this.ownedClient = ownedClient;
    this.aheadUnits = Math.max(1, Math.floor(markAheadMs / layout.unitMs));
    this.markEveryMs = Math.max(1, Math.floor(markAheadMs / 4));
    // Nothing may be issued before the first mark ahead is accepted.
    this.ceilingUnit = this.lastUnit;
    this.setCeiling(this.ceilingUnit);
    this.setGuard(() => this.check());
    wl.lease.signal.addEventListener('abort', () => this.leaseLost(wl.lease.signal.reason), { once: true });
  }

  /** Aborted (with the error `next()` throws from then on) once the generator stops for good: lease lost or closed. */
  get signal(): AbortSignal {
    return this.stopped.signal;
  }

  /** Whether `next()` may still issue ids (the lease is held and the generator open). */
  isActive(): boolean {
    return !this.stopped.signal.aborted && this.wl.lease.isHeld();
  }

  /** The time (ms since 1970) up to which the engine has accepted this generator's mark. */
  get coveredUntilMs(): number {
    return this.layout.msOf(this.ceilingUnit);
  }

  /**
   * Stop issuing (at once: `next()` throws ClosedError), stop the mark timer, release the worker
   * id, and close the client if the generator opened it. Idempotent; leaves no timers.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /** `await using`: the same as {@link IdGenerator.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async doClose(): Promise<void> {
    this.stop(new ClosedError(`Id generator "${this.name}"`));
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.writing;
    await this.wl.release().catch(() => false);
    await this.ownedClient?.close();
  }

  /** The guard: called on each new time unit. */
  private check(): void {
    if (this.wl.lease.isHeld()) return;
    const lease = this.wl.lease;
    this.leaseLost(lease.signal.aborted ? lease.signal.reason : undefined);
    throw this.haltedWith ?? new WorkerLeaseLostError(this.name, this.workerId, 'its TTL ran out');
  }

  private leaseLost(reason: unknown): void {
    const why =
      reason instanceof LockLostError
        ? reason.reason === 'closed'
          ? 'its lock client was closed'
          : reason.reason === 'expired'
            ? 'its TTL ran out before a renewal succeeded: engine unreachable or process paused'
            : reason.reason === 'not-held'
              ? 'the engine no longer records it as the holder'
              : `lease lost: ${reason.reason}`
        : 'its TTL ran out before a renewal succeeded';
    this.stop(new WorkerLeaseLostError(this.name, this.workerId, why, { cause: reason }));
  }

  private stop(error: Error): void {
    if (this.stopped.signal.aborted) return;
    this.halt(error);
    this.stopped.abort(error);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.writeMark().then(() => this.schedule());
    }, this.markEveryMs);
    this.timer.unref();
  }

  /** Raise the mark to (max(clock, last id) + markAhead); on success raise the ceiling. Never rejects. */
  private writeMark(): Promise<void> {
    if (this.writing) return this.writing;
    const target = Math.min(Math.max(this.unitNow(), this.lastUnit) + this.aheadUnits, this.layout.maxTime);
    this.writing = (async () => {
      try {
        if (this.stopped.signal.aborted) return;
        const ok = await this.wl.raise(this.layout.msOf(target));
        if (!ok) {
          this.stop(new WorkerLeaseLostError(this.name, this.workerId, 'the engine refused its mark: it no longer records it as the holder'));
          return;
        }
        this.lastMarkError = undefined;
        if (target > this.ceilingUnit && !this.stopped.signal.aborted) {
          this.ceilingUnit = target;
          this.setCeiling(target);
        }
      } catch (e) {
        // The generator runs on to its ceiling and stops there; the next tick tries again.
        if (this.lastMarkError === undefined) {
          this.logger?.warn?.(`${this.label}: raising the worker mark failed; ids stop at ${new Date(this.coveredUntilMs).toISOString()} unless a retry succeeds`, {
            error: e instanceof Error ? e.message : String(e),
          });
        }
        this.lastMarkError = e;
      } finally {
        this.writing = undefined;
      }
    })();
    return this.writing;
  }

  /** Where the ceiling stops the generator: a stalled mark (ids resume once a write succeeds). */
  protected override ceilingReached(): Error {
    return new WorkerMarkStalledError(this.name, this.workerId, this.coveredUntilMs, { cause: this.lastMarkError });
  }
}
