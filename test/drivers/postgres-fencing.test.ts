/**
 * Fencing on PostgreSQL (the paused-holder cases, test/support/paused-holder-cases.ts): a holder
 * paused (SIGSTOP) past its TTL must not overwrite or repeat the newer holder's update. With
 * fencedRead + fencedUpdate no increment is lost and the stale write is refused; the control run
 * (plain SELECT, fenced write) loses one.
 * - Table mode: the lease row expires during the pause and others go on (long pause only).
 * - Session mode: the server keeps a paused holder's advisory lock as long as its connection lives.
 *   Short pause: resumed past its TTL, the holder's core gives the lock back, and the next holder
 *   reads before the stale write. Long pause: an administrator terminates the paused holder's
 *   session (pg_terminate_backend), the lock moves on during the pause.
 * Also fencedRead's and the function form of fencedUpdate's own contract.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fencedRead, fencedUpdate } from '../../src/drivers/postgres/index.js';
import { describePausedHolder } from '../support/paused-holder-cases.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';

let server: PostgresServer;

beforeAll(async () => {
  server = await startPostgres();
  await server.sql('CREATE TABLE fence_res (id text PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0)');
});
afterAll(async () => {
  await server?.stop();
});

const prepare = async (id: string): Promise<void> => {
  await server.sql('INSERT INTO fence_res (id, count) VALUES ($1, 0)', [id]);
};

describePausedHolder({ name: 'postgres table mode', url: () => `${server.url}?mode=table`, counter: 'postgres', ttlMs: 600, longPauseMs: 900, longReason: 'expired', prepare, timeoutMs: 90_000 });

describePausedHolder({
  name: 'postgres session mode',
  url: () => `${server.url}?mode=session`,
  counter: 'postgres',
  ttlMs: 600,
  shortPauseMs: 900,
  longPauseMs: 900,
  prepare,
  whileLongPaused: async ({ holding, pauseOver }) => {
    await pauseOver;
    await server.sql('SELECT pg_terminate_backend($1)', [holding.backendPid]);
  },
  timeoutMs: 90_000,
});

describe('fencedRead and fencedUpdate', () => {
  let db: pg.Client;
  beforeAll(async () => {
    db = new pg.Client({ connectionString: server.url });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
  });
  const row = async (fence = 0): Promise<string> => {
    const id = `r-${Math.random().toString(16).slice(2)}`;
    await db.query('INSERT INTO fence_res (id, count, fence) VALUES ($1, 10, $2)', [id, fence]);
    return id;
  };
  const fenceOf = async (id: string): Promise<string> => (await db.query<{ fence: string }>('SELECT fence::text FROM fence_res WHERE id = $1', [id])).rows[0]!.fence;

  it('fencedRead raises the fence to the token, so a lower token can no longer write', async () => {
    const id = await row(3);
    const rows = await fencedRead(db, { table: 'fence_res', where: { id }, token: 7n });
    expect(rows).toEqual([{ id, count: 10, fence: '7' }]);
    await expect(fencedUpdate(db, { table: 'fence_res', where: { id }, set: { count: 11 }, token: 5n })).rejects.toMatchObject({
      code: 'DLOCK_STALE_TOKEN',
      operation: 'write',
      highest: 7n,
    });
    expect(await fencedUpdate(db, { table: 'fence_res', where: { id }, set: { count: 11 }, token: 7n })).toBe(1);
  });

  it('a read with a lower token than one that has read or written is refused, and the fence stays', async () => {
    const id = await row(9);
    await expect(fencedRead(db, { table: 'fence_res', where: { id }, token: 8n })).rejects.toMatchObject({
      code: 'DLOCK_STALE_TOKEN',
      operation: 'read',
      token: 8n,
      highest: 9n,
      message: expect.stringMatching(/^Read of "fence_res"/) as unknown,
    });
    expect(await fenceOf(id)).toBe('9');
    expect(await fencedRead(db, { table: 'fence_res', where: { id: 'none' }, token: 8n })).toEqual([]);
  });

  it('fencedUpdate with a function of the row: a fenced read-modify-write', async () => {
    const id = await row(2);
    expect(await fencedUpdate(db, { table: 'fence_res', where: { id }, token: 4n, set: (r) => ({ count: Number(r.count) + 1 }) })).toBe(1);
    expect((await db.query('SELECT count, fence::text FROM fence_res WHERE id = $1', [id])).rows[0]).toEqual({ count: 11, fence: '4' });
    // An older token is refused at its read: the function is not even called.
    let called = false;
    const stale = fencedUpdate(db, { table: 'fence_res', where: { id }, token: 3n, set: () => ((called = true), { count: 0 }) });
    await expect(stale).rejects.toMatchObject({ code: 'DLOCK_STALE_TOKEN', operation: 'read' });
    expect(called).toBe(false);
    expect(await fencedUpdate(db, { table: 'fence_res', where: { id: 'none' }, token: 5n, set: () => ({ count: 0 }) })).toBe(0);
  });
});
