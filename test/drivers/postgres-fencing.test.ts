/**
 * Fencing on PostgreSQL (the paused-holder scenario, test/support/paused-holder.ts): a holder
 * paused (SIGSTOP) past its TTL must not overwrite the newer holder's data. Table mode: the lease
 * row expires, others go on, the paused holder's fenced write is refused; the control run with a
 * plain UPDATE loses increments (the checker can see it). Session mode: the paused holder keeps
 * its session, so the server keeps its lock and everyone waits (exclusion holds); an
 * administrator then terminates the paused holder's session (pg_terminate_backend): the lock
 * moves on, and the paused holder's late write is refused.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPausedHolder, type PausedHolderResult } from '../support/paused-holder.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';

const TTL_MS = 600;
let server: PostgresServer;

beforeAll(async () => {
  server = await startPostgres();
  await server.sql('CREATE TABLE fence_res (id text PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0)');
});
afterAll(async () => {
  await server?.stop();
});

async function run(lockMode: 'table' | 'session', mode: 'fenced' | 'plain'): Promise<PausedHolderResult & { othersDuringPause: number }> {
  let othersDuringPause = -1;
  const result = await runPausedHolder({
    counter: 'postgres',
    url: `${server.url}?mode=${lockMode}`,
    mode,
    ttlMs: TTL_MS,
    prepare: async (id) => {
      await server.sql('INSERT INTO fence_res (id, count) VALUES ($1, 0)', [id]);
    },
    whilePaused: async ({ holding, counter, pauseOver }) => {
      if (lockMode !== 'session') return;
      const before = await counter.read();
      await pauseOver;
      // The server kept the paused holder's lock: nobody else wrote meanwhile.
      othersDuringPause = (await counter.read()) - before;
      await server.sql('SELECT pg_terminate_backend($1)', [holding.backendPid]);
      // Let the others take the lock and write before the paused holder resumes.
      await delay(300);
    },
  });
  return { ...result, othersDuringPause };
}

describe('paused holder and fencing (postgres, lease-table mode)', () => {
  it('with fencedUpdate: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, accepted, rejected, pausedMs } = await run('table', 'fenced');
    expect(pausedMs).toBeGreaterThanOrEqual(TTL_MS);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    expect(done[0]!.paused).toMatchObject({ abortedBeforeWrite: true, reason: 'expired' });
  }, 90_000);

  it('control run with a plain UPDATE: the same pause loses updates', async () => {
    const { final, done, accepted } = await run('table', 'plain');
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 90_000);
});

describe('paused holder and fencing (postgres, session mode)', () => {
  it('the server keeps a paused holder’s lock; once an admin terminates its session, its late fenced write is rejected', async () => {
    const { final, done, accepted, rejected, othersDuringPause } = await run('session', 'fenced');
    expect(othersDuringPause).toBe(0);
    expect(rejected).toBe(1);
    expect(final).toBe(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 90_000);

  it('control run with a plain UPDATE: the terminated holder’s late write loses updates', async () => {
    const { final, accepted, othersDuringPause } = await run('session', 'plain');
    expect(othersDuringPause).toBe(0);
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
  }, 90_000);
});
