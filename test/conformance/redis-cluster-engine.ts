/**
 * The Redis Cluster side of the conformance factories (shared by the ioredis and node-redis
 * runs): a private 3-master cluster per test file, the engine hooks over it, and a second private
 * cluster that a test may take down.
 */
import { Cluster } from 'ioredis';
import type { LockDriver } from '../../src/drivers/driver.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { redisKeyHooks, type RedisHooks } from './redis-engine.js';
import type { IsolatedEngine } from './suite.js';

export type ClusterHooks = RedisHooks & {
  /** EVAL/EVALSHA calls per master port so far (to show that the keys spread over every master). */
  scriptCallsPerNode(): Promise<Map<number, number>>;
};

/** Engine hooks over `cluster`; `close()` them in afterAll. */
export function clusterEngine(cluster: RedisCluster): ClusterHooks {
  const admin = new Cluster(cluster.nodes.map((n) => ({ ...n })), { lazyConnect: true });
  admin.on('error', () => undefined);
  return {
    ...redisKeyHooks(admin, cluster.url),
    scriptCallsPerNode: async () => {
      const out = new Map<number, number>();
      for (const node of admin.nodes('master')) {
        const stats = await node.info('commandstats');
        let calls = 0;
        for (const m of stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(m[2]);
        out.set(Number(node.options.port), calls);
      }
      return out;
    },
  };
}

/** A private cluster that a test may take down (every node stopped) and bring back. */
export async function isolatedCluster(create: (cluster: RedisCluster) => Promise<LockDriver>): Promise<IsolatedEngine> {
  const cluster = await startRedisCluster();
  return {
    create: () => create(cluster),
    makeUnavailable: () => cluster.takeDown(),
    restore: () => cluster.restart(),
    dispose: () => cluster.stop(),
    operations: () => cluster.scriptCalls(),
  };
}
