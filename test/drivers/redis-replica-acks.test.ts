/**
 * Replica acknowledgements (`replicaAcks`: WAIT after each grant and renewal) on real servers:
 * a master with one replica (Sentinel harness, no failover here), the run's shared single server
 * (no replica at all), and an ACL user without WAIT (a server that refuses it).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { LockLostError } from '../../src/errors.js';
import { startRedisSentinel, type RedisSentinelSetup } from '../support/redis-sentinel.js';

const clients: LockClient[] = [];
function client(url: string, logger?: ConstructorParameters<typeof RedisDriver>[0]['logger']): LockClient {
  const c = new LockClient(new RedisDriver({ url, ...(logger ? { logger } : {}) }));
  clients.push(c);
  return c;
}
const key = (name: string): string => `acks:${name}:${randomBytes(4).toString('hex')}`;

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
});

async function eventually(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!(await fn())) {
    if (performance.now() > end) return false;
    await sleep(20);
  }
  return true;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0) * 1000) / 1000;
}

describe('replicaAcks with a replica', () => {
  let setup: RedisSentinelSetup;
  beforeAll(async () => {
    setup = await startRedisSentinel({ replicas: 1, sentinels: 1, downAfterMs: 60_000 });
  });
  afterAll(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await setup?.stop();
  });

  it('grants and hands over once the replica acknowledged; costs are measured against no acks', async () => {
    const acked = `${setup.master.url}?replicaAcks=1&replicaAckTimeoutMs=1000`;
    const timings: Record<string, number[]> = { plain: [], acked: [] };
    for (const [label, url] of [['plain', setup.master.url], ['acked', acked]] as const) {
      const c = client(url);
      const k = key(`cycle-${label}`);
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now();
        const lease = await c.acquire(k, { ttlMs: 5000 });
        timings[label]?.push(performance.now() - t0);
        await lease.release();
      }
    }
    const a = client(acked);
    const b = client(acked);
    const k = key('handoff');
    const lockKey = new RedisDriver({ url: acked }).keysFor(k).lock;
    const replica = new Redis(setup.replicas[0]!.url);
    replica.on('error', () => undefined);
    const handoffs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const holder = await a.acquire(k, { ttlMs: 10_000 });
      const waiting = b.acquire(k, { ttlMs: 10_000, waitMs: 10_000 });
      await sleep(30);
      const t0 = performance.now();
      await holder.release();
      const lease = await waiting;
      handoffs.push(performance.now() - t0);
      expect(lease.token).toBeGreaterThan(holder.token);
      // The replica has the handed-over lock: the waiter confirmed it and WAITed.
      expect((await replica.get(lockKey))?.startsWith(`${lease.owner}|`)).toBe(true);
      await lease.release();
    }
    replica.disconnect();
    const summary = {
      acquireP50Ms: { plain: percentile(timings.plain ?? [], 0.5), acked: percentile(timings.acked ?? [], 0.5) },
      acquireP99Ms: { plain: percentile(timings.plain ?? [], 0.99), acked: percentile(timings.acked ?? [], 0.99) },
      ackedHandoffP50Ms: percentile(handoffs, 0.5),
    };
    console.info(`[redis-replica-acks] ${JSON.stringify(summary)}`);
    expect(handoffs.every((ms) => ms < 2000)).toBe(true);
  });

  it('a grant the paused replica cannot acknowledge is released and reported as UnavailableError', async () => {
    const c = client(`${setup.master.url}?replicaAcks=1&replicaAckTimeoutMs=150`);
    const observer = client(setup.master.url);
    const k = key('paused');
    const replica = setup.replicas[0]!;
    replica.pause();
    try {
      const t0 = performance.now();
      const error = await c.tryAcquire(k, { ttlMs: 5000 }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string; cause?: unknown },
      );
      expect(error?.code).toBe('DLOCK_UNAVAILABLE');
      expect(error?.message).toMatch(/only 0 of 1 replica\(s\) acknowledged it within 150 ms \(WAIT\); it was released/);
      expect((error?.cause as Error | undefined)?.name).toBe('ReplicaAckError');
      expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
      // Not held on the master either: given back at once.
      expect(await observer.inspect(k)).toBeNull();
      // acquire() keeps trying within its wait, then says the engine is failing.
      const waited = await c.acquire(k, { ttlMs: 5000, waitMs: 800 }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(waited?.code).toBe('DLOCK_UNAVAILABLE');
      // A try still in flight at the deadline holds the lock on the master while its WAIT runs,
      // and gives it back when the WAIT times out.
      expect(await eventually(async () => (await observer.inspect(k)) === null, 2000)).toBe(true);
    } finally {
      replica.resume();
    }
    // Acknowledged again once the replica is back.
    const lease = await c.acquire(k, { ttlMs: 5000, waitMs: 5000 });
    expect(await lease.release()).toBe(true);
  });

  it('works the same over a node-redis client', async () => {
    const nodeClient = createClient({ url: setup.master.url });
    nodeClient.on('error', () => undefined);
    await nodeClient.connect();
    const driver = new RedisDriver({ client: nodeClient, replicaAcks: { replicas: 1, timeoutMs: 150 } });
    const c = new LockClient(driver);
    try {
      const k = key('node-redis');
      const lease = await c.acquire(k, { ttlMs: 5000 });
      expect(await lease.release()).toBe(true);
      const replica = setup.replicas[0]!;
      replica.pause();
      try {
        const error = await c.tryAcquire(k).then(
          () => undefined,
          (e: unknown) => e as Error & { code?: string },
        );
        expect(error?.code).toBe('DLOCK_UNAVAILABLE');
        expect(error?.message).toMatch(/only 0 of 1 replica/);
      } finally {
        replica.resume();
      }
      expect(await eventually(async () => (await c.inspect(k)) === null, 2000)).toBe(true);
    } finally {
      await c.close();
      await nodeClient.close();
    }
  });

  it("renewals the replica cannot acknowledge fail: the lease is lost 'expired' at its last acknowledged deadline", async () => {
    const c = client(`${setup.master.url}?replicaAcks=1&replicaAckTimeoutMs=100`);
    const k = key('renew');
    const ttlMs = 1500;
    const lease = await c.acquire(k, { ttlMs });
    await sleep(100);
    const replica = setup.replicas[0]!;
    const pausedAt = performance.now();
    replica.pause();
    try {
      const reason = await new Promise<unknown>((resolve) => lease.signal.addEventListener('abort', () => resolve(lease.signal.reason), { once: true }));
      const after = performance.now() - pausedAt;
      expect(reason).toBeInstanceOf(LockLostError);
      expect((reason as LockLostError).reason).toBe('expired');
      // Lost at the deadline of the grant (the only acknowledged write), not earlier.
      expect(after).toBeGreaterThan(ttlMs * 0.6);
      expect(after).toBeLessThan(ttlMs + 1500);
      console.info(`[redis-replica-acks] renewals unacknowledged: lost 'expired' ${Math.round(after)} ms after the replica paused (ttl ${ttlMs})`);
    } finally {
      replica.resume();
    }
  });
});

describe('replicaAcks without replicas or without WAIT', () => {
  const url = (): string => inject('redisUrl');

  it('a server with no replica never acknowledges: grants are refused, nothing stays held', async () => {
    const c = client(`${url()}?replicaAcks=1&replicaAckTimeoutMs=20`);
    const k = key('no-replica');
    const error = await c.tryAcquire(k).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    expect(error?.code).toBe('DLOCK_UNAVAILABLE');
    expect(error?.message).toMatch(/only 0 of 1 replica/);
    expect(await client(url()).inspect(k)).toBeNull();
  });

  it("a server that refuses WAIT: 'degrade' warns once and goes on; 'fail' refuses grants", async () => {
    const admin = new Redis(url());
    const user = `dlock-nowait-${randomBytes(3).toString('hex')}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '&*', '+@all', '-wait');
    try {
      const base = new URL(url());
      const userUrl = `redis://${user}:pw@${base.host}`;
      const warnings: string[] = [];
      const driver = new RedisDriver({ url: `${userUrl}?replicaAcks=1`, logger: { warn: (m) => warnings.push(m) } });
      const degraded = new LockClient(driver);
      clients.push(degraded);
      const k = key('refused');
      for (let i = 0; i < 3; i++) {
        const lease = await degraded.acquire(k, { ttlMs: 5000 });
        expect(await lease.release()).toBe(true);
      }
      expect(warnings.filter((w) => /refuses WAIT/.test(w))).toHaveLength(1);
      expect(warnings[0]).toMatch(/WITHOUT replica acknowledgements/);
      expect(driver.replicaAcks).toMatchObject({ state: 'refused' });
      expect(driver.replicaAcks.reason).toMatch(/NOPERM|permission/i);

      const strict = client(`${userUrl}?replicaAcks=1&replicaAcksOnRefused=fail`);
      const error = await strict.tryAcquire(k).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(error?.code).toBe('DLOCK_UNAVAILABLE');
      expect(error?.message).toMatch(/refuses WAIT/);
      expect(await client(url()).inspect(k)).toBeNull();
      expect(new RedisDriver({ url: url() }).replicaAcks).toEqual({ state: 'off' });
    } finally {
      await admin.call('ACL', 'DELUSER', user);
      admin.disconnect();
    }
  });
});
