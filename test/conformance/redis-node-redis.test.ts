/**
 * The same conformance suite with the Redis driver over node-redis (`redis` on npm) clients
 * instead of ioredis: the driver accepts both, and both must behave alike. Forked workers
 * connect by URL (ioredis), so cross-process tests also mix the two clients on one lock.
 */
import { createClient } from 'redis';
import { afterAll, inject } from 'vitest';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { isolatedRedis, redisEngine } from './redis-engine.js';
import { defineConformanceSuite } from './suite.js';

const url = inject('redisUrl');
const engine = redisEngine(url);
/** node-redis clients handed to drivers: the driver never closes a caller's client, so we do. */
const clients: Array<{ isOpen: boolean; close(): Promise<unknown> }> = [];

async function driverOn(serverUrl: string): Promise<RedisDriver> {
  const client = createClient({ url: serverUrl, socket: { reconnectStrategy: (n) => Math.min(n * 50, 500) } });
  client.on('error', () => undefined); // reconnects are expected while a test stops the server
  clients.push(client);
  await client.connect();
  return new RedisDriver({ client });
}

afterAll(async () => {
  await engine.close();
  await Promise.all(clients.filter((c) => c.isOpen).map((c) => c.close().catch(() => undefined)));
});

defineConformanceSuite({
  name: 'redis (node-redis client)',
  create: () => driverOn(url),
  url: () => url,
  removeBehindBack: engine.removeBehindBack,
  waitResidue: engine.waitResidue,
  isolated: () => isolatedRedis(driverOn),
});
