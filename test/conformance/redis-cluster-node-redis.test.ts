/**
 * The whole conformance suite on a real 3-master Redis Cluster through node-redis cluster clients
 * (`createCluster`). Forked workers connect by URL (`redis+cluster://`, ioredis), so
 * cross-process tests also mix the two clients on one lock.
 */
import { createCluster } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { clusterEngine, isolatedCluster, type ClusterHooks } from './redis-cluster-engine.js';
import { defineConformanceSuite } from './suite.js';

let cluster: RedisCluster;
let engine: ClusterHooks;
/** Cluster clients handed to drivers: the driver never closes a caller's client, so we do. */
const clients: Array<{ close(): Promise<unknown> }> = [];

async function driverOn(c: RedisCluster): Promise<RedisDriver> {
  const client = createCluster({
    rootNodes: c.nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })),
    defaults: { socket: { reconnectStrategy: (n: number) => Math.min(n * 50, 500) } },
  });
  client.on('error', () => undefined); // reconnects are expected while a test takes the cluster down
  clients.push(client);
  await client.connect();
  const driver = new RedisDriver({ client });
  return driver;
}

beforeAll(async () => {
  cluster = await startRedisCluster();
  engine = clusterEngine(cluster);
});

afterAll(async () => {
  await engine?.close();
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await cluster?.stop();
});

defineConformanceSuite({
  name: 'redis cluster (node-redis client)',
  create: () => driverOn(cluster),
  url: () => cluster.url,
  removeBehindBack: (key) => engine.removeBehindBack(key),
  waitResidue: (key) => engine.waitResidue!(key),
  isolated: () => isolatedCluster(driverOn),
});

describe('redis cluster (node-redis client): spread', () => {
  it('the suite ran lock scripts on every master', async () => {
    const calls = await engine.scriptCallsPerNode();
    console.info(`[conformance:redis cluster (node-redis)] script calls per master: ${JSON.stringify(Object.fromEntries(calls))}`);
    expect(calls.size).toBe(3);
    for (const [port, n] of calls) expect(n, `master ${port}`).toBeGreaterThan(0);
  });
});
