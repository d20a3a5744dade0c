/**
 * MySQL / MariaDB drivers (through `mysql2`), in two modes that share one table per database.
 *
 * Session mode ({@link MysqlSessionDriver}, `?mode=session`, the default of `connect()`):
 * - the lock is a user lock, `GET_LOCK(name, timeout)`, held by a connection the driver owns and
 *   never lends to other queries; the wait happens in the server (no polling); a blocked GET_LOCK
 *   occupies its connection, so each concurrent server wait gets a connection of its own (a small
 *   private set, `maxWaits`), and a connection that won a lock keeps it until released;
 * - the server frees every lock of a connection the moment it sees it end: crash, kill -9, an
 *   admin's `KILL <id>`, a server restart. The driver then aborts `Grant.session` of every lease
 *   that connection held (`sessionState` turns `lost`);
 * - a holder that goes silent (paused process, cut-off network) keeps its connection open, so
 *   the driver sets `wait_timeout` on the connection to the largest TTL it holds (whole seconds,
 *   rounded up): the server drops it, and frees its locks, that long after its last statement;
 * - waiters are served in arrival order (the server's lock queue is FIFO; `info.fair`);
 * - lock names: `dl:` + base32 of SHA-256(database, table prefix, key), 55 characters (MySQL
 *   allows 64 and compares names case-insensitively; base32 has one case). Lock names are
 *   server-wide: the database is part of the hash so that two databases do not share locks;
 * - fencing: a counter in the key's row, bumped in the same round trip as the grant.
 *
 * - only exclusive holds (`info.modes`): GET_LOCK has no shared mode, so a ReadWriteLock is
 *   refused with UnsupportedModeError pointing to the table mode, and a Semaphore falls back to
 *   one lock per permit;
 *
 * Lease-table mode ({@link MysqlTableDriver}, `?mode=table`):
 * - a row per key: exclusive owner, fencing token, expiry by the server's clock
 *   (`UTC_TIMESTAMP(6)`), renewed by the core; shared and permit holders in `<prefix>holders`, a
 *   FIFO queue in `<prefix>waiters`; each operation is one atomic statement or one transaction
 *   under the key row's lock, so no connection must stay up;
 * - read-write locks and semaphores (`info.modes` exclusive, shared, permits), and fairness as a
 *   choice: strict FIFO with `fair: true`, else bounded barging (5 ms) with direct handoff;
 * - waiters sleep in the server on a connection of their own (`SLEEP`, checked against the row's
 *   `changes` counter in the same statement); a release or cancel that changes a waiter's answer
 *   ends that sleep with `KILL QUERY` (see ./table.ts): no polling, whichever client releases.
 *
 * Both modes: tokens strictly increase per key (the row is never deleted; `BIGINT`); a key held in
 * one mode is busy for the other (each mode checks the other's live holder). Marks
 * (`readMark`/`raiseMark`) and id ranges (`allocateRange`) are plain SQL on the same tables.
 *
 * Does not:
 * - survive a failover to an asynchronous replica (GET_LOCK state is not replicated at all; rows
 *   may lag): point every client at the primary;
 * - work through a proxy that multiplexes connections (ProxySQL in multiplexing mode): user
 *   locks belong to a server connection;
 * - grant shared holds or permits in session mode (use the table mode).
 * Needs: CREATE/ALTER/SELECT/INSERT/UPDATE/DELETE on the database (tables `<prefix>locks`,
 * `<prefix>holders`, `<prefix>waiters` and `<prefix>sequences` are created on first use; an
 * older `<prefix>locks` gets its `crowded` and `changes` columns added, `<prefix>waiters` its `watch_id`);
 * `KILL QUERY` on its own user's connections (no privilege needed; waiters of another user wake at
 * the holders' TTL unless the releaser has `CONNECTION_ADMIN` / `SUPER`). Tested on MariaDB 10.11; MySQL 5.7+/8.0 provide the same functions
 * (several user locks per connection since MySQL 5.7.5 / MariaDB 10.0.2).
 */
import { InvalidArgumentError } from '../../errors.js';
import type { LockDriver } from '../driver.js';
import { resolveOptions, type MysqlDriverOptions, type MysqlMode } from './options.js';
import { MysqlSessionDriver } from './session.js';
import { MysqlTableDriver } from './table.js';

export { FencedMysqlTable, type FencedRowOptions, type MysqlQueryable } from './fenced.js';
export { keyNames, type KeyNames, type MysqlDriverOptions, type MysqlMode } from './options.js';
export { MysqlSessionDriver } from './session.js';
export { MysqlTableDriver } from './table.js';

/**
 * The driver for `options.mode`, else the URL's `?mode=`, else session mode.
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { createMysqlDriver } from 'dlock/mysql';
 * const locks = new LockClient(createMysqlDriver({ url: 'mysql://app:secret@db:3306/app?mode=table' }));
 * ```
 */
export function createMysqlDriver(options: MysqlDriverOptions & { mode?: MysqlMode }): LockDriver {
  const mode = options.mode ?? resolveOptions(options).mode ?? 'session';
  if (mode === 'session') return new MysqlSessionDriver(options);
  if (mode === 'table') return new MysqlTableDriver(options);
  throw new InvalidArgumentError(`mode must be "session" or "table", got ${JSON.stringify(mode)}.`);
}
