/**
 * Distributed ids. Snowflake mode (this file's first block): `IdGenerator` (worker ids leased
 * through a dlock engine), `Snowflake` (worker ids you assign), `IdLayout`, the clocks and the
 * keyed `IdPermutation` for public ids.
 */
export { IdLayout, DEFAULT_EPOCH_MS, MAX_ID, parseId, type LayoutOptions, type IdParts, type DecodedId } from './layout.js';
export { LogicalClock, ManualClock, type IdClock, type ClockSources, type LogicalClockOptions } from './clock.js';
export {
  Snowflake,
  MAX_SNOWFLAKE_BATCH,
  type SnowflakeOptions,
  type SnowflakeTuning,
  type ClockBehindPolicy,
  type IdWarning,
} from './snowflake.js';
export { IdGenerator, type IdGeneratorOptions } from './generator.js';
export { workerKey } from './worker-lease.js';
export { IdPermutation, MIN_PERMUTATION_KEY_BYTES } from './permutation.js';

/**
 * Segment mode (Leaf-style ranges from an engine counter, prefetched in the background) and the
 * Redis date-prefix + INCR ids (read their durability caveat).
 */
export { SegmentIds, MAX_SEGMENT_BATCH, type SegmentIdsOptions, type SegmentIdsStats } from './segment.js';
export { RedisDailyIds, type RedisDailyIdsOptions, type DailyIdParts } from './daily.js';
