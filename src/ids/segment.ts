/**
 * Segment ids (Meituan Leaf's "segment mode"): a durable counter on the engine hands out ranges of
 * `step` ids; the generator issues them from memory and fetches the next range in the background
 * before the current one runs out (double buffering).
 *
 * Guarantees:
 * - unique across every generator sharing the counter (any process, any host the engine reaches),
 *   as long as the engine keeps its writes: ranges come only from the engine's atomic counter
 *   (`LockDriver.allocateRange`), one atomic step each;
 * - strictly increasing per generator: ranges are consumed in the order the engine handed them out,
 *   and a range at or below what this generator already held is refused (`IdsRegressedError`);
 * - a crash (kill -9, power loss on a durable engine) leaves gaps, never duplicates: the unused rest
 *   of the loaded ranges is simply never issued;
 * - in steady state `next()` never waits for the engine: at most one fetch is in flight, started
 *   when `prefetchAt` of the current range is left, and a failed fetch is retried on a later call;
 *   callers see an error only when no id is loaded at all.
 *
 * Does not:
 * - order ids across generators (each one issues from its own range: trend-increasing only), or
 *   hide volume (ids are dense; put a keyed permutation on top for public ids);
 * - survive an engine that forgets writes: Redis without `appendonly yes` + `appendfsync always`
 *   can roll its counter back on a restart or failover, and then two generators can be handed the
 *   same range. SQLite fsyncs every range (synchronous=FULL).
 */
import { inspect } from 'node:util';
import type { LockClient } from '../core/client.js';
import { monotonicNow } from '../core/clock.js';
import { validateBool, validateMs, validateRatio } from '../core/validate.js';
import type { LockDriver } from '../drivers/driver.js';
import { rangeStoreOf, type RangeStore } from '../drivers/id-store.js';
import {
  ClosedError,
  IdsRegressedError,
  InvalidArgumentError,
  OutOfRangeError,
  UnavailableError,
  UnsupportedDriverError,
  isDlockError,
} from '../errors.js';

/** Options of {@link SegmentIds.open}. Give exactly one of `client` or `driver`. */
export interface SegmentIdsOptions {
  /** A lock client: its driver holds the counter. The generator never closes it. */
  client?: LockClient;
  /** A driver with `allocateRange` (memory, redis, sqlite). The generator never closes it. */
  driver?: LockDriver;
  /** The counter's name: every generator with the same name (on the same engine) shares one id space. */
  name: string;
  /** Ids per range (the first range, and the smallest when `adaptive` shrinks it). Default 1000. */
  step?: number | bigint;
  /**
   * Fetch the next range in the background once this fraction of the current range is left,
   * strictly between 0 and 1. Default 0.2.
   */
  prefetchAt?: number;
  /**
   * Adapt the step to the rate (Leaf's rule): double it, up to `maxStep`, when a range lasted less
   * than `rangeMs`; halve it, down to `step`, when one lasted `2 × rangeMs` or more. Default true.
   */
  adaptive?: boolean;
  /** Largest step `adaptive` grows to. Default max(step, 1,000,000). */
  maxStep?: number | bigint;
  /** How long one range should last when `adaptive`, in ms. Default 60,000. */
  rangeMs?: number;
}

/** Counters of one {@link SegmentIds}, for monitoring and tests. */
export interface SegmentIdsStats {
  /** Ids handed out. */
  readonly issued: bigint;
  /** `allocateRange` calls made: engine round trips, including failed ones. */
  readonly fetches: number;
  /** `allocateRange` calls that failed (engine unreachable or refused). */
  readonly failedFetches: number;
  /** Calls that found no id loaded and had to wait for the engine (0 in steady state). */
  readonly waits: number;
  /** The step the next fetch will ask for (before a batch's own need). */
  readonly step: bigint;
  /** Ids loaded and not yet handed out (current range plus the prefetched one). */
  readonly remaining: bigint;
}

interface Range {
  /** The next id to hand out; the range is used up when `next > end`. */
  next: bigint;
  readonly start: bigint;
  readonly end: bigint;
  /** Handing out this id (or a later one) starts the background fetch. */
  readonly trigger: bigint;
}

const INT64_MAX = 2n ** 63n - 1n;
const DEFAULT_STEP = 1000n;
const DEFAULT_MAX_STEP = 1_000_000n;
const DEFAULT_RANGE_MS = 60_000;
/** Largest `nextBatch` (the array is built in memory). */
export const MAX_SEGMENT_BATCH = 1_000_000;
/** Background retries after failed fetches back off up to this (a waiting caller retries at once). */
const MAX_RETRY_MS = 2000;

/**
 * Ids from ranges handed out by an engine's atomic counter (see the file header).
 *
 * @example
 * ```ts
 * import { connect, SegmentIds } from 'dlock';
 * const client = await connect('redis://127.0.0.1:6379');
 * const ids = await SegmentIds.open({ client, name: 'orders' });
 * const id = await ids.next();           // bigint, e.g. 1001n
 * const same = ids.tryNext();            // bigint, or undefined when no id is loaded (never waits)
 * const many = await ids.nextBatch(100); // strictly increasing, not necessarily contiguous
 * await ids.close();
 * await client.close();
 * ```
 */
export class SegmentIds {
  /** The counter's name. */
  readonly name: string;
  private readonly driver: LockDriver & RangeStore;
  private readonly minStep: bigint;
  private readonly maxStep: bigint;
  private readonly prefetchAt: number;
  private readonly adaptive: boolean;
  private readonly rangeMs: number;
  private step: bigint;

  private cur: Range = emptyRange();
  private spare: Range | undefined;
  /** The fetch in flight: resolves `undefined` on success, or the error (it never rejects). */
  private fetching: Promise<unknown> | undefined;
  private prefetchQueued = false;
  /** End of the highest range accepted: a new range must start above it. */
  private highest = 0n;
  /** Ids handed out from ranges already left behind. */
  private issuedBefore = 0n;
  private lastFetchAt: number | undefined;
  private failuresInARow = 0;
  private retryAt = 0;
  private closed = false;
  private fetches = 0;
  private failedFetches = 0;
  private waits = 0;

  private constructor(options: SegmentIdsOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('SegmentIds.open needs options such as { client, name: "orders" }.');
    }
    const { client, driver } = options;
    if ((client === undefined) === (driver === undefined)) {
      throw new InvalidArgumentError('SegmentIds needs exactly one of `client` (a LockClient) or `driver`.');
    }
    const d = client !== undefined ? (client as { driver?: unknown }).driver : driver;
    if (typeof d !== 'object' || d === null || typeof (d as LockDriver).info !== 'object') {
      throw new InvalidArgumentError('`client` must be a LockClient and `driver` a dlock driver.');
    }
    const target = d as LockDriver;
    const store = rangeStoreOf(target);
    if (!store) throw new UnsupportedDriverError(target.info.name, 'allocateRange', 'segment ids');
    this.driver = store;
    if (typeof options.name !== 'string' || options.name.length === 0) {
      throw new InvalidArgumentError(`SegmentIds name must be a non-empty string, got ${JSON.stringify(options.name)}.`);
    }
    this.name = options.name;
    this.minStep = validateCount('step', options.step, DEFAULT_STEP);
    const maxDefault = this.minStep > DEFAULT_MAX_STEP ? this.minStep : DEFAULT_MAX_STEP;
    this.maxStep = validateCount('maxStep', options.maxStep, maxDefault);
    if (this.maxStep < this.minStep) {
      throw new OutOfRangeError('maxStep', `maxStep (${this.maxStep}) must be at least step (${this.minStep}).`);
    }
    this.prefetchAt = validateRatio('prefetchAt', options.prefetchAt, 0.2);
    this.adaptive = validateBool('adaptive', options.adaptive, true);
    this.rangeMs = validateMs('rangeMs', options.rangeMs, 1, DEFAULT_RANGE_MS);
    this.step = this.minStep;
  }

  /**
   * Create a generator and load its first range (so a missing capability, a bad engine or a
   * regressed counter fail here).
   * @throws {@link UnsupportedDriverError} when the driver has no `allocateRange`;
   *   {@link InvalidArgumentError} / {@link OutOfRangeError} for bad options;
   *   {@link UnavailableError} when the engine cannot hand out the first range.
   */
  static async open(options: SegmentIdsOptions): Promise<SegmentIds> {
    const ids = new SegmentIds(options);
    ids.startFetch(ids.step);
    const error = await ids.fetching;
    if (error !== undefined) throw ids.surface(error);
    return ids;
  }

  /**
   * The next id if one is loaded, without waiting: `undefined` only when the loaded ranges are used
   * up (a fetch is then under way) or the generator is closed. The fast path of {@link next}.
   */
  tryNext(): bigint | undefined {
    const r = this.cur;
    const id = r.next;
    if (id <= r.end) {
      r.next = id + 1n;
      if (id >= r.trigger && this.spare === undefined && this.fetching === undefined) this.queuePrefetch();
      return id;
    }
    return this.advance();
  }

  /**
   * The next id. Resolves at once from the loaded range in steady state; waits for the engine only
   * when nothing is loaded.
   * @throws {@link UnavailableError} when nothing is loaded and fetching a range fails (the next
   *   call retries); {@link IdsRegressedError} when the engine's counter went backwards (the range
   *   is dropped; each later call fetches again, moving the counter on by a step, so this
   *   generator resumes, without repeating itself, once the counter passes what it held);
   *   `IdsExhaustedError` at 2^63 - 1; {@link ClosedError} after {@link close} or when the driver
   *   was closed.
   */
  next(): Promise<bigint> {
    const id = this.tryNext();
    return id !== undefined ? Promise.resolve(id) : this.wait(1n);
  }

  /**
   * `count` ids (1 to {@link MAX_SEGMENT_BATCH}), strictly increasing; contiguous within a range
   * but not across ranges. When it has to wait, it asks the engine for at least what is missing.
   */
  async nextBatch(count: number): Promise<bigint[]> {
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_SEGMENT_BATCH) {
      throw new OutOfRangeError('count', `count must be a whole number from 1 to ${MAX_SEGMENT_BATCH}, got ${String(count)}.`);
    }
    const out: bigint[] = [];
    while (out.length < count) {
      // With nothing loaded, wait() starts a fetch sized for the rest of the batch.
      const loaded = this.cur.next <= this.cur.end || this.spare !== undefined;
      const id = loaded ? this.tryNext() : undefined;
      out.push(id !== undefined ? id : await this.wait(BigInt(count - out.length)));
    }
    return out;
  }

  /** Counters for monitoring (see {@link SegmentIdsStats}). */
  stats(): SegmentIdsStats {
    const left = (r: Range | undefined): bigint => (r && r.next <= r.end ? r.end - r.next + 1n : 0n);
    return {
      issued: this.issuedBefore + (this.cur.next - this.cur.start),
      fetches: this.fetches,
      failedFetches: this.failedFetches,
      waits: this.waits,
      step: this.step,
      remaining: left(this.cur) + left(this.spare),
    };
  }

  /**
   * Stop issuing ids (the loaded rest becomes a gap) and wait for a fetch in flight, so the driver
   * can be closed next. Does not close the client or driver. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.retire();
    this.cur = emptyRange();
    this.spare = undefined;
    await this.fetching;
  }

  /** The current range is used up: switch to the prefetched one, or start a fetch. */
  private advance(): bigint | undefined {
    if (this.closed) return undefined;
    const spare = this.spare;
    if (spare !== undefined) {
      this.retire();
      this.cur = spare;
      this.spare = undefined;
      return this.tryNext();
    }
    if (this.fetching === undefined) this.startFetch(this.step);
    return undefined;
  }

  /** Wait for ranges until an id is there; `need` sizes a fetch this call has to start. */
  private async wait(need: bigint): Promise<bigint> {
    this.waits += 1;
    for (;;) {
      if (this.closed) throw new ClosedError(`SegmentIds "${this.name}"`);
      if (this.fetching === undefined && this.spare === undefined && this.cur.next > this.cur.end) {
        this.startFetch(need > this.step ? need : this.step);
      }
      const id = this.tryNext();
      if (id !== undefined) return id;
      const error = await this.fetching;
      if (error !== undefined) throw this.surface(error);
    }
  }

  /**
   * The background fetch starts on the next loop turn, not inside the caller's `next()`: a
   * synchronous engine (better-sqlite3, an fsynced transaction) would otherwise block that call.
   */
  private queuePrefetch(): void {
    if (this.prefetchQueued || this.closed) return;
    if (this.failuresInARow > 0 && monotonicNow() < this.retryAt) return;
    this.prefetchQueued = true;
    setImmediate(() => {
      this.prefetchQueued = false;
      if (this.closed || this.fetching !== undefined || this.spare !== undefined) return;
      this.startFetch(this.step);
    });
  }

  private startFetch(need: bigint): void {
    const now = monotonicNow();
    this.adapt(now);
    const count = need > this.step ? need : this.step;
    this.fetches += 1;
    // Sent right away (a synchronous throw becomes a rejection).
    const call = (async () => this.driver.allocateRange(this.name, count))();
    const fetching: Promise<unknown> = call.then(
      (end) => {
        this.fetching = undefined;
        try {
          this.accept(end, count);
        } catch (e) {
          return this.failed(e);
        }
        this.failuresInARow = 0;
        return undefined;
      },
      (e: unknown) => {
        this.fetching = undefined;
        return this.failed(e);
      },
    );
    this.fetching = fetching;
  }

  private failed(e: unknown): unknown {
    this.failedFetches += 1;
    this.failuresInARow += 1;
    this.retryAt = monotonicNow() + Math.min(MAX_RETRY_MS, 25 * 2 ** Math.min(this.failuresInARow, 10));
    return e ?? new Error('allocateRange failed without a reason');
  }

  /** Take the engine's answer as a range, unless it overlaps what this generator already had. */
  private accept(end: bigint, count: bigint): void {
    if (typeof end !== 'bigint') throw new TypeError(`allocateRange answered ${typeof end}, not a bigint`);
    const start = end - count + 1n;
    if (start <= this.highest) throw new IdsRegressedError(this.name, this.highest, end);
    this.highest = end;
    if (this.closed) return;
    const size = Number(count);
    const range: Range = { next: start, start, end, trigger: end - BigInt(Math.floor(this.prefetchAt * size)) };
    if (this.cur.next > this.cur.end) {
      this.retire();
      this.cur = range;
    } else {
      this.spare = range;
    }
  }

  /** Leaf's rule: a range that lasted less than `rangeMs` doubles the step; one that lasted 2x halves it. */
  private adapt(now: number): void {
    const last = this.lastFetchAt;
    this.lastFetchAt = now;
    if (!this.adaptive || last === undefined) return;
    const lasted = now - last;
    if (lasted < this.rangeMs) {
      const grown = this.step * 2n;
      this.step = grown < this.maxStep ? grown : this.maxStep;
    } else if (lasted >= 2 * this.rangeMs) {
      const shrunk = this.step / 2n;
      this.step = shrunk > this.minStep ? shrunk : this.minStep;
    }
  }

  /** Count what the current range handed out before it is replaced. */
  private retire(): void {
    this.issuedBefore += this.cur.next - this.cur.start;
  }

  /** What a caller sees: dlock errors as they are, anything else (connection, SQLITE_BUSY...) as unavailable. */
  private surface(error: unknown): Error {
    if (isDlockError(error)) return error;
    return new UnavailableError(
      `SegmentIds "${this.name}": fetching a range from the ${this.driver.info.name} driver failed ` +
        `(${error instanceof Error ? error.message : String(error)})`,
      { cause: error },
    );
  }
}

function emptyRange(): Range {
  return { next: 1n, start: 1n, end: 0n, trigger: 0n };
}

/** A count of ids: a whole number (or bigint) from 1 to 2^63 - 1; a number must also be safe. */
function validateCount(option: string, value: unknown, fallback: bigint): bigint {
  if (value === undefined) return fallback;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 1) return BigInt(value);
  if (typeof value === 'bigint' && value >= 1n && value <= INT64_MAX) return value;
  throw new OutOfRangeError(
    option,
    `${option} must be a whole number of ids from 1 to 2^63 - 1 (a bigint above 2^53), got ${inspect(value)}.`,
  );
}
