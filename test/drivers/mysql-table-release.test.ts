/**
 * MySQL/MariaDB table mode, the release of a key that had waiters (src/drivers/mysql/table.ts,
 * `release`): on a key whose last release by this driver found waiters, the release sends the
 * full step's first round trip along with the fast path, run only when the fast path misses.
 * What must hold on that path, on a private MariaDB:
 * - a crowded release hands the key to the queued waiter (greater token), again and again;
 * - when the key has no waiter any more, the same release frees it in its fast path, and the
 *   transaction it opened but did not use is ended: the driver's next statements on that
 *   connection (one connection: `connections=1`) are committed and seen by another client;
 * - the answer stays right: a release of a hold that is not ours any more answers false.
 * (Each point fails when the matching part of `release` is removed: the COMMIT, the offset.)
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { createMysqlDriver } from '../../src/drivers/mysql/index.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';

let server: MysqlServer;

beforeAll(async () => {
  server = await startMysql();
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const client = (): LockClient => new LockClient(createMysqlDriver({ url: `${server.url}?mode=table&connections=1` }));

it('crowded releases hand the key over each time; an uncrowded one then frees it and leaves no transaction open', async () => {
  const a = client();
  const b = client();
  const c = client();
  try {
    const key = 'table-release:crowded';
    let last = 0n;
    for (let i = 0; i < 4; i++) {
      const held = await a.acquire(key, { ttlMs: 10_000 });
      expect(held.token).toBeGreaterThan(last);
      const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
      // Queued on the engine (past the 5 ms barging bound): the release hands the key over.
      for (let t = 0; t < 200 && (await c.inspectAll(key)).waiters === 0; t++) await sleep(5);
      await sleep(20);
      expect(await held.release()).toBe(true);
      const got = await waiting;
      expect(got.token).toBeGreaterThan(held.token);
      expect((await c.inspect(key))?.owner).toBe(got.owner);
      last = got.token;
      expect(await got.release()).toBe(true);
    }
    // A hold that is not ours any more, released on the remembered key: false.
    const stale = await a.acquire(key, { ttlMs: 10_000 });
    expect((await c.forceRelease(key)).released).toBe(1);
    expect(await stale.release()).toBe(false);
    // Crowd it once more (remembered again), then release it with nobody waiting: the fast path
    // frees it and ends the unused transaction opened along with it.
    const held = await a.acquire(key, { ttlMs: 10_000 });
    const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
    for (let t = 0; t < 200 && (await c.inspectAll(key)).waiters === 0; t++) await sleep(5);
    await sleep(20);
    expect(await held.release()).toBe(true);
    expect(await (await waiting).release()).toBe(true);
    const alone = await a.acquire(key, { ttlMs: 10_000 });
    expect(await alone.release()).toBe(true);
    expect(await c.inspect(key)).toBeNull();
    // a's one connection runs in autocommit again: a hold it takes now is seen by another client.
    const other = await a.acquire(`${key}:other`, { ttlMs: 10_000 });
    expect((await c.inspect(`${key}:other`))?.owner).toBe(other.owner);
    expect(await c.tryAcquire(`${key}:other`, { ttlMs: 10_000 })).toBeNull();
    expect(await other.release()).toBe(true);
    expect(await c.inspect(`${key}:other`)).toBeNull();
  } finally {
    await Promise.all([a.close(), b.close(), c.close()]);
  }
}, 60_000);
