/**
 * What id generators need from an engine, apart from locks: optional store interfaces a driver
 * may implement beside its lock contract ({@link LockDriver}). The lock core never calls them.
 */
import type { LockDriver } from './driver.js';

/**
 * A durable per-key high-water mark kept beside the lock (never expires), used by worker-id
 * leases so that a new holder of a recycled slot never reuses its predecessor's time.
 */
export interface MarkStore {
  /** The mark of `key`; 0n when never written. */
  readMark(key: string): Promise<bigint>;
  /**
   * Set the mark to max(current, `mark`), only while `owner` holds `key`, in one atomic step.
   * Resolves false (and changes nothing) when `owner` does not hold it.
   */
  raiseMark(key: string, owner: string, mark: bigint): Promise<boolean>;
}

/** Durable counters handed out in ranges (segment ids, src/ids/segment.ts). */
export interface RangeStore {
  /**
   * Advance the durable counter `name` by `count` (>= 1) in one atomic step and resolve its new
   * value, the END of the range (inclusive): the caller owns `[end - count + 1, end]`. Counters
   * start at 0, never expire and never go backwards (as far as the engine keeps its writes), so
   * ranges never overlap. Rejects with `IdsExhaustedError` (src/errors.ts) and changes nothing
   * when the counter would pass 2^63 - 1.
   */
  allocateRange(name: string, count: bigint): Promise<bigint>;
}

/** `driver` as a {@link MarkStore}, or undefined when it is not one. */
export function markStoreOf(driver: LockDriver): (LockDriver & MarkStore) | undefined {
  const d = driver as LockDriver & Partial<MarkStore>;
  return typeof d.readMark === 'function' && typeof d.raiseMark === 'function' ? (d as LockDriver & MarkStore) : undefined;
}

/** `driver` as a {@link RangeStore}, or undefined when it is not one. */
export function rangeStoreOf(driver: LockDriver): (LockDriver & RangeStore) | undefined {
  const d = driver as LockDriver & Partial<RangeStore>;
  return typeof d.allocateRange === 'function' ? (d as LockDriver & RangeStore) : undefined;
}
