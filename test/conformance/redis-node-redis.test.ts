/**
 * The same conformance suite with the Redis driver over node-redis (`redis` on npm) clients
 * instead of ioredis: the driver accepts both, and both must behave alike. Forked workers
 * connect by URL (ioredis), so cross-process tests also mix the two clients on one lock.
 */
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, inject } from 'vitest';
import { RedisDriver, type NodeRedisLike } from '../../src/drivers/redis/index.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { defineConformanceSuite } from './suite.js';

const url = inject('redisUrl');
const admin = new Redis(url, { lazyConnect: true });
const names = new RedisDriver({ url });
/** node-redis clients handed to drivers: the driver never closes a caller's client, so we do. */
const clients: Array<{ isOpen: boolean; close(): Promise<unknown> }> = [];

async function driverOn(serverUrl: string): Promise<RedisDriver> {
  const client = createClient({ url: serverUrl, socket: { reconnectStrategy: (n) => Math.min(n * 50, 500) } });
  client.on('error', () => undefined); // reconnects are expected while a test stops the server
  clients.push(client);
  await client.connect();
  return new RedisDriver({ client: client as unknown as NodeRedisLike });
}

afterAll(async () => {
  await names.close();
  admin.disconnect();
  await Promise.all(clients.filter((c) => c.isOpen).map((c) => c.close().catch(() => undefined)));
});

defineConformanceSuite({
  name: 'redis (node-redis client)',
  create: () => driverOn(url),
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
    let server: RedisServer = await startRedis();
    const port = server.port;
    return {
      create: () => driverOn(server.url),
      makeUnavailable: () => server.stop(),
      restore: async () => {
        server = await startRedis({ port });
      },
      dispose: () => server.stop(),
    };
  },
});
