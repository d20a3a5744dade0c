/**
 * Redis "date prefix + counter" ids on the shared redis-server: dated by the server's clock,
 * strictly increasing within a day, distinct across concurrent clients (ioredis and node-redis
 * connections of their own), a new day restarting above the old one, a clock stepped back keeping
 * the later day, the k-digit overflow, the key's expiry, and bad options.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { IdsExhaustedError, InvalidArgumentError, OutOfRangeError } from '../../src/errors.js';
import { RedisDailyIds, type RedisDailyIdsOptions } from '../../src/ids/daily.js';

const connections: Redis[] = [];
const generators: RedisDailyIds[] = [];

afterAll(async () => {
  await Promise.all(generators.map((g) => g.close()));
  await Promise.all(connections.map((c) => c.quit()));
});

function redis(): Redis {
  const c = new Redis(inject('redisUrl'));
  connections.push(c);
  return c;
}

async function open(options: Partial<RedisDailyIdsOptions> & { name: string }): Promise<RedisDailyIds> {
  const g = await RedisDailyIds.open({ client: redis(), ...options });
  generators.push(g);
  return g;
}

/** The server's date, YYYYMMDD, `offsetMinutes` from UTC. */
async function serverDay(offsetMinutes = 0): Promise<string> {
  const [seconds] = await redis().time();
  return new Date((Number(seconds) + offsetMinutes * 60) * 1000).toISOString().slice(0, 10).replaceAll('-', '');
}

async function errorOf(fn: () => unknown): Promise<Error & { code?: string }> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof Error) return e;
    throw new Error('threw a non-Error');
  }
  throw new Error('expected the call to fail, but it succeeded');
}

const name = (): string => `daily-${randomUUID()}`;

describe('RedisDailyIds', () => {
  it('ids are YYYYMMDD (server clock) x 10^digits + n, strictly increasing from 1', async () => {
    const g = await open({ name: name() });
    const day = await serverDay();
    const ids: bigint[] = [];
    for (let i = 0; i < 200; i++) ids.push(await g.next());
    const after = await serverDay();
    // (A test running across midnight would see the next day: then the first id is of `day`.)
    expect(g.decode(ids[0] as bigint)).toEqual({ day, counter: 1n });
    expect(ids[0]).toBe(BigInt(day) * 10n ** 8n + 1n);
    for (let i = 1; i < ids.length; i++) expect(ids[i] as bigint).toBeGreaterThan(ids[i - 1] as bigint);
    if (day === after) expect(ids.at(-1)).toBe(BigInt(day) * 10n ** 8n + 200n);
    // 16 digits with the default 8: still exact as a JavaScript number.
    expect(Number.isSafeInteger(Number(ids.at(-1)))).toBe(true);
  });

  it('concurrent clients (ioredis and node-redis, separate connections): all distinct, and together gap-free', async () => {
    const shared = name();
    const nodeRedis = createClient({ url: inject('redisUrl') });
    await nodeRedis.connect();
    try {
      const gens = [
        ...(await Promise.all(Array.from({ length: 4 }, () => open({ name: shared })))),
        await RedisDailyIds.open({ client: nodeRedis, name: shared }),
        await RedisDailyIds.open({ url: inject('redisUrl'), name: shared }),
      ];
      const per = await Promise.all(
        gens.map(async (g) => {
          const ids: bigint[] = [];
          for (let i = 0; i < 300; i++) ids.push(i % 3 === 0 ? ((await g.nextBatch(2))[1] as bigint) : await g.next());
          return ids;
        }),
      );
      // Each client's own ids increase, and no id is handed out twice.
      for (const ids of per) for (let i = 1; i < ids.length; i++) expect(ids[i] as bigint).toBeGreaterThan(ids[i - 1] as bigint);
      const all = per.flat();
      expect(new Set(all).size).toBe(all.length);
      // One atomic counter: 6 clients x (200 singles + 100 batches of 2) = 2400 consecutive numbers.
      const counters = all.map((id) => gens[0]?.decode(id).counter ?? 0n);
      const top = counters.reduce((m, c) => (c > m ? c : m), 0n);
      expect(top).toBe(2400n);
      await gens[5]?.close();
    } finally {
      await nodeRedis.quit();
    }
  });

  it('nextBatch: consecutive ids in one round trip', async () => {
    const g = await open({ name: name(), digits: 6 });
    const a = await g.nextBatch(5);
    const b = await g.next();
    expect(a.map((id) => g.decode(id).counter)).toEqual([1n, 2n, 3n, 4n, 5n]);
    expect(g.decode(b).counter).toBe(6n);
  });

  it('overflow of the k digits: IdsExhaustedError, and nothing handed out', async () => {
    const g = await open({ name: name(), digits: 1 });
    expect(await g.nextBatch(9)).toHaveLength(9);
    const e = await errorOf(() => g.next());
    expect(e).toBeInstanceOf(IdsExhaustedError);
    expect(e.code).toBe('DLOCK_IDS_EXHAUSTED');
    expect(e.message).toContain('1-digit counter');
    const h = await open({ name: name(), digits: 2 });
    await h.nextBatch(95);
    expect(await errorOf(() => h.nextBatch(5))).toBeInstanceOf(IdsExhaustedError);
    // The refused batch took nothing: the last 4 are still there.
    expect((await h.nextBatch(4)).map((id) => h.decode(id).counter)).toEqual([96n, 97n, 98n, 99n]);
  });

  it('a new day restarts the counter above the old day; a clock stepped back keeps the later day', async () => {
    const g = await open({ name: name(), digits: 4 });
    const today = await serverDay();
    // Yesterday's state (as if written before midnight): today starts again at 1, above it.
    await redis().hset(g.key, 'day', '20000101', 'n', '9000');
    expect(await g.next()).toBe(BigInt(today) * 10_000n + 1n);
    // A state from a later day than the server's clock (the clock went back): keep counting there.
    await redis().hset(g.key, 'day', '29991231', 'n', '7');
    expect(await g.next()).toBe(29991231n * 10_000n + 8n);
    expect(await g.next()).toBe(29991231n * 10_000n + 9n);
  });

  it('the business day follows utcOffsetMinutes; the counter expires keepDays after its day', async () => {
    const offset = 14 * 60;
    const g = await open({ name: name(), utcOffsetMinutes: offset, keepDays: 3 });
    const id = await g.next();
    expect(g.decode(id).day).toBe(await serverDay(offset));
    const [seconds] = await redis().time();
    const local = Number(seconds) + offset * 60;
    const endOfDay = (Math.floor(local / 86_400) + 1) * 86_400 - offset * 60;
    const expiresAt = Number(await redis().call('EXPIRETIME', g.key));
    expect(expiresAt).toBe(endOfDay + 3 * 86_400);
  });

  it('bad options and arguments: typed errors', async () => {
    const client = redis();
    const bad = (o: object): Promise<Error> => errorOf(() => RedisDailyIds.open(o as RedisDailyIdsOptions));
    expect(await bad({ name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ client, url: inject('redisUrl'), name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ client: {}, name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ url: 'http://x', name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ client, name: '' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ client, name: 'x', prefix: '' })).toBeInstanceOf(InvalidArgumentError);
    for (const digits of [0, 12, 1.5, Number.NaN, '8']) {
      const e = await bad({ client, name: 'x', digits });
      expect(e).toBeInstanceOf(OutOfRangeError);
      expect((e as OutOfRangeError).option).toBe('digits');
    }
    expect(await bad({ client, name: 'x', utcOffsetMinutes: 1440 })).toBeInstanceOf(OutOfRangeError);
    expect(await bad({ client, name: 'x', keepDays: 0 })).toBeInstanceOf(OutOfRangeError);
    const g = await open({ name: name() });
    for (const n of [0, -1, 2.5, 1_000_001]) expect(await errorOf(() => g.nextBatch(n))).toBeInstanceOf(OutOfRangeError);
    expect(await errorOf(() => g.decode(0n))).toBeInstanceOf(InvalidArgumentError);
  });
});
