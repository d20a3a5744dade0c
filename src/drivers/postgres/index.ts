/**
 * PostgreSQL driver (`pg`), in one of two modes.
 *
 * **Session mode** (default, `mode: 'session'`): session-level advisory locks on dedicated
 * connections (src/drivers/postgres/session.ts).
 * Guarantees:
 * - exclusion by the server's lock manager; a lock is freed as soon as the server sees its
 *   session end (release, kill -9 of the holder, `pg_terminate_backend`, a dropped connection);
 * - waiting in the server's lock queue (no polling): FIFO among the waiters that reach the server
 *   (a driver sends one waiter per key at a time; its other local waiters follow in FIFO order);
 * - collision-free key mapping: each key text gets a unique id in `<prefix>session_locks`, and its
 *   advisory lock is the bigint `advisoryBase + id` (default base 0x646C6B0000000000, "dlk");
 * - fencing tokens from one sequence (`<prefix>tokens`): strictly increasing per key;
 * - every lease carried by a connection that dies is told at once (`lease.signal`, 'session-lost').
 * Does not:
 * - work through transaction poolers (PgBouncer transaction mode, RDS Proxy...): use table mode;
 * - free the lock of a holder that is paused (SIGSTOP, GC) but still connected: the server keeps
 *   it until the session ends (the paused holder's own lease expires locally; use fencing);
 * - notice a silently dead connection before TCP keepalive does (server side ~20 s; the client's
 *   lease is lost at its local TTL deadline when renewals stop getting through).
 *
 * Read-write locks through `pg_advisory_lock_shared` (a queued writer blocks new readers); no
 * semaphore permits (use table mode).
 *
 * **Lease-table mode** (`mode: 'table'`): a row per held key with owner, token and an expiry by the
 * server's clock (src/drivers/postgres/table.ts), for transaction poolers. Every admission mode
 * (read-write locks, k-permit semaphores) and the fairness choice, each step one PL/pgSQL call;
 * releases hand the key to the queue's head and NOTIFY it (one LISTEN connection per driver). A
 * crashed holder's lock is free once its TTL runs out.
 *
 * Both modes keep their data in tables they create (`createTables`, default true) and answer the
 * optional contract operations (marks, id ranges) with SQL. Do not mix modes on one key: they
 * are separate lock spaces.
 */
import type { Logger } from '../../core/renewal.js';
import { validateMs } from '../../core/validate.js';
import { InvalidArgumentError } from '../../errors.js';
import type { ConnectionSettings } from './connection.js';
import { parsePostgresUrl } from './connection.js';
import { DEFAULT_PREFIX, namesFor } from './schema.js';
import { PostgresSessionDriver } from './session.js';
import { PostgresTableDriver } from './table.js';

export { PostgresSessionDriver } from './session.js';
export { PostgresTableDriver } from './table.js';
export { fencedRead, fencedUpdate, type FencedRow, type FencedUpdate, type PgQueryable } from './fenced.js';
export { parsePostgresUrl } from './connection.js';
export type { ConnectionSettings, UrlOptions } from './connection.js';

/** Default base of session-mode advisory keys: "dlk" in the top bytes, ids below. */
export const DEFAULT_ADVISORY_BASE = 0x646c6b0000000000n;

/** Options of {@link createPostgresDriver}. */
export interface PostgresDriverOptions {
  /** `postgres://user:pass@host:5432/db` or a `pg` client configuration (host, port, ssl...). */
  connection: ConnectionSettings;
  /** `session` (advisory locks, default) or `table` (lease rows, works behind transaction poolers). */
  mode?: 'session' | 'table';
  /** Prefix of the tables, sequence and channel: letters, digits, `_`. Default `dlock_`. */
  tablePrefix?: string;
  /**
   * Create the tables when missing (needs CREATE on the schema). Default true. `false` (read-only
   * tools, `connect(url, { create: false })`): create nothing; missing tables read as no locks.
   */
  createTables?: boolean;
  /** Session mode: most connections the driver opens (main + holders + waiters). Default 10. */
  maxConnections?: number;
  /** Session mode: advisory keys are `advisoryBase + id`. Default {@link DEFAULT_ADVISORY_BASE}. */
  advisoryBase?: bigint;
  /** Table mode: pooled connections for lock statements. Default 4. */
  poolSize?: number;
  /**
   * Table mode: where the LISTEN connection goes, when `connection` is a transaction pooler that
   * cannot carry LISTEN (point it at the server itself). Default `connection`.
   */
  listen?: ConnectionSettings;
  /** Longest a non-waiting statement may take before it fails, in ms. Default 10,000. */
  opTimeoutMs?: number;
  /** Where dlock reports what it handles (connection errors, retries); it never writes to the console. */
  logger?: Logger;
}

/**
 * The PostgreSQL lock driver for `options.mode` (see the file header for what each guarantees).
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { createPostgresDriver } from 'dlock/postgres';
 * const locks = new LockClient(createPostgresDriver({ connection: 'postgres://app@db/app' }));
 * await locks.using('invoice:42', async (lease) => {
 *   // exclusive; lease.token is the fencing token
 * });
 * await locks.close();
 * ```
 */
export function createPostgresDriver(options: PostgresDriverOptions): PostgresSessionDriver | PostgresTableDriver {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('createPostgresDriver needs options such as { connection: "postgres://..." }.');
  }
  const { connection } = options;
  if (!(typeof connection === 'string' && /^postgres(ql)?:\/\//i.test(connection)) && (typeof connection !== 'object' || connection === null)) {
    throw new InvalidArgumentError('connection must be a postgres:// URL or a pg client configuration object.');
  }
  const mode = options.mode ?? 'session';
  if (mode !== 'session' && mode !== 'table') throw new InvalidArgumentError(`mode must be "session" or "table", got ${JSON.stringify(mode)}.`);
  const names = namesFor(options.tablePrefix ?? DEFAULT_PREFIX);
  const opTimeoutMs = validateMs('opTimeoutMs', options.opTimeoutMs, 1, 10_000);
  const createTables = options.createTables ?? true;
  if (mode === 'table') {
    const poolSize = options.poolSize ?? 4;
    if (!Number.isInteger(poolSize) || poolSize < 1) throw new InvalidArgumentError(`poolSize must be a whole number >= 1, got ${poolSize}.`);
    return new PostgresTableDriver({ connection, listen: options.listen, names, poolSize, createTables, opTimeoutMs, logger: options.logger });
  }
  const maxConnections = options.maxConnections ?? 10;
  if (!Number.isInteger(maxConnections) || maxConnections < 2) {
    throw new InvalidArgumentError(`maxConnections must be a whole number >= 2 (one main connection, one to wait on), got ${maxConnections}.`);
  }
  const advisoryBase = options.advisoryBase ?? DEFAULT_ADVISORY_BASE;
  if (typeof advisoryBase !== 'bigint' || advisoryBase < 0n || advisoryBase > 2n ** 63n - 2n ** 40n) {
    // Room above the base for 2^40 key ids within the positive int8 range.
    throw new InvalidArgumentError('advisoryBase must be a bigint in [0, 2^63 - 2^40].');
  }
  return new PostgresSessionDriver({ connection, names, advisoryBase, maxConnections, createTables, opTimeoutMs, logger: options.logger });
}

/**
 * The driver a `postgres://` / `postgresql://` URL names. Query options (removed before `pg` sees
 * the URL): `mode=session|table`, `tablePrefix=...`, `maxConnections=N`; the rest (`sslmode`,
 * `application_name`...) is `pg`'s. `extra.createTables: false` (what `connect(url, { create: false })`
 * passes) creates nothing; missing tables then read as no locks.
 */
export function postgresDriverFromUrl(url: string, extra: Pick<PostgresDriverOptions, 'createTables'> = {}): PostgresSessionDriver | PostgresTableDriver {
  const o = parsePostgresUrl(url);
  return createPostgresDriver({
    ...extra,
    connection: o.connection,
    mode: o.mode,
    ...(o.tablePrefix !== undefined ? { tablePrefix: o.tablePrefix } : {}),
    ...(o.maxConnections !== undefined ? { maxConnections: o.maxConnections } : {}),
  });
}
