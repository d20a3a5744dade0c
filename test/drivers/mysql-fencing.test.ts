/**
 * Fencing on MySQL/MariaDB (the paused-holder cases, test/support/paused-holder-cases.ts): a holder
 * paused (SIGSTOP) past its TTL must not overwrite or repeat the newer holder's update. With
 * FencedMysqlTable's fenced reads no increment is lost and the stale write is refused; the control
 * run (peek(), fenced write) loses one.
 * - Table mode: the row's TTL runs out on the server's clock during the pause (long pause only).
 * - Session mode: the driver sets wait_timeout to the TTL rounded up to whole seconds (1100 ms ->
 *   2 s). Short pause (1200 ms): the server keeps the silent connection and its GET_LOCK; resumed,
 *   the holder's core gives the lock back. Long pause: the server drops the connection, the lock
 *   moves on during the pause.
 * Also FencedMysqlTable's own contract: read-and-advance, refused reads, peek().
 */
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedMysqlTable } from '../../src/drivers/mysql/index.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { describePausedHolder } from '../support/paused-holder-cases.js';

let server: MysqlServer;

beforeAll(async () => {
  server = await startMysql();
  await server.sql('CREATE TABLE dlock.fence_res (id VARCHAR(64) PRIMARY KEY, count INT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)');
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const prepare = async (id: string): Promise<void> => {
  await server.sql('INSERT INTO dlock.fence_res (id, count) VALUES (?, 0)', [id]);
};

describePausedHolder({ name: 'mysql table mode', url: () => `${server.url}?mode=table`, counter: 'mysql', ttlMs: 600, longPauseMs: 900, longReason: 'expired', prepare });
describePausedHolder({ name: 'mysql session mode', url: () => `${server.url}?mode=session`, counter: 'mysql', ttlMs: 1100, shortPauseMs: 1200, longPauseMs: 1200, prepare });

describe('FencedMysqlTable', () => {
  let pool: mysql.Pool;
  beforeAll(() => {
    pool = mysql.createPool({ uri: server.url, connectionLimit: 2, supportBigNumbers: true, bigNumberStrings: true });
  });
  afterAll(async () => {
    await pool?.end();
  });
  const row = async (fence = 0): Promise<FencedMysqlTable> => {
    const id = `r-${Math.random().toString(16).slice(2)}`;
    await pool.query('INSERT INTO fence_res (id, count, fence) VALUES (?, 10, ?)', [id, fence]);
    return new FencedMysqlTable(pool, { table: 'fence_res', where: { id } });
  };

  it('read(token) raises the fence, so a lower token can no longer write', async () => {
    const r = await row(3);
    expect(await r.read(7n)).toMatchObject({ count: 10, fence: '7' });
    await expect(r.write(5n, { count: 11 })).rejects.toMatchObject({ code: 'DLOCK_STALE_TOKEN', operation: 'write', highest: 7n });
    await r.write(7n, { count: 11 });
    // The same token reads again (one holder, several steps).
    expect(await r.read(7n)).toMatchObject({ count: 11, fence: '7' });
  });

  it('a read with a lower token than one that has read or written is refused; peek() moves nothing', async () => {
    const r = await row(9);
    await expect(r.read(8n)).rejects.toMatchObject({ code: 'DLOCK_STALE_TOKEN', operation: 'read', token: 8n, highest: 9n, message: expect.stringMatching(/^Read of/) as unknown });
    expect(await r.highest()).toBe(9n);
    expect(await r.peek()).toMatchObject({ count: 10, fence: '9' });
    expect(await r.highest()).toBe(9n);
    await expect((r.read as unknown as () => Promise<unknown>)()).rejects.toMatchObject({ code: 'DLOCK_INVALID_ARGUMENT', message: /peek\(\)/ });
  });
});
