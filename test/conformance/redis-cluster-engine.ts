/**
 * The Redis Cluster side of the conformance factories (shared by the ioredis and node-redis
 * runs): a private 3-master cluster per test file, the engine hooks over it, and a second private
 * cluster that a test may take down.
 */
import { Cluster } from 'ioredis';
import type { LockDriver } from '../../src/drivers/driver.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import type { ConformanceFactory, IsolatedEngine } from './suite.js';

export type ClusterHooks = Pick<ConformanceFactory, 'removeBehindBack' | 'waitResidue'> & {
  /** EVAL/EVALSHA calls per master port so far (to show that the keys spread over every master). */
  scriptCallsPerNode(): Promise<Map<number, number>>;
  close(): Promise<void>;
};

/** Engine hooks over `cluster`; `close()` them in afterAll. */
export function clusterEngine(cluster: RedisCluster): ClusterHooks {
  const admin = new Cluster(cluster.nodes.map((n) => ({ ...n })), { lazyConnect: true });
  admin.on('error', () => undefined);
  /** Only asked for key names. */
  const names = new RedisDriver({ url: cluster.url });
  return {
    removeBehindBack: async (key) => {
      const removed = await admin.del(names.keysFor(key).lock);
      if (removed !== 1) throw new Error(`DEL ${names.keysFor(key).lock} removed ${removed} keys: the lock was not there`);
    },
    waitResidue: async (key) => {
      const k = names.keysFor(key);
      return { [`LLEN ${k.queue}`]: await admin.llen(k.queue), [`HLEN ${k.queueInfo}`]: await admin.hlen(k.queueInfo) };
    },
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
    close: async () => {
      await names.close();
      admin.disconnect();
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
