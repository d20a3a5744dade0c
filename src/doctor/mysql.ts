/**
 * doctor checks for MySQL and MariaDB: the idle timeouts (`wait_timeout`, `interactive_timeout`),
 * the lock waits (`lock_wait_timeout`, `innodb_lock_wait_timeout`), `read_only`, the clock
 * (`UNIX_TIMESTAMP(NOW(6))`) and the round trip (`SELECT 1`). Reads only; one connection.
 */
import type { Connection } from 'mysql2';
import { mysql2 } from '../drivers/mysql/connection.js';
import { resolveOptions } from '../drivers/mysql/options.js';
import { clockOffset, fail, ok, roundTrip, unreachable, warn, within, type DoctorFinding, type ResolvedDoctorOptions } from './report.js';

/** Below this many seconds, wait_timeout closes the driver's idle connections often. */
const WAIT_TIMEOUT_WARN_S = 60;
/** Below this many seconds, a lock wait can end before a busy statement is done. */
const LOCK_WAIT_WARN_S = 5;

const VARIABLES = ['version', 'wait_timeout', 'interactive_timeout', 'lock_wait_timeout', 'innodb_lock_wait_timeout', 'read_only'];

function query<T>(c: Connection, sql: string): Promise<T> {
  return new Promise<T>((resolve, reject) => c.query(sql, (e, rows) => (e ? reject(e) : resolve(rows as T))));
}

/** Every MySQL/MariaDB check for `url`. */
export async function checkMysql(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const resolved = resolveOptions({ url, connectTimeoutMs: opts.timeoutMs });
  const where = `MySQL at ${resolved.display}`;
  const c = mysql2().createConnection({ ...resolved.connection });
  c.on('error', () => undefined);
  try {
    await within(new Promise<void>((resolve, reject) => c.connect((e) => (e ? reject(e) : resolve()))), opts.timeoutMs, where);
  } catch (e) {
    c.destroy();
    throw unreachable(where, e);
  }
  try {
    const rows = await within(query<{ Variable_name: string; Value: string }[]>(c, `SHOW SESSION VARIABLES WHERE Variable_name IN (${VARIABLES.map((v) => `'${v}'`).join(', ')})`), opts.timeoutMs, where);
    const v = new Map(rows.map((r) => [r.Variable_name, r.Value]));
    const num = (name: string): number => Number(v.get(name) ?? Number.NaN);
    const findings: DoctorFinding[] = [];
    const version = v.get('version') ?? '?';

    const readOnly = v.get('read_only');
    findings.push(
      readOnly === 'ON' || readOnly === '1'
        ? fail('mysql.read-only', `${version}: read_only ON (a replica, or a primary fenced off): dlock writes a row per key, so every acquisition fails`, 'Point the URL at the primary.')
        : ok('mysql.read-only', `${version}: read_only OFF`),
    );

    const wait = num('wait_timeout');
    findings.push(
      wait < WAIT_TIMEOUT_WARN_S
        ? warn('mysql.wait-timeout', `wait_timeout ${wait} s: the server closes the driver's idle connections after ${wait} s (it raises the limit to the TTL on a connection while it holds locks, so held locks are kept), so operations after a pause meet a closed connection and are retried`, `SET GLOBAL wait_timeout = 28800 (or at least ${WAIT_TIMEOUT_WARN_S}), and in my.cnf.`)
        : ok('mysql.wait-timeout', `wait_timeout ${wait} s: idle connections stay open; the driver sets it to the TTL on connections that hold locks, so a silent holder's locks go about one TTL after its last statement`),
    );
    findings.push(ok('mysql.interactive-timeout', `interactive_timeout ${num('interactive_timeout')} s: applies to interactive clients (the mysql shell), not to dlock's connections`));

    const mdl = num('lock_wait_timeout');
    const row = num('innodb_lock_wait_timeout');
    const lockEvidence = `lock_wait_timeout ${mdl} s (metadata locks: creating dlock's tables at first use), innodb_lock_wait_timeout ${row} s (row locks: table mode's statements on a busy key)`;
    findings.push(
      Math.min(mdl, row) < LOCK_WAIT_WARN_S
        ? warn('mysql.lock-wait-timeout', `${lockEvidence}: under ${LOCK_WAIT_WARN_S} s, a statement behind a slow transaction fails instead of waiting`, `Raise them to at least ${LOCK_WAIT_WARN_S} s (defaults: 31536000 and 50).`)
        : ok('mysql.lock-wait-timeout', lockEvidence),
    );

    findings.push(await clockOffset(async () => Number((await query<{ s: string }[]>(c, 'SELECT CAST(UNIX_TIMESTAMP(NOW(6)) AS CHAR) AS s'))[0]?.s) * 1000));
    findings.push(await roundTrip('SELECT 1 statements', () => query(c, 'SELECT 1'), opts));
    return findings;
  } catch (e) {
    throw unreachable(where, e);
  } finally {
    c.destroy();
  }
}
