/**
 * doctor() on real PostgreSQL and MariaDB servers started with good and bad settings. doctor
 * writes nothing: no dlock table exists afterwards.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { doctor } from '../../src/doctor/index.js';
import { startDelayProxy } from '../support/delay-proxy.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { one } from './findings.js';

const servers: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe('doctor: PostgreSQL', () => {
  let bad: PostgresServer;
  let good: PostgresServer;
  it('idle_session_timeout and statement_timeout set: both warn; nothing is created', async () => {
    bad = await startPostgres({ settings: { idle_session_timeout: '2s', statement_timeout: '3s' } });
    servers.push(bad);
    const r = await doctor(bad.url, { pings: 10 });
    expect(r.engine).toBe('postgres');
    const idle = one(r, 'postgres.idle-session-timeout');
    expect(idle.status).toBe('warn');
    expect(idle.evidence).toMatch(/idle_session_timeout 2000 ms.*advisory locks/);
    expect(one(r, 'postgres.statement-timeout').status).toBe('warn');
    expect(one(r, 'postgres.statement-timeout').evidence).toMatch(/3000 ms/);
    const tables = await bad.sql<{ n: string }>("SELECT count(*)::text AS n FROM pg_tables WHERE tablename LIKE 'dlock%'");
    expect(tables[0]?.n).toBe('0');
  });

  it('defaults: no pooler, the primary, idle timeouts off, clock and round trip ok', async () => {
    good = await startPostgres();
    servers.push(good);
    const r = await doctor(good.url, { pings: 20 });
    for (const check of ['postgres.pooler', 'postgres.standby', 'postgres.idle-session-timeout', 'postgres.statement-timeout', 'clock', 'rtt']) {
      expect(one(r, check).status, check).toBe('ok');
    }
    expect(one(r, 'postgres.pooler').evidence).toMatch(/two connections, 5 statements each in turn then 5 each back to back: backend pids \d+ and \d+: no transaction pooler seen/);
    expect(one(r, 'rtt').evidence).toMatch(/^20 SELECT 1 statements/);
  });

  it('something between the client and the server (a TCP proxy on another port): a warning in session mode, ok in table mode', async () => {
    const proxy = await startDelayProxy(good.port, { delayMs: 0 });
    try {
      const url = `postgres://postgres@127.0.0.1:${proxy.port}/postgres`;
      const session = one(await doctor(url, { pings: 5 }), 'postgres.pooler');
      expect(session.status).toBe('warn');
      expect(session.evidence).toContain(`the server listens on port ${good.port} and the URL names ${proxy.port}`);
      expect(one(await doctor(`${url}?mode=table`, { pings: 5 }), 'postgres.pooler').status).toBe('ok');
    } finally {
      await proxy.close();
    }
  });
});

describe('doctor: MariaDB', () => {
  let bad: MysqlServer;
  let good: MysqlServer;
  it('wait_timeout=5 warns, with the value and the fix; lock_wait_timeout=2 warns', async () => {
    bad = await startMysql({ args: ['--wait-timeout=5', '--lock-wait-timeout=2'] });
    servers.push(bad);
    const r = await doctor(bad.url, { pings: 10 });
    expect(r.engine).toBe('mysql');
    const wait = one(r, 'mysql.wait-timeout');
    expect(wait.status).toBe('warn');
    expect(wait.evidence).toMatch(/wait_timeout 5 s/);
    expect(wait.fix).toMatch(/SET GLOBAL wait_timeout/);
    expect(one(r, 'mysql.lock-wait-timeout').status).toBe('warn');
    expect(one(r, 'mysql.read-only').status).toBe('ok');
    const tables = (await bad.sql("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'dlock'")) as { n: number }[];
    expect(Number(tables[0]?.n)).toBe(0);
  });

  it('defaults are ok; read_only ON fails', async () => {
    good = await startMysql();
    servers.push(good);
    const r = await doctor(good.url.replace(/^mysql:/, 'mariadb:'), { pings: 20 });
    for (const check of ['mysql.wait-timeout', 'mysql.lock-wait-timeout', 'mysql.read-only', 'clock', 'rtt']) {
      expect(one(r, check).status, check).toBe('ok');
    }
    await good.sql('SET GLOBAL read_only = 1');
    expect(one(await doctor(good.url, { pings: 5 }), 'mysql.read-only').status).toBe('fail');
  });
});
