/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on a real 3-master Redis Cluster
 * (`redis+cluster://...`) and on a master + replica under Sentinel (`redis+sentinel://...`).
 */
import { startRedisCluster } from '../support/redis-cluster.js';
import { startRedisSentinel } from '../support/redis-sentinel.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'redis',
  start: async () => {
    const [cluster, sentinel] = await Promise.all([startRedisCluster(), startRedisSentinel({ replicas: 1, sentinels: 1 })]);
    return { cluster, sentinel };
  },
  stop: async ({ cluster, sentinel }) => {
    await Promise.allSettled([cluster.stop(), sentinel.stop()]);
  },
  targets: [
    { title: 'redis cluster', url: ({ cluster }) => cluster.url },
    { title: 'redis sentinel', url: ({ sentinel }) => sentinel.url },
  ],
  unreachable: {
    url: 'redis+cluster://127.0.0.1:1,127.0.0.1:2',
    message: /Cannot reach Redis at redis\+cluster:\/\/127\.0\.0\.1:1,127\.0\.0\.1:2/,
  },
});
