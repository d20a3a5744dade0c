/**
 * The whole conformance suite on a real 3-master Redis Cluster through an ioredis `Cluster`
 * (URL `redis+cluster://...`, which forked workers connect to as well). Lock keys are random, so
 * they spread over the three masters; the last test checks that every master ran lock scripts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { clusterEngine, isolatedCluster, type ClusterHooks } from './redis-cluster-engine.js';
import { defineConformanceSuite } from './suite.js';

let cluster: RedisCluster;
let engine: ClusterHooks;

beforeAll(async () => {
  cluster = await startRedisCluster();
  engine = clusterEngine(cluster);
});

afterAll(async () => {
  await engine?.close();
  await cluster?.stop();
});

defineConformanceSuite({
  name: 'redis cluster',
  create: () => Promise.resolve(new RedisDriver({ url: cluster.url })),
  url: () => cluster.url,
  removeBehindBack: (key) => engine.removeBehindBack(key),
  waitResidue: (key) => engine.waitResidue!(key),
  isolated: () => isolatedCluster((c) => Promise.resolve(new RedisDriver({ url: c.url }))),
});

describe('redis cluster: spread', () => {
  it('the suite ran lock scripts on every master', async () => {
    const calls = await engine.scriptCallsPerNode();
    console.info(`[conformance:redis cluster] script calls per master: ${JSON.stringify(Object.fromEntries(calls))}`);
    expect(calls.size).toBe(3);
    for (const [port, n] of calls) expect(n, `master ${port}`).toBeGreaterThan(0);
  });
});
