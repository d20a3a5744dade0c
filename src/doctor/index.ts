/**
 * `doctor(url)`: read an engine's settings and say which of them break or weaken locks, and what
 * to change. Read-only: no lock key, no table, no lease, no znode is created (a check that would
 * need a write is reported as not measured instead). Each engine's checks live in a module of
 * their own, loaded only for that engine (like the drivers), so importing `dlock` loads none of
 * the engine clients.
 */
import { SUPPORTED_SCHEMES } from '../connect.js';
import { validateMs } from '../core/validate.js';
import { redactUrl } from '../drivers/redis/url.js';
import { InvalidArgumentError, OutOfRangeError, UnsupportedUrlError } from '../errors.js';
import { warn, type DoctorFinding, type DoctorOptions, type DoctorReport, type ResolvedDoctorOptions } from './report.js';

export type { DoctorFinding, DoctorOptions, DoctorReport, DoctorStatus } from './report.js';

function resolve(options: DoctorOptions | undefined): ResolvedDoctorOptions {
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new InvalidArgumentError('doctor() options must be an object such as { ttlMs: 30000 }.');
  }
  const pings = options?.pings ?? 50;
  if (!Number.isInteger(pings) || pings < 5 || pings > 10_000) {
    throw new OutOfRangeError('pings', `pings must be a whole number from 5 to 10000, got ${String(pings)}.`);
  }
  return {
    ttlMs: validateMs('ttlMs', options?.ttlMs, 1, 30_000),
    pings,
    timeoutMs: validateMs('timeoutMs', options?.timeoutMs, 1, 5000),
  };
}

/**
 * Check the engine `url` names (the URLs of {@link connect}) for settings that break locks:
 * Redis eviction policy, persistence on Redlock nodes, replicas without `replicaAcks`, Cluster and
 * Sentinel health; ZooKeeper's negotiated session timeout; etcd's cluster health and minimum lease
 * TTL; PostgreSQL transaction poolers and idle timeouts; MySQL timeouts and `read_only`; SQLite's
 * file, journal mode and file system; and, where the engine allows, the clock offset and the round
 * trip. Each finding is `ok`, `warn` (weakens locks) or `fail` (breaks them), with the evidence
 * read and the fix. Nothing is written to the engine.
 *
 * @throws InvalidArgumentError / OutOfRangeError on a bad URL or option;
 *   UnsupportedUrlError on an unknown scheme; UnavailableError when the engine cannot be reached;
 *   MissingPeerError when the engine's client package is not installed.
 *
 * @example
 * ```ts
 * const report = await doctor('sqlite:/var/tmp/app-locks.db');
 * const problems = report.findings.filter((f) => f.status !== 'ok').map((f) => `${f.check}: ${f.evidence} (${f.fix ?? ''})`);
 * const healthy = report.findings.every((f) => f.status !== 'fail');
 * ```
 */
export async function doctor(url: string, options?: DoctorOptions): Promise<DoctorReport> {
  if (typeof url !== 'string' || url.length === 0) throw new InvalidArgumentError('url must be a non-empty string.');
  const opts = resolve(options);
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  let engine = scheme;
  let findings: DoctorFinding[];
  switch (scheme) {
    case 'redis':
    case 'rediss':
    case 'redis+cluster':
    case 'redis+sentinel':
    case 'redlock': {
      const { checkRedis } = await import('./redis.js');
      findings = await checkRedis(url, opts);
      if (scheme === 'rediss') engine = 'redis';
      break;
    }
    case 'zookeeper': {
      const { checkZooKeeper } = await import('./zookeeper.js');
      findings = await checkZooKeeper(url, opts);
      break;
    }
    case 'etcd': {
      const { checkEtcd } = await import('./etcd.js');
      findings = await checkEtcd(url, opts);
      break;
    }
    case 'postgres':
    case 'postgresql': {
      const { checkPostgres } = await import('./postgres.js');
      findings = await checkPostgres(url, opts);
      engine = 'postgres';
      break;
    }
    case 'mysql':
    case 'mariadb': {
      const { checkMysql } = await import('./mysql.js');
      findings = await checkMysql(url, opts);
      break;
    }
    case 'sqlite': {
      const { checkSqlite } = await import('./sqlite.js');
      findings = checkSqlite(url);
      break;
    }
    case 'memory':
      findings = [warn('engine', 'memory: locks live in this process only; other processes and hosts do not see them', 'Use an engine shared by every process that takes the locks (sqlite: on one host, redis://, postgres://, ...).')];
      break;
    default:
      throw new UnsupportedUrlError(url, SUPPORTED_SCHEMES);
  }
  return { engine, url: redactUrl(url), findings };
}
