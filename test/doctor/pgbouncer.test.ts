/**
 * doctor's `postgres.pooler` check through a real PgBouncer (Debian package `pgbouncer`) in front
 * of a real PostgreSQL: transaction mode (with PgBouncer's default reuse of the last server
 * connection, and with server_round_robin on a warm pool) fails in session mode; session mode
 * with its default reset (DISCARD ALL) is ok; session mode without a reset fails; straight to
 * PostgreSQL is ok. doctor stores nothing: no dlock table, no advisory lock left.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { doctor } from '../../src/doctor/index.js';
import { startPgBouncer, type PgBouncer, type StartPgBouncerOptions } from '../support/pgbouncer.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { one } from './findings.js';

let server: PostgresServer;
const poolers: PgBouncer[] = [];
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await Promise.all(poolers.map((p) => p.stop()));
  await server?.stop();
});

async function pooler(opts: StartPgBouncerOptions): Promise<PgBouncer> {
  const p = await startPgBouncer(server, opts);
  poolers.push(p);
  return p;
}

/** Nothing stored by doctor: no dlock table, no advisory lock held. */
async function nothingWritten(): Promise<void> {
  const tables = await server.sql<{ n: string }>("SELECT count(*)::text AS n FROM pg_tables WHERE tablename LIKE 'dlock%'");
  expect(tables[0]?.n).toBe('0');
  const locks = await server.sql<{ n: string }>("SELECT count(*)::text AS n FROM pg_locks WHERE locktype = 'advisory'");
  expect(locks[0]?.n).toBe('0');
}

describe('doctor: postgres.pooler through PgBouncer', () => {
  it('straight to PostgreSQL: ok, no pooler seen', async () => {
    const f = one(await doctor(server.url, { pings: 5 }), 'postgres.pooler');
    expect(f.status).toBe('ok');
    expect(f.evidence).toMatch(/backend pids \d+ and \d+: no transaction pooler seen/);
    await nothingWritten();
  });

  it('pool_mode=transaction: fails in session mode naming the shared backend; ok in table mode', async () => {
    const p = await pooler({ poolMode: 'transaction', poolSize: 2 });
    const f = one(await doctor(p.url, { pings: 5 }), 'postgres.pooler');
    expect(f.status, f.evidence).toBe('fail');
    expect(f.evidence).toMatch(/backend pids [\d, ]+ and [\d, ]+ \(shared\).*a transaction pooler/);
    expect(f.fix).toContain('?mode=table');
    const table = one(await doctor(`${p.url}?mode=table`, { pings: 5 }), 'postgres.pooler');
    expect(table.status).toBe('ok');
    expect(table.evidence).toContain('a transaction pooler, which table mode');
    await nothingWritten();
  });

  it('pool_mode=transaction with server_round_robin on a warm pool (two server connections open): still fails', async () => {
    const p = await pooler({ poolMode: 'transaction', poolSize: 2, settings: { server_round_robin: 1 } });
    // Warm the pool: two overlapping statements make PgBouncer open both server connections.
    const clients = [new pg.Client(p.url), new pg.Client(p.url)];
    try {
      await Promise.all(clients.map((c) => c.connect()));
      const pids = await Promise.all(clients.map(async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, pg_sleep(0.3)')).rows[0]!.pid));
      expect(new Set(pids).size).toBe(2);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    const f = one(await doctor(p.url, { pings: 5 }), 'postgres.pooler');
    expect(f.status, f.evidence).toBe('fail');
    expect(f.evidence).toMatch(/statements of one connection run on other backends/);
  });

  it('pool_mode=session with the default reset (DISCARD ALL): ok, named a session pooler with the reason', async () => {
    const p = await pooler({ poolMode: 'session', poolSize: 2 });
    const f = one(await doctor(p.url, { pings: 5 }), 'postgres.pooler');
    expect(f.status, f.evidence).toBe('ok');
    expect(f.evidence).toMatch(/backend pids \d+ and \d+; a new connection was handed the backend of a closed one, reset .*a session pooler .*frees its locks when it closes/);
    await nothingWritten();
  });

  it('pool_mode=session with server_reset_query empty: fails (a closed client\'s locks would pass to the next)', async () => {
    const p = await pooler({ poolMode: 'session', poolSize: 2, settings: { server_reset_query: '' } });
    const f = one(await doctor(p.url, { pings: 5 }), 'postgres.pooler');
    expect(f.status, f.evidence).toBe('fail');
    expect(f.evidence).toContain('a session pooler that does not reset server connections');
    expect(f.fix).toContain('server_reset_query = DISCARD ALL');
  });
});
