/**
 * "Date prefix + counter" ids on Redis: `YYYYMMDD × 10^digits + n`, where `n` counts from 1 each
 * day (e.g. 20250314 00000042 with 8 digits). The date comes from the Redis server's clock
 * (`TIME` inside the script), never from the client's, and the counter lives in one small hash per
 * sequence that expires `keepDays` after its day ends.
 *
 * Guarantees (while Redis keeps its writes):
 * - strictly increasing across every client of the sequence, since each id is one atomic script
 *   run on one key; a new day starts above the previous day's ids;
 * - a server clock stepped back into an earlier day does not turn ids back: the later day and its
 *   counter are kept until the clock catches up.
 *
 * Durability caveat, plainly: these ids are only as durable as Redis. Without `appendonly yes` and
 * `appendfsync always`, a crash or restart loses the last writes, and an asynchronous replica
 * promoted by a failover may not have them: the counter rolls back and ids already handed out are
 * handed out AGAIN (duplicates). They also reveal daily volume (the 42nd id of the day ends in 42).
 * When duplicates are unacceptable, use segment ids on a durable engine or snowflake ids; when
 * volume must stay private, put a keyed permutation on top.
 */
import { inspect } from 'node:util';
import { IdsExhaustedError, InvalidArgumentError, OutOfRangeError } from '../errors.js';
import { importIoredis } from '../drivers/redis/peer.js';
import {
  IoRedisAdapter,
  NodeRedisAdapter,
  isIoRedis,
  isNodeRedis,
  type IoRedisLike,
  type NodeRedisLike,
  type RedisAdapter,
} from '../drivers/redis/adapter.js';
import * as scripts from '../drivers/redis/scripts.generated.js';

/** Options of {@link RedisDailyIds.open}. Give exactly one of `client` or `url`. */
export interface RedisDailyIdsOptions {
  /** An ioredis Redis/Cluster or a connected node-redis client; never closed by the generator. */
  client?: IoRedisLike | NodeRedisLike;
  /** `redis://host:port[/db]`: the generator opens (and closes) its own ioredis connection. */
  url?: string;
  /** The sequence's name; every generator with the same name shares the counter. */
  name: string;
  /**
   * Digits of the daily counter, 1 to 11 (ids stay below 2^63). Default 8: up to 99,999,999 ids a
   * day, and the ids (16 digits) stay below 2^53, exact even as JavaScript numbers and in JSON.
   */
  digits?: number;
  /**
   * Offset of the business day from UTC in minutes (e.g. 480 for UTC+8), a fixed offset: daylight
   * saving is not followed. From -1440 to 1440 exclusive. Default 0 (UTC).
   */
  utcOffsetMinutes?: number;
  /** Days the counter is kept after its day ends (so a late clock can still find it). 1 to 365, default 2. */
  keepDays?: number;
  /** Key prefix. Default `dlock`: the counter is the hash `dlock:{daily:<name>}`. */
  prefix?: string;
}

/** What an id is made of. */
export interface DailyIdParts {
  /** The server's date when the id was handed out, `YYYYMMDD` (in the configured offset). */
  readonly day: string;
  /** The id's number within that day, from 1. */
  readonly counter: bigint;
}

const MAX_DIGITS = 11;

/**
 * Ids `YYYYMMDD × 10^digits + n` from Redis (see the file header, and its durability caveat).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { RedisDailyIds } from 'dlock/redis';
 * const orders = await RedisDailyIds.open({ client: new Redis(), name: 'orders', utcOffsetMinutes: 60 });
 * await orders.next();                  // 2025031400000001n
 * orders.decode(2025031400000001n);     // { day: '20250314', counter: 1n }
 * ```
 */
export class RedisDailyIds {
  /** The counter name. */
  readonly name: string;
  /** Digits of the daily counter part (the id is `YYYYMMDD * 10^digits + counter`). */
  readonly digits: number;
  /** The Redis key of the counter hash. */
  readonly key: string;
  private readonly scale: bigint;
  private readonly maxCounter: bigint;
  private readonly offsetSeconds: number;
  private readonly keepDays: number;

  private constructor(
    private readonly adapter: RedisAdapter,
    options: RedisDailyIdsOptions,
  ) {
    this.name = options.name;
    this.digits = options.digits ?? 8;
    this.scale = 10n ** BigInt(this.digits);
    this.maxCounter = this.scale - 1n;
    this.offsetSeconds = (options.utcOffsetMinutes ?? 0) * 60;
    this.keepDays = options.keepDays ?? 2;
    this.key = `${options.prefix ?? 'dlock'}:{daily:${options.name}}`;
  }

  /**
   * Check the options and connect (when given a `url`).
   * @throws {@link InvalidArgumentError} / {@link OutOfRangeError} for bad options.
   */
  static async open(options: RedisDailyIdsOptions): Promise<RedisDailyIds> {
    validate(options);
    if (options.client !== undefined) {
      const c = options.client;
      const adapter = isNodeRedis(c) ? new NodeRedisAdapter(c, false) : new IoRedisAdapter(c, false);
      return new RedisDailyIds(adapter, options);
    }
    const { Redis } = await importIoredis();
    const client = new Redis(options.url ?? '', { maxRetriesPerRequest: 2, connectTimeout: 5000 });
    // Errors reach the caller through the rejected commands; the event only keeps Node from throwing.
    client.on('error', () => undefined);
    return new RedisDailyIds(new IoRedisAdapter(client, true), options);
  }

  /**
   * The next id: one script run (one round trip).
   * @throws `IdsExhaustedError` when today's counter is used up (10^digits - 1 ids): retry tomorrow
   *   or use more digits; the Redis client's error when Redis cannot be reached.
   */
  async next(): Promise<bigint> {
    const [first] = await this.take(1);
    return first;
  }

  /** `count` consecutive ids of the same day (1 to 1,000,000), in one round trip. */
  async nextBatch(count: number): Promise<bigint[]> {
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 1_000_000) {
      throw new OutOfRangeError('count', `count must be a whole number from 1 to 1000000, got ${String(count)}.`);
    }
    const [first] = await this.take(count);
    return Array.from({ length: count }, (_, i) => first + BigInt(i));
  }

  /** Split an id of this sequence into its day and counter. */
  decode(id: bigint): DailyIdParts {
    if (typeof id !== 'bigint' || id <= 0n) throw new InvalidArgumentError('id must be a positive bigint.');
    return { day: (id / this.scale).toString(), counter: id % this.scale };
  }

  /** Close the connection if the generator opened it (`url`); a caller's client is left open. */
  close(): Promise<void> {
    return this.adapter.close();
  }

  /** Run the script for `count` ids; resolves the first one. */
  private async take(count: number): Promise<[bigint]> {
    const r = (await this.adapter.run(
      scripts.dailyId,
      [this.key],
      [count, this.maxCounter.toString(), this.offsetSeconds, this.keepDays],
    )) as [number | string, number | string, number | string];
    const day = BigInt(r[1]);
    const n = BigInt(r[2]);
    if (Number(r[0]) !== 1) {
      throw new IdsExhaustedError(
        this.name,
        `the ${this.digits}-digit counter of ${day} is at ${n} and cannot hand out ${count} more (at most ${this.maxCounter} a day); ` +
          'wait for the next day (server clock) or use more digits under a new name',
      );
    }
    return [day * this.scale + n - BigInt(count) + 1n];
  }
}

function validate(options: RedisDailyIdsOptions): void {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('RedisDailyIds.open needs options such as { client, name: "orders" }.');
  }
  const { client, url } = options;
  if ((client === undefined) === (url === undefined)) {
    throw new InvalidArgumentError('RedisDailyIds needs exactly one of `client` (ioredis or node-redis) or `url`.');
  }
  if (client !== undefined && !isIoRedis(client) && !isNodeRedis(client)) {
    throw new InvalidArgumentError('client must be an ioredis Redis/Cluster or a node-redis client.');
  }
  if (url !== undefined && (typeof url !== 'string' || !/^rediss?:\/\//i.test(url))) {
    throw new InvalidArgumentError(`url must look like redis://host:port, got ${JSON.stringify(url)}.`);
  }
  if (typeof options.name !== 'string' || options.name.length === 0) {
    throw new InvalidArgumentError(`RedisDailyIds name must be a non-empty string, got ${JSON.stringify(options.name)}.`);
  }
  if (options.prefix !== undefined && (typeof options.prefix !== 'string' || options.prefix.length === 0)) {
    throw new InvalidArgumentError('prefix must be a non-empty string.');
  }
  integer('digits', options.digits, 1, MAX_DIGITS);
  integer('utcOffsetMinutes', options.utcOffsetMinutes, -1439, 1439);
  integer('keepDays', options.keepDays, 1, 365);
}

function integer(option: string, value: unknown, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new OutOfRangeError(option, `${option} must be a whole number from ${min} to ${max}, got ${inspect(value)}.`);
  }
}
