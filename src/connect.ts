import { LockClient, type LockClientOptions } from './core/client.js';
import type { LockDriver } from './drivers/driver.js';
import { InvalidArgumentError, UnsupportedUrlError } from './errors.js';

/** The URL schemes {@link connect} understands. */
export const SUPPORTED_SCHEMES = ['sqlite', 'redis', 'rediss', 'memory'] as const;

/**
 * Create the driver a URL names. The scheme picks the engine:
 * - `sqlite:PATH` (or `sqlite:///abs/path`): the embedded default, one database file per host;
 * - `redis://[user:pass@]host:port[/db]` and `rediss://...`: a single Redis node (uses `ioredis`);
 * - `memory:`: in-process only (tests).
 */
export async function createDriver(url: string): Promise<LockDriver> {
  if (typeof url !== 'string' || url.length === 0) throw new InvalidArgumentError('url must be a non-empty string.');
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  switch (scheme) {
    case 'sqlite': {
      const { SqliteDriver } = await import('./drivers/sqlite/index.js');
      return new SqliteDriver({ path: sqlitePath(url) });
    }
    case 'redis':
    case 'rediss': {
      const { RedisDriver } = await import('./drivers/redis/index.js');
      return new RedisDriver({ url });
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
 * @example
 * ```ts
 * const locks = await connect('sqlite:/var/tmp/app-locks.db');
 * await locks.using('nightly-report', async () => { ... });
 * await locks.close();
 * ```
 */
export async function connect(url: string, options?: LockClientOptions): Promise<LockClient> {
  return new LockClient(await createDriver(url), options);
}

/** `sqlite:/abs/file.db`, `sqlite:///abs/file.db`, `sqlite:relative.db` -> a file path. */
export function sqlitePath(url: string): string {
  let rest = url.slice('sqlite:'.length);
  if (rest.startsWith('//')) rest = rest.slice(2);
  rest = decodeURIComponent(rest.split('?')[0] ?? '');
  if (rest.length === 0) throw new InvalidArgumentError(`"${url}" names no database file: use sqlite:/path/to/locks.db.`);
  return rest;
}
