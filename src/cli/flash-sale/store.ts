/**
 * The per-backend part of the flash-sale demo: where the stock and the orders live.
 *
 * The demo keeps its data IN THE SAME ENGINE as the locks (tables in the same SQLite file, keys
 * on the same Redis), so a run exercises one engine end to end. Adding a backend means writing
 * one {@link StoreFactory} in ./stores/ and adding one line to {@link STORE_LOADERS}.
 */

/** Stock and orders of one item on one engine. Every method is for that item only. */
export interface Store {
  /** Short backend name for reports: `sqlite`, `redis`, ... */
  readonly backend: string;
  /** Parent only, before forking: create what is needed, set the stock, empty the orders. */
  setup(stock: number): Promise<void>;
  /** The stock as stored now. */
  readStock(): Promise<number>;
  /**
   * Write `newStock` (the buyer's read minus one: a blind write, so that without a lock the
   * read-modify-write race is real) and record one order for `buyer`, atomically together.
   */
  recordSale(newStock: number, buyer: string): Promise<void>;
  /** The final stock and the number of recorded orders. */
  results(): Promise<{ stock: number; orders: number }>;
  /** Remove this run's data from the engine. */
  cleanup(): Promise<void>;
  /** Close connections/handles. Idempotent. */
  close(): Promise<void>;
}

/** How to open a {@link Store} for one URL scheme. */
export interface StoreFactory {
  readonly backend: string;
  /** Throws a clear error when the URL is malformed; returns a display form (no password). */
  describe(url: string): string;
  /** Connect (failing fast when the engine is unreachable) and return the store of `item`. */
  open(url: string, item: string): Promise<Store>;
}

/** Schemes the demo supports, with the form to show in help and errors. */
export const DEMO_SCHEMES: readonly { scheme: string; form: string }[] = [
  { scheme: 'sqlite', form: 'sqlite:PATH' },
  { scheme: 'redis', form: 'redis://HOST:PORT' },
  { scheme: 'rediss', form: 'rediss://HOST:PORT' },
  { scheme: 'postgres', form: 'postgres://USER@HOST:PORT/DB[?mode=session|table]' },
  { scheme: 'postgresql', form: 'postgresql://USER@HOST:PORT/DB' },
  { scheme: 'redlock', form: 'redlock://HOST:PORT,HOST:PORT,HOST:PORT' },
  { scheme: 'redis+cluster', form: 'redis+cluster://HOST:PORT,HOST:PORT,...' },
  { scheme: 'redis+sentinel', form: 'redis+sentinel://HOST:PORT,.../MASTER' },
  { scheme: 'zookeeper', form: 'zookeeper://HOST:PORT[,HOST:PORT...]' },
  { scheme: 'etcd', form: 'etcd://HOST:PORT[,HOST:PORT...]' },
  { scheme: 'mysql', form: 'mysql://USER@HOST:PORT/DB[?mode=session|table]' },
  { scheme: 'mariadb', form: 'mariadb://USER@HOST:PORT/DB' },
];

/** Lazy, so that a run only loads the client library of its own engine. */
const STORE_LOADERS: Readonly<Record<string, () => Promise<StoreFactory>>> = {
  sqlite: async () => (await import('./stores/sqlite.js')).sqliteStore,
  redis: async () => (await import('./stores/redis.js')).redisStore,
  rediss: async () => (await import('./stores/redis.js')).redisStore,
  postgres: async () => (await import('./stores/postgres.js')).postgresStore,
  postgresql: async () => (await import('./stores/postgres.js')).postgresStore,
  redlock: async () => (await import('./stores/redlock.js')).redlockStore,
  'redis+cluster': async () => (await import('./stores/redis.js')).redisStore,
  'redis+sentinel': async () => (await import('./stores/redis.js')).redisStore,
  zookeeper: async () => (await import('./stores/zookeeper.js')).zookeeperStore,
  etcd: async () => (await import('./stores/etcd.js')).etcdStore,
  mysql: async () => (await import('./stores/mysql.js')).mysqlStore,
  mariadb: async () => (await import('./stores/mysql.js')).mysqlStore,
};

/** A user-facing problem (bad URL, unreachable engine...): printed without a stack trace. */
export class DemoError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DemoError';
  }
}

/** The lower-cased scheme of `url` (`sqlite`, `redis`...), or '' when it has none. */
export function schemeOf(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  return m?.[1]?.toLowerCase() ?? '';
}

export function supportedSchemesText(): string {
  return DEMO_SCHEMES.map((s) => s.form).join(', ');
}

/** The factory for `url`'s scheme; a {@link DemoError} naming the supported schemes otherwise. */
export async function storeFactoryFor(url: string): Promise<StoreFactory> {
  const scheme = schemeOf(url);
  const load = Object.hasOwn(STORE_LOADERS, scheme) ? STORE_LOADERS[scheme] : undefined;
  if (!load) {
    const why =
      scheme === 'memory'
        ? 'memory: locks live inside one process, and this demo forks worker processes'
        : scheme === ''
          ? 'it has no scheme'
          : `the scheme "${scheme}:" is not supported by this demo`;
    throw new DemoError(`Cannot run the flash sale on "${url}": ${why}. Supported URLs: ${supportedSchemesText()}.`);
  }
  try {
    return await load();
  } catch (e) {
    const missing = (e as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND';
    const hint = missing ? ' Install the engine client it needs (better-sqlite3 for sqlite:, ioredis for redis://).' : '';
    throw new DemoError(`Cannot load the ${scheme} backend: ${(e as Error).message}.${hint}`, { cause: e });
  }
}
