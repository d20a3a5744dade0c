/**
 * The clients users pass to RedisDriver are assignable as they are, under `--strict`, with no
 * cast: ioredis Redis and Cluster, node-redis client and cluster (the README writes
 * `new RedisDriver({ client: new Cluster([...]) })`). Checked by `npm run typecheck` (this file is
 * in the project's strict tsconfig); the runtime test only keeps vitest from reporting an empty file.
 */
import { Cluster, Redis } from 'ioredis';
import type { createClient, createCluster } from 'redis';
import { describe, expectTypeOf, it } from 'vitest';
import type { RedisDriverOptions } from '../../src/drivers/redis/index.js';

type ClientOption = NonNullable<RedisDriverOptions['client']>;

describe('RedisDriver client types', () => {
  it('accepts ioredis and node-redis clients and clusters without a cast', () => {
    expectTypeOf<Redis>().toExtend<ClientOption>();
    expectTypeOf<Cluster>().toExtend<ClientOption>();
    expectTypeOf<ReturnType<typeof createClient>>().toExtend<ClientOption>();
    expectTypeOf<ReturnType<typeof createCluster>>().toExtend<ClientOption>();
  });
});
