import { LockClient, validateClientOptions, type LockClientOptions } from './core/client.js';
import type { LockDriver } from './drivers/driver.js';
import { databaseOf } from './drivers/redis/url.js';
import { InvalidArgumentError, OutOfRangeError, UnsupportedUrlError } from './errors.js';

/** The URL schemes {@link connect} understands. */
export const SUPPORTED_SCHEMES = ['sqlite', 'redis', 'rediss', 'memory', 'redlock', 'redis+cluster', 'redis+sentinel', 'etcd', 'postgres', 'postgresql', 'mysql', 'mariadb', 'zookeeper'] as const;

/** Options of {@link createDriver}. */
export interface CreateDriverOptions {
  /**
   * Default true: the driver may create what it needs on the engine (a SQLite file, tables).
   * `false`: create nothing (read-only tools: `dlock inspect`, `dlock ls`): a SQLite file that does
   * not exist throws `NoSuchDatabaseError` (`DLOCK_NOT_FOUND`) instead of being created, and missing tables read
   * as no locks.
   */
  readonly create?: boolean;
}

/** Options of {@link connect}: the client's defaults, and {@link CreateDriverOptions.create}. */
export interface ConnectOptions extends LockClientOptions, CreateDriverOptions {}

function validateCreate(options: CreateDriverOptions): boolean {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
  const { create } = options;
  if (create !== undefined && typeof create !== 'boolean') throw new InvalidArgumentError(`create must be a boolean, got ${typeof create}.`);
  return create ?? true;
}

/**
 * Create the driver a URL names. The scheme picks the engine:
 * - `sqlite:PATH` (or `sqlite:///abs/path`): the embedded default, one database file per host;
 * - `redis://[user:pass@]host:port[/db]` and `rediss://...`: a single Redis node (uses `ioredis`);
 * - `redis+cluster://[user:pass@]host:port[,host:port...]`: a Redis Cluster (seed nodes), and
 *   `redis+sentinel://host:port[,host:port...]/<master name>[/db]`: the master Sentinel names;
 *   these and `redis://` take `?replicaAcks=N&replicaAckTimeoutMs=T` (WAIT after grants/renewals);
 * - `memory:`: in-process only (tests).
 * - `postgres://user:pass@host:5432/db[?mode=session|table&tablePrefix=dlock_&maxConnections=10]`
 *   (or `postgresql://`): PostgreSQL advisory locks on dedicated connections (`session`, default) or
 *   lease rows for transaction poolers (`table`); uses `pg`.
 * - `etcd://host:port[,host:port...][?leaseTtlS=10&prefix=dlock/&timeoutMs=5000]`: an etcd v3
 *   cluster (fair FIFO locks on one lease per client; uses `etcd3`).
 * - `zookeeper://host:port[,host:port...][/root][?sessionTimeoutMs=10000&spinDelayMs=500]`: a
 *   ZooKeeper ensemble (fair FIFO locks on ephemeral sequential znodes under `/root`, default
 *   `/dlock`; liveness is the session; uses `node-zookeeper-client`).
 * - `redlock://[user:pass@]H1:P1,H2:P2,H3:P3[/db][?nodeTimeoutMs=&retryJitterMs=&prefix=&tls=true]`:
 *   a lock held by a majority of independent Redis nodes (Redlock; uses `ioredis`).
 * - `mysql://user:pass@host:3306/db[?mode=session|table&tablePrefix=dlock_&connections=2&maxWaits=16&connectTimeoutMs=5000]`
 *   (or `mariadb://`): MySQL/MariaDB user locks (GET_LOCK) on dedicated connections (`session`,
 *   default) or lease rows (`table`); uses `mysql2`.
 */
export async function createDriver(url: string, options: CreateDriverOptions = {}): Promise<LockDriver> {
  if (typeof url !== 'string' || url.length === 0) throw new InvalidArgumentError('url must be a non-empty string.');
  const create = validateCreate(options);
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  switch (scheme) {
    case 'sqlite': {
      const { SqliteDriver } = await import('./drivers/sqlite/index.js');
      return new SqliteDriver({ path: sqlitePath(url), create });
    }
    case 'redis':
    case 'rediss':
    case 'redis+cluster':
    case 'redis+sentinel': {
      const { RedisDriver } = await import('./drivers/redis/index.js');
      return new RedisDriver({ url });
    }
    case 'redlock': {
      const { RedlockDriver } = await import('./drivers/redlock/index.js');
      return new RedlockDriver({ url });
    }
    case 'etcd': {
      const { EtcdDriver } = await import('./drivers/etcd/index.js');
      return new EtcdDriver({ url, create });
    }
    case 'postgres':
    case 'postgresql': {
      const { postgresDriverFromUrl } = await import('./drivers/postgres/index.js');
      return postgresDriverFromUrl(url, { createTables: create });
    }
    case 'mysql':
    case 'mariadb': {
      const { createMysqlDriver } = await import('./drivers/mysql/index.js');
      return createMysqlDriver({ url, create });
    }
    case 'zookeeper': {
      const { ZooKeeperDriver } = await import('./drivers/zookeeper/index.js');
      return new ZooKeeperDriver({ url, create });
    }
    case 'memory': {
      const { MemoryDriver } = await import('./drivers/memory/index.js');
      return new MemoryDriver();
    }
    default:
      throw new UnsupportedUrlError(url, SUPPORTED_SCHEMES);
  }
}

/**
 * A {@link LockClient} over the engine `url` names (see {@link createDriver}); the client owns the
 * driver and closes it in `close()`.
 *
 * The options are checked before any connection is opened: a bad one throws (`OutOfRangeError`,
 * `InvalidArgumentError`) and leaves nothing behind that would keep the process alive. A Redis or
 * Redlock URL naming a db > 0 is checked with one read: a server without that db throws
 * `OutOfRangeError` (option `db`); an unreachable server is left to the lock operations.
 *
 * @example
 * ```ts
 * const locks = await connect('sqlite:/var/tmp/app-locks.db');
 * await locks.using('nightly-report', async () => { ... });
 * await locks.close();
 * ```
 */
export async function connect(url: string, options?: ConnectOptions): Promise<LockClient> {
  // Options first: a bad one must not leave a connection open (it would keep the process alive).
  validateClientOptions(options);
  const { create, ...clientOptions } = options ?? {};
  const driver = await createDriver(url, create === undefined ? {} : { create });
  try {
    if (databaseOf(url) > 0) await checkDatabase(driver);
    return new LockClient(driver, clientOptions);
  } catch (e) {
    await driver.close().catch(() => undefined);
    throw e;
  }
}

/** How long connect() waits for a Redis URL's db to be confirmed before leaving it to the first lock operation. */
const DB_CHECK_MS = 3000;

/**
 * A Redis URL naming a db > 0: one read, so that a server without that db fails `connect()` with
 * the adapter's `OutOfRangeError` (option `db`) rather than every later operation. Any other
 * outcome (an unreachable server, no answer within {@link DB_CHECK_MS}) is left to the lock
 * operations, as for every other URL.
 */
async function checkDatabase(driver: LockDriver): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, DB_CHECK_MS);
  });
  try {
    await Promise.race([driver.inspect('dlock:db-check'), gaveUp]);
  } catch (e) {
    if (e instanceof OutOfRangeError && e.option === 'db') throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** `sqlite:/abs/file.db`, `sqlite:///abs/file.db`, `sqlite:relative.db` -> a file path. */
export function sqlitePath(url: string): string {
  let rest = url.slice('sqlite:'.length);
  if (rest.startsWith('//')) rest = rest.slice(2);
  rest = decodeURIComponent(rest.split('?')[0] ?? '');
  if (rest.length === 0) throw new InvalidArgumentError(`"${url}" names no database file: use sqlite:/path/to/locks.db.`);
  return rest;
}
