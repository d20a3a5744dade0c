/**
 * doctor() on a real Redis Cluster and a real Sentinel setup: cluster state and slots (an unserved
 * slot fails), per-master checks, the Sentinels' quorum and the master they name, replicas without
 * replicaAcks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { doctor } from '../../src/doctor/index.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { startRedisSentinel, type RedisSentinelSetup } from '../support/redis-sentinel.js';
import { withRedisClient } from '../support/redis.js';
import { all, one } from './findings.js';

describe('doctor: Redis Cluster', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('a healthy cluster: state ok, every slot; the checks of each master; a bad policy on one master fails there', async () => {
    const r = await doctor(cluster.url, { pings: 5 });
    expect(r.engine).toBe('redis+cluster');
    const state = one(r, 'cluster.state');
    expect(state.status).toBe('ok');
    expect(state.evidence).toMatch(/cluster_state ok, 16384 of 16384 slots assigned, 0 failing/);
    expect(all(r, 'redis.role')).toHaveLength(3);

    const port = cluster.ports[1]!;
    await withRedisClient(port, async (c) => {
      await c.config('SET', 'maxmemory', '64mb');
      await c.config('SET', 'maxmemory-policy', 'allkeys-random');
    });
    const policies = all(await doctor(cluster.url, { pings: 5 }), 'redis.maxmemory-policy');
    const failing = policies.filter((f) => f.status === 'fail');
    expect(failing).toHaveLength(1);
    expect(failing[0]!.evidence).toContain(`:${port}: maxmemory-policy allkeys-random`);
  });

  it('a slot no master serves (CLUSTER DELSLOTS on every node): cluster.state fails with the count', async () => {
    for (const port of cluster.ports) await withRedisClient(port, (c) => c.call('CLUSTER', 'DELSLOTS', '0'));
    const state = one(await doctor(cluster.url, { pings: 5 }), 'cluster.state');
    expect(state.status).toBe('fail');
    expect(state.evidence).toMatch(/16383 of 16384 slots assigned/);
    expect(state.fix).toMatch(/redis-cli --cluster check/);
  });
});

describe('doctor: Redis Sentinel', () => {
  let setup: RedisSentinelSetup;
  beforeAll(async () => {
    setup = await startRedisSentinel({ replicas: 1, sentinels: 3 });
  });
  afterAll(async () => {
    await setup?.stop();
  });

  it('quorum reachable on every Sentinel, the master named, its replica without replicaAcks warns', async () => {
    const r = await doctor(setup.url, { pings: 5 });
    expect(r.engine).toBe('redis+sentinel');
    const quorum = all(r, 'sentinel.quorum');
    expect(quorum.map((f) => f.status)).toEqual(['ok', 'ok', 'ok']);
    expect(one(r, 'sentinel.master').evidence).toContain(`:${setup.master.port}`);
    expect(one(r, 'redis.replicas').status).toBe('warn');
    expect(one(await doctor(`${setup.url}?replicaAcks=1`, { pings: 5 }), 'redis.replicas').status).toBe('ok');
  });

  it('an unknown master name fails', async () => {
    const url = setup.url.replace(/\/mymaster$/, '/nosuchmaster');
    const f = one(await doctor(url, { pings: 5 }), 'sentinel.master');
    expect(f.status).toBe('fail');
    expect(f.evidence).toMatch(/no Sentinel knows a master named "nosuchmaster"/);
  });
});
