/**
 * The Redis driver's operator steps on one real node, beyond the conformance suite: list() with
 * keys and prefixes that need escaping (glob characters, a leading `}` the driver escapes), one
 * SCAN batch larger than the page (no key lost or repeated, also when keys go between pages), never
 * KEYS (INFO commandstats), and forceRelease() of readers with a writer queued behind them (handed
 * the key, not stranded), leaving the fence counter alone.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { Redis } from 'ioredis';
import { IoRedisAdapter, type ScanNode } from '../../src/drivers/redis/adapter.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { lockKeyName, lockPattern, scanPage } from '../../src/drivers/redis/scan.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { allPages } from '../support/list-pages.js';
import { startRedis, withRedisClient, type RedisServer } from '../support/redis.js';

let redis: RedisServer;
const closers: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  redis = await startRedis();
}, 30_000);
afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
  await redis?.stop();
});

function client(): LockClient {
  const c = new LockClient(new RedisDriver({ url: redis.url }));
  closers.push(() => c.close());
  return c;
}

describe('redis list() and forceRelease()', () => {
  it('lists keys that need escaping, under prefixes that need escaping, and nothing else', async () => {
    const c = client();
    const tag = randomBytes(3).toString('hex');
    const keys = [`}${tag}`, `\\}${tag}`, `${tag}*x`, `${tag}?[a]`, `${tag}\\y`, `${tag}{z}`, `${tag}}`];
    const leases = await Promise.all(keys.map((k) => c.acquire(k, { ttlMs: 10_000 })));
    const listed = async (prefix: string): Promise<string[]> => (await c.list(prefix)).map((i) => i.key);
    expect(await listed(`}${tag}`)).toEqual([`}${tag}`]);
    expect(await listed(`\\}`)).toEqual([`\\}${tag}`]);
    expect(await listed(`${tag}*`)).toEqual([`${tag}*x`]);
    expect(await listed(`${tag}?[`)).toEqual([`${tag}?[a]`]);
    expect(await listed(`${tag}\\`)).toEqual([`${tag}\\y`]);
    expect(await listed(`${tag}{`)).toEqual([`${tag}{z}`]);
    expect((await listed(tag)).sort()).toEqual([`${tag}*x`, `${tag}?[a]`, `${tag}\\y`, `${tag}{z}`, `${tag}}`].sort());
    // The fence, queue and holder keys beside the lock keys are not listed as locks.
    const all = await listed('');
    for (const k of keys) expect(all.filter((x) => x === k)).toEqual([k]);
    expect(all.some((k) => k.endsWith(':fence') || k.endsWith(':h'))).toBe(false);
    await Promise.all(leases.map((l) => l.release()));
    expect(await listed(tag)).toEqual([]);
  });

  it('pages smaller than one SCAN batch still give every key once', async () => {
    const c = client();
    const tag = `batch-${randomBytes(3).toString('hex')}`;
    const keys = Array.from({ length: 40 }, (_, i) => `${tag}:${i}`);
    const leases = await Promise.all(keys.map((k) => c.acquire(k, { ttlMs: 10_000 })));
    const d = new RedisDriver({ url: redis.url });
    closers.push(() => d.close());
    await withRedisClient(redis.port, (r) => r.config('RESETSTAT'));
    // SCAN COUNT is a hint: with MATCH on a small keyspace one call may return many keys; a page never does.
    const seen = await allPages(d, `${tag}:`, 1);
    expect(seen.sort()).toEqual([...keys].sort());
    expect((await c.list(`${tag}:`)).length).toBe(keys.length);
    // Never a blocking KEYS, not even inside a script (Redis 7 counts a script's calls too).
    const stats = await withRedisClient(redis.port, (r) => r.info('commandstats'));
    expect(stats).toMatch(/^cmdstat_scan:calls=\d+/m);
    expect(stats).not.toMatch(/^cmdstat_keys:/m);
    await expect(d.list(tag, { limit: 5, cursor: 'not a cursor' })).rejects.toMatchObject({ code: 'DLOCK_INVALID_ARGUMENT' });
    await Promise.all(leases.map((l) => l.release()));
  });

  it('a SCAN batch larger than the page is given in parts, and keys released meanwhile lose no other key', async () => {
    const c = client();
    const tag = `wide-${randomBytes(3).toString('hex')}`;
    const keys = Array.from({ length: 30 }, (_, i) => `${tag}:${String(i).padStart(2, '0')}`);
    const leases = new Map(await Promise.all(keys.map(async (k) => [k, await c.acquire(k, { ttlMs: 10_000 })] as const)));
    const io = new Redis(redis.url);
    const adapter = new IoRedisAdapter(io, false);
    closers.push(() => adapter.close(), () => io.quit());
    const [node] = await adapter.scanNodes();
    // The real SCAN, with a COUNT far above the page: one call returns every key of this small keyspace.
    const wide: ScanNode = { address: node!.address, scan: (cursor, match) => node!.scan(cursor, match, 10_000) };
    const first = await scanPage([wide], lockPattern('dlock', `${tag}:`, true), { limit: 4 }, (n) => lockKeyName('dlock', n, true));
    expect(first.keys).toEqual(keys.slice(0, 4));
    expect(first.cursor).toBeDefined();
    // Released between two pages: keys the listing has not reached yet.
    const gone = keys.slice(10, 15);
    for (const k of gone) await leases.get(k)!.release();
    const seen = [...first.keys];
    let cursor = first.cursor;
    while (cursor !== undefined) {
      const page = await scanPage([wide], lockPattern('dlock', `${tag}:`, true), { limit: 4, cursor }, (n) => lockKeyName('dlock', n, true));
      expect(page.keys.length).toBeLessThanOrEqual(4);
      seen.push(...page.keys);
      cursor = page.cursor;
    }
    expect(seen).toEqual(keys.filter((k) => !gone.includes(k)));
    for (const [k, l] of leases) if (!gone.includes(k)) await l.release();
  });

  it('force-releasing readers hands the key to the writer queued behind them; the fence counter is left alone', async () => {
    const [r1, r2, w, admin] = [client(), client(), client(), client()];
    const name = `rw-${randomBytes(3).toString('hex')}`;
    const a = await new ReadWriteLock(r1, name).read.acquire({ ttlMs: 30_000 });
    const b = await new ReadWriteLock(r2, name).read.acquire({ ttlMs: 30_000 });
    const writer = new ReadWriteLock(w, name).write.acquire({ ttlMs: 30_000, waitMs: 20_000 });
    writer.catch(() => undefined); // awaited below
    await sleep(200);
    expect((await admin.inspectAll(name)).waiters).toBe(1);
    const names = new RedisDriver({ url: redis.url });
    const fenceKey = names.keysFor(name).fence;
    await names.close();
    const before = await withRedisClient(redis.port, (r) => r.get(fenceKey));
    const forced = await admin.forceRelease(name);
    expect(forced).toEqual({ released: 2, fence: BigInt(before ?? '0') });
    // Handed over in the same step (the readers' TTL is 30 s, the writer's wait 20 s).
    const lease = await writer;
    expect(lease.token).toBe(forced.fence + 1n);
    expect(await withRedisClient(redis.port, (r) => r.get(fenceKey))).toBe(lease.token.toString());
    expect((await admin.list(name)).map((i) => [i.mode, i.holders.map((h) => h.owner)])).toEqual([['exclusive', [lease.owner]]]);
    expect(await a.release()).toBe(false);
    expect(await b.release()).toBe(false);
    await lease.release();
  });
});
