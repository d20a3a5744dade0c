/**
 * Fencing on MySQL/MariaDB (the paused-holder scenario, test/support/paused-holder.ts): a holder
 * paused (SIGSTOP) past its TTL must not overwrite the newer holder's data. With FencedMysqlTable
 * (`UPDATE ... WHERE fence <= token`) no increment is lost and the stale write is rejected; the
 * control run with a plain UPDATE shows the lost update. Session mode frees the paused holder's
 * GET_LOCK when the server drops its silent connection (wait_timeout = the TTL rounded up to
 * whole seconds), so it pauses longer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { runPausedHolder } from '../support/paused-holder.js';

let server: MysqlServer;

beforeAll(async () => {
  server = await startMysql();
  await server.sql('CREATE TABLE dlock.fence_res (id VARCHAR(64) PRIMARY KEY, count INT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)');
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

describe.each([
  // Table mode: the row's TTL runs out on the server's clock during a 1.5 x TTL pause.
  { lockMode: 'table' as const, ttlMs: 600, pauseMs: 900 },
  // Session mode: the server drops the silent connection after wait_timeout (1 s here).
  { lockMode: 'session' as const, ttlMs: 1000, pauseMs: 2500 },
])('paused holder and fencing (mysql $lockMode mode)', ({ lockMode, ttlMs, pauseMs }) => {
  const run = (mode: 'fenced' | 'plain') =>
    runPausedHolder({
      counter: 'mysql',
      url: `${server.url}?mode=${lockMode}`,
      mode,
      ttlMs,
      pauseMs,
      prepare: async (id) => {
        await server.sql('INSERT INTO dlock.fence_res (id, count) VALUES (?, 0)', [id]);
      },
    });

  it('with FencedMysqlTable: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, accepted, rejected, pausedMs } = await run('fenced');
    expect(pausedMs).toBeGreaterThanOrEqual(ttlMs);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    const paused = done[0]!.paused!;
    expect(paused.abortedBeforeWrite).toBe(true);
    expect(paused.reason).toBe('expired');
  }, 60_000);

  it('control run with a plain UPDATE: the same pause loses updates (the checker can see the failure)', async () => {
    const { final, done, accepted } = await run('plain');
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 60_000);
});
