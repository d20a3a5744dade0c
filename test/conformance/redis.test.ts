import { afterAll, inject } from 'vitest';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { isolatedRedis, redisEngine } from './redis-engine.js';
import { defineConformanceSuite } from './suite.js';

/** The run's shared redis-server (test/support/global-setup.ts). */
const url = inject('redisUrl');
const engine = redisEngine(url);
afterAll(() => engine.close());

defineConformanceSuite({
  name: 'redis',
  create: () => Promise.resolve(new RedisDriver({ url })),
  url: () => url,
  removeBehindBack: engine.removeBehindBack,
  waitResidue: engine.waitResidue,
  // A private server: the test stops it, which must not disturb the other tests.
  isolated: () => isolatedRedis((u) => Promise.resolve(new RedisDriver({ url: u }))),
});
