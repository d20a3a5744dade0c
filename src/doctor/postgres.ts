/**
 * doctor checks for PostgreSQL: a transaction pooler in the way (session advisory locks are not
 * safe through one), the idle and statement timeouts, keepalives, a read-only standby, the clock
 * (`clock_timestamp()`) and the round trip (`SELECT 1`). Reads only: nothing is stored (the one
 * setting made is session-local, gone when its connection closes).
 *
 * Pooler detection, and its limit: two connections of this client run statements in turn, then
 * back to back, outside any transaction, and report their `pg_backend_pid()`. Straight to
 * PostgreSQL (or through a session pooler) each connection is one backend for its whole life, so
 * the two never share a pid and neither changes. A transaction pooler (PgBouncer
 * `pool_mode=transaction`, RDS Proxy...) hands each statement to a free server connection: with
 * PgBouncer's default reuse of the last one, both connections land on the same backend; with
 * `server_round_robin` or a busy pool a connection's pid changes; either proves it. Then the
 * second connection marks its backend with a session-local setting and closes, and a new
 * connection looks: straight to PostgreSQL it gets a new backend; through a session pooler it can
 * be handed the closed one's, and the setting tells whether the pooler reset it (PgBouncer's
 * `server_reset_query = DISCARD ALL`, which also frees advisory locks) or not (a dead holder's
 * locks would pass to the next client). A pooler that pins each client connection to one backend
 * and hands none over while we look is not seen; a server port (`inet_server_port()`) other than
 * the URL's says something sits in between (a pooler, a proxy, a port forward): a warning.
 */
import type pg from 'pg';
import { parsePostgresUrl, pgModule } from '../drivers/postgres/connection.js';
import { redactUrl } from '../drivers/redis/url.js';
import { clockOffset, fail, ok, roundTrip, unreachable, warn, type DoctorFinding, type ResolvedDoctorOptions } from './report.js';

const SETTINGS = ['idle_session_timeout', 'idle_in_transaction_session_timeout', 'statement_timeout', 'lock_timeout', 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count'];
/** Statements per connection in the pooler probe. */
const PIDS = 5;

/** What a new connection found on the backend of a closed one; undefined: it got another backend (no pooler seen). */
type Handoff = 'kept' | 'reset';

/**
 * Does a pooler hand the backend of a closed connection to the next one, and reset it first? Sets
 * a session-local setting on `conn` (`set_config(..., false)`: gone with the session, nothing
 * stored), closes it, opens another connection: straight to PostgreSQL that one gets a new backend.
 */
async function probeHandoff(conn: pg.Client, backend: number, open: () => pg.Client): Promise<Handoff | undefined> {
  const mark = `p${process.pid}x${Date.now()}`;
  // One statement: the mark and the pid are of the same backend even through a transaction pooler.
  const [set] = (await conn.query<{ pid: number }>("SELECT pg_backend_pid() AS pid, set_config('dlock.doctor_probe', $1, false)", [mark])).rows;
  await conn.end();
  if (set?.pid !== backend) return undefined;
  const next = open();
  try {
    await next.connect();
    const [row] = (await next.query<{ pid: number; mark: string | null }>("SELECT pg_backend_pid() AS pid, current_setting('dlock.doctor_probe', true) AS mark")).rows;
    if (row?.pid !== backend) return undefined;
    return row.mark === mark ? 'kept' : 'reset';
  } finally {
    await next.end().catch(() => undefined);
  }
}

/** A pg_settings value in ms (unit ms, s or min), or the raw number for unitless settings. */
function inMs(setting: string, unit: string | null): number {
  const n = Number(setting);
  if (unit === 's') return n * 1000;
  if (unit === 'min') return n * 60_000;
  return n;
}

/** Every PostgreSQL check for `url`. */
export async function checkPostgres(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parsePostgresUrl(url);
  const where = `PostgreSQL at ${redactUrl(url).replace(/\?.*$/, '')}`;
  const open = (): pg.Client => {
    const c: pg.Client = new (pgModule().Client)({ connectionString: parsed.connection, connectionTimeoutMillis: opts.timeoutMs, query_timeout: opts.timeoutMs });
    c.on('error', () => undefined);
    return c;
  };
  const client = open();
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => undefined);
    throw unreachable(where, e);
  }
  try {
    const q = async <R extends pg.QueryResultRow>(text: string): Promise<R[]> => (await client.query<R>(text)).rows;
    const findings: DoctorFinding[] = [];
    const session = parsed.mode === 'session';

    const pid = async (c: pg.Client): Promise<number> => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? -1;
    const other = open();
    const pidsA = new Set<number>();
    const pidsB = new Set<number>();
    let handoff: Handoff | undefined;
    try {
      await other.connect();
      for (let i = 0; i < PIDS; i++) {
        pidsA.add(await pid(client));
        pidsB.add(await pid(other));
      }
      // Back to back: a round-robin pool (PgBouncer server_round_robin=1) with two free server
      // connections gives alternating clients the same one each time, and one client the next one.
      for (let i = 0; i < PIDS; i++) pidsA.add(await pid(client));
      for (let i = 0; i < PIDS; i++) pidsB.add(await pid(other));
      if (![...pidsA].some((p) => pidsB.has(p)) && pidsB.size === 1) handoff = await probeHandoff(other, [...pidsB][0]!, open);
    } finally {
      await other.end().catch(() => undefined);
    }
    const shared = [...pidsA].some((p) => pidsB.has(p));
    const [info] = await q<{ port: number | null; standby: boolean; version: string }>("SELECT inet_server_port() AS port, pg_is_in_recovery() AS standby, current_setting('server_version') AS version");
    const urlPort = Number(new URL(parsed.connection).port || '5432');
    const pidText = `two connections, ${PIDS} statements each in turn then ${PIDS} each back to back: backend pids ${[...pidsA].join(', ')} and ${[...pidsB].join(', ')}${shared ? ' (shared)' : ''}`;
    if (shared || pidsA.size > 1 || pidsB.size > 1) {
      findings.push(
        session
          ? fail('postgres.pooler', `${pidText}: statements of one connection run on other backends (a transaction pooler), so a session advisory lock stays with a backend this connection no longer uses, and another client can be handed that backend and its locks`, 'Use ?mode=table (lease rows, safe through poolers), or connect to PostgreSQL directly / through a session-mode pool.')
          : ok('postgres.pooler', `${pidText}: a transaction pooler, which table mode (lease rows) handles`),
      );
    } else if (handoff === 'kept') {
      findings.push(
        session
          ? fail('postgres.pooler', `${pidText}; a new connection was handed the backend of a closed one with its session state (a setting made on it) still there: a session pooler that does not reset server connections, so the advisory locks of a client that went away pass to the next client`, 'Set PgBouncer server_reset_query = DISCARD ALL (its default; it runs pg_advisory_unlock_all()), or use ?mode=table.')
          : ok('postgres.pooler', `${pidText}; a session pooler that hands backends on without reset, which table mode (lease rows) handles`),
      );
    } else if (handoff === 'reset') {
      findings.push(
        ok(
          'postgres.pooler',
          `${pidText}; a new connection was handed the backend of a closed one, reset (a setting made on it was gone): a session pooler (PgBouncer pool_mode=session), safe for session advisory locks: each connection keeps its backend while it lives, and the reset (DISCARD ALL) frees its locks when it closes`,
        ),
      );
    } else if (info?.port != null && info.port !== urlPort) {
      findings.push(
        session
          ? warn('postgres.pooler', `${pidText}, but the server listens on port ${info.port} and the URL names ${urlPort}: a pooler, proxy or port forward sits in between (a transaction pooler that pins each connection to one backend looks like this too)`, 'If it is a transaction pooler (PgBouncer pool_mode=transaction, RDS Proxy), use ?mode=table or connect directly.')
          : ok('postgres.pooler', `${pidText}; server port ${info.port}, URL port ${urlPort}: something sits in between, which table mode handles`),
      );
    } else {
      findings.push(ok('postgres.pooler', `${pidText}: no transaction pooler seen`));
    }

    findings.push(
      info?.standby
        ? fail('postgres.standby', `PostgreSQL ${info.version}: pg_is_in_recovery() is true, a read-only standby: dlock's writes fail and its locks would not be seen by clients of the primary`, 'Point the URL at the primary.')
        : ok('postgres.standby', `PostgreSQL ${info?.version ?? '?'}: the primary (not in recovery)`),
    );

    const rows = await q<{ name: string; setting: string; unit: string | null }>(`SELECT name, setting, unit FROM pg_settings WHERE name IN (${SETTINGS.map((s) => `'${s}'`).join(', ')})`);
    const setting = new Map(rows.map((r) => [r.name, inMs(r.setting, r.unit)]));
    const idle = setting.get('idle_session_timeout');
    if (idle === undefined) findings.push(ok('postgres.idle-session-timeout', `idle_session_timeout does not exist on PostgreSQL ${info?.version ?? '?'} (before 14): no idle session is closed`));
    else if (idle === 0) findings.push(ok('postgres.idle-session-timeout', 'idle_session_timeout 0 (off): idle connections stay open'));
    else {
      findings.push(
        warn(
          'postgres.idle-session-timeout',
          `idle_session_timeout ${idle} ms: ${session ? 'a connection that holds locks and is idle that long is closed by the server, which frees its advisory locks: the lease is lost' : 'idle connections are closed by the server and reopened by the driver (table mode keeps locks in rows, so none is lost)'}`,
          'ALTER ROLE <lock user> SET idle_session_timeout = 0 (or raise it well above the longest hold).',
        ),
      );
    }
    const idleTx = setting.get('idle_in_transaction_session_timeout') ?? 0;
    findings.push(ok('postgres.idle-in-transaction-timeout', `idle_in_transaction_session_timeout ${idleTx === 0 ? '0 (off)' : `${idleTx} ms`}: dlock keeps no transaction open between statements, so it does not apply to its connections`));
    const stmt = setting.get('statement_timeout') ?? 0;
    findings.push(
      stmt === 0
        ? ok('postgres.statement-timeout', 'statement_timeout 0 (off): a blocking wait lasts until its own lock_timeout')
        : warn('postgres.statement-timeout', `statement_timeout ${stmt} ms: ${session ? 'a server-side wait for a lock' : 'a statement'} longer than that is cancelled by the server; waits longer than ${stmt} ms end early and are retried with backoff`, 'ALTER ROLE <lock user> SET statement_timeout = 0, or keep waitMs below it.'),
    );
    const ka = ['tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count'].map((n) => `${n} ${setting.get(n) ?? '?'}${n === 'tcp_keepalives_count' ? '' : ' ms'}`);
    findings.push(ok('postgres.keepalives', `${ka.join(', ')} (0: the OS default); the driver also enables keepalives on its side, so a dead client's locks are freed once TCP gives up`));

    findings.push(await clockOffset(async () => Number((await q<{ ms: string }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::text AS ms'))[0]?.ms)));
    findings.push(await roundTrip('SELECT 1 statements', () => client.query('SELECT 1'), opts));
    return findings;
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) throw e;
    throw unreachable(where, e);
  } finally {
    await client.end().catch(() => undefined);
  }
}
