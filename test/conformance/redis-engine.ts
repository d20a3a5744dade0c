/**
 * The Redis engine side of the conformance factories (shared by the ioredis and node-redis
 * runs): deleting a lock behind its holder's back, the queue residue of finished waits, and a
 * private server a test may stop.
 */
import { Redis, type Cluster } from 'ioredis';
import type { LockDriver } from '../../src/drivers/driver.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import type { ConformanceFactory, IsolatedEngine } from './suite.js';

export type RedisHooks = Pick<ConformanceFactory, 'removeBehindBack' | 'waitResidue'> & { close(): Promise<void> };

/**
 * The hooks over an admin connection (a single node or a cluster) for the driver at `url`: DEL
 * the lock key behind its holder's back, LLEN/HLEN the wait queue. `close()` closes both.
 */
export function redisKeyHooks(admin: Redis | Cluster, url: string): RedisHooks {
  /** Only asked for key names. */
  const names = new RedisDriver({ url });
  return {
    removeBehindBack: async (key) => {
      const removed = await admin.del(names.keysFor(key).lock);
      if (removed !== 1) throw new Error(`DEL ${names.keysFor(key).lock} removed ${removed} keys: the lock was not there`);
    },
    waitResidue: async (key) => {
      const k = names.keysFor(key);
      return { [`LLEN ${k.queue}`]: await admin.llen(k.queue), [`HLEN ${k.queueInfo}`]: await admin.hlen(k.queueInfo) };
    },
    close: async () => {
      await names.close();
      admin.disconnect();
    },
  };
}

/** Engine hooks over the redis-server at `url`; `close()` them in afterAll. */
export function redisEngine(url: string): RedisHooks {
  return redisKeyHooks(new Redis(url, { lazyConnect: true }), url);
}

/** A private redis-server that a test may stop and restart on the same port. */
export async function isolatedRedis(create: (url: string) => Promise<LockDriver>): Promise<IsolatedEngine> {
  let server: RedisServer = await startRedis();
  const port = server.port;
  return {
    create: () => create(server.url),
    makeUnavailable: () => server.stop(),
    restore: async () => {
      server = await startRedis({ port });
    },
    dispose: () => server.stop(),
    operations: async () => {
      const probe = new Redis(server.url, { lazyConnect: true });
      try {
        await probe.connect();
        const stats = await probe.info('commandstats');
        let calls = 0;
        for (const m of stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(m[2]);
        return calls;
      } finally {
        probe.disconnect();
      }
    },
  };
}
