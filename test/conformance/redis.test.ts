import { Redis } from 'ioredis';
import { afterAll, inject } from 'vitest';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { defineConformanceSuite } from './suite.js';

/** The run's shared redis-server (test/support/global-setup.ts). */
const url = inject('redisUrl');
const admin = new Redis(url, { lazyConnect: true });
/** Only asked for key names. */
const names = new RedisDriver({ url });

afterAll(async () => {
  await names.close();
  admin.disconnect();
});

defineConformanceSuite({
  name: 'redis',
  create: () => Promise.resolve(new RedisDriver({ url })),
  url: () => url,
  removeBehindBack: async (key) => {
    const removed = await admin.del(names.keysFor(key).lock);
    if (removed !== 1) throw new Error(`DEL ${names.keysFor(key).lock} removed ${removed} keys: the lock was not there`);
  },
  waitResidue: async (key) => {
    const k = names.keysFor(key);
    return { [`LLEN ${k.queue}`]: await admin.llen(k.queue), [`HLEN ${k.queueInfo}`]: await admin.hlen(k.queueInfo) };
  },
  isolated: async () => {
    // A private server: the test stops it, which must not disturb the other tests.
    let server: RedisServer = await startRedis();
    const port = server.port;
    return {
      create: () => Promise.resolve(new RedisDriver({ url: server.url })),
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
  },
});
