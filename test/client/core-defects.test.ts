/**
 * Defects of the core (issue "The core owns waiting and liveness"), each on real engines:
 * - many concurrent acquires on one client (and on one caller signal) printed Node's
 *   MaxListenersExceededWarning: abort listeners piled up on one signal;
 * - Redlock: a lease lost locally left its key on the nodes that still had it until their TTL.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockAbortedError, LockLostError } from '../../src/errors.js';
import { startRedis, withRedisClient, type RedisServer } from '../support/redis.js';
import { startRedlock } from '../support/redlock.js';

describe('core defects', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('10,000 concurrent waiters on one client, 11+ of them on one caller signal: no listener warning, all served', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    process.on('warning', onWarning);
    const client = await connect(redis.url);
    try {
      const key = `many:${Math.random()}`;
      const holder = await client.acquire(key, { ttlMs: 30_000 });
      const shared = new AbortController();
      const n = 10_000;
      let served = 0;
      const waits = Array.from({ length: n }, (_, i) =>
        client.acquire(key, { ttlMs: 30_000, waitMs: 120_000, signal: i % 2 === 0 ? shared.signal : undefined }).then(async (l) => {
          served += 1;
          await l.release();
        }),
      );
      await sleep(300);
      expect(served).toBe(0);
      await holder.release();
      await Promise.all(waits);
      expect(served).toBe(n);
      // Aborting a shared signal ends every wait that follows it.
      const blocker = await client.acquire(key, { ttlMs: 30_000 });
      const aborted = Array.from({ length: 50 }, () => client.acquire(key, { waitMs: 60_000, signal: shared.signal }).then(() => 'granted', (e: unknown) => e));
      await sleep(100);
      shared.abort(new Error('stop'));
      for (const r of await Promise.all(aborted)) expect(r).toBeInstanceOf(LockAbortedError);
      await blocker.release();
      await sleep(50);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await client.close();
    }
  }, 120_000);

  it('Redlock: a lease lost locally gives its key back on the nodes that still have it, long before their TTL', async () => {
    const nodes = await startRedlock({ nodes: 3 });
    const client = await connect(nodes.url, { ttlMs: 4000 });
    try {
      const key = `giveback:${Math.random()}`;
      const lease = await client.acquire(key);
      const lockKey = `dlock:{${key}}`;
      const has = (port: number): Promise<boolean> => withRedisClient(port, async (c) => (await c.exists(lockKey)) === 1);
      const first = nodes.nodes[0];
      if (!first) throw new Error('no node');
      expect(await has(first.port)).toBe(true);
      // Two of three nodes stop answering: renewals still refresh node 0, but no quorum confirms
      // them, so the lease runs out locally.
      nodes.nodes[1]?.pause();
      nodes.nodes[2]?.pause();
      const lost = await new Promise<unknown>((resolve) => lease.signal.addEventListener('abort', () => resolve(lease.signal.reason), { once: true }));
      expect((lost as LockLostError).reason).toBe('expired');
      // Node 0's key was refreshed by the last (partial) renewal: it would live ~2/3 of a TTL more.
      const ttlLeft = await withRedisClient(first.port, (c) => c.pttl(lockKey));
      const gone = await (async () => {
        const until = performance.now() + 1500;
        while (performance.now() < until) {
          if (!(await has(first.port))) return true;
          await sleep(20);
        }
        return false;
      })();
      expect(gone, `key still on node 0 (pttl was ${ttlLeft} ms at the loss)`).toBe(true);
      expect(await lease.release()).toBe(false);
    } finally {
      nodes.nodes[1]?.resume();
      nodes.nodes[2]?.resume();
      await client.close();
      await nodes.stop();
    }
  }, 60_000);
});
