/**
 * A Redis URL naming a database the server does not have (issue 10: `redis://host:port/99` on a
 * server with 16 databases silently used db 0, because ioredis only emits the failed `SELECT` as
 * an 'error' event and goes on in db 0). Now: `connect()` rejects with `OutOfRangeError`
 * (option `db`, says what to do), every lock operation rejects with it, and nothing is ever
 * written to db 0. On real redis-servers (default `databases 16`): a single node through a URL
 * and through a caller's ioredis client, Redlock, and Sentinel.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockClient } from '../../src/core/client.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { OutOfRangeError, UnavailableError } from '../../src/errors.js';
import { startRedis, withRedisClient, type RedisServer } from '../support/redis.js';
import { startRedisSentinel, type RedisSentinelSetup } from '../support/redis-sentinel.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';

let redis: RedisServer;
let redlock: RedlockNodes;
let sentinel: RedisSentinelSetup;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  [redis, redlock, sentinel] = await Promise.all([startRedis(), startRedlock({ nodes: 3 }), startRedisSentinel({ replicas: 0, sentinels: 1 })]);
}, 120_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
  await Promise.all([redis?.stop(), redlock?.stop(), sentinel?.stop()]);
});

function track(c: LockClient): LockClient {
  closers.push(() => c.close());
  return c;
}

/** Keys in `db` of the server on `port`. */
function keysIn(port: number, db: number): Promise<number> {
  return withRedisClient(port, async (c) => {
    await c.select(db);
    return c.dbsize();
  });
}

/** The db error, as thrown or as the cause of an UnavailableError after a wait. */
function dbErrorOf(e: unknown): OutOfRangeError | undefined {
  if (e instanceof OutOfRangeError && e.option === 'db') return e;
  if (e instanceof UnavailableError) return dbErrorOf(e.cause);
  return undefined;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('it resolved');
}

describe('redis://host:port/<db> with a db the server does not have', () => {
  it('connect() rejects with OutOfRangeError (option db) that says what to do', async () => {
    const e = await rejection(connect(`${redis.url}/99`).then(track));
    expect(e).toBeInstanceOf(OutOfRangeError);
    expect((e as OutOfRangeError).code).toBe('DLOCK_OUT_OF_RANGE');
    expect((e as OutOfRangeError).option).toBe('db');
    expect((e as Error).message).toMatch(/database 99/);
    expect((e as Error).message).toMatch(/`databases`/);
    expect(((e as Error).cause as Error).message).toMatch(/DB index is out of range/);
    expect(await keysIn(redis.port, 0)).toBe(0);
  });

  it('a driver on the URL: tryAcquire and acquire reject with it, and nothing lands in db 0', async () => {
    const locks = track(new LockClient(new RedisDriver({ url: `${redis.url}/99` })));
    const tried = await rejection(locks.tryAcquire('k'));
    expect(dbErrorOf(tried), String(tried)).toBeDefined();
    const waited = await rejection(locks.acquire('k', { waitMs: 500 }));
    expect(dbErrorOf(waited), String(waited)).toBeDefined();
    expect(await keysIn(redis.port, 0)).toBe(0);
  });

  it("a caller's ioredis client on that db: the same", async () => {
    const client = new Redis(`${redis.url}/99`);
    client.on('error', () => undefined);
    closers.push(() => Promise.resolve(client.disconnect()));
    const locks = track(new LockClient(new RedisDriver({ client })));
    expect(dbErrorOf(await rejection(locks.tryAcquire('k')))).toBeDefined();
    expect(await keysIn(redis.port, 0)).toBe(0);
  });

  it('control: a db the server has (3) is used, and db 0 is left alone', async () => {
    const before = await keysIn(redis.port, 0);
    const locks = track(await connect(`${redis.url}/3`));
    const lease = await locks.acquire('k3');
    expect(await keysIn(redis.port, 3)).toBeGreaterThan(0);
    expect(await keysIn(redis.port, 0)).toBe(before);
    expect(await lease.release()).toBe(true);
  });
});

describe('redlock://…/<db> and redis+sentinel://…/<name>/<db> with a db the servers do not have', () => {
  it('redlock: connect() rejects with OutOfRangeError (db); a driver rejects every operation with it; no node gets a key', async () => {
    const e = await rejection(connect(`${redlock.url}/99`).then(track));
    expect(dbErrorOf(e), String(e)).toBeDefined();
    const locks = track(new LockClient(new RedlockDriver({ url: `${redlock.url}/99` })));
    const tried = await rejection(locks.tryAcquire('k'));
    expect(dbErrorOf(tried), String(tried)).toBeDefined();
    expect(dbErrorOf(await rejection(locks.tryAcquire('k')))).toBeDefined();
    for (const n of redlock.nodes) expect(await keysIn(n.port, 0)).toBe(0);
  });

  it('sentinel: connect() rejects with OutOfRangeError (db); nothing lands in the master db 0', async () => {
    const e = await rejection(connect(`${sentinel.url}/99`).then(track));
    expect(dbErrorOf(e), String(e)).toBeDefined();
    expect(await keysIn(sentinel.master.port, 0)).toBe(0);
  });
});
