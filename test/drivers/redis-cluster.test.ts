/**
 * Redis Cluster specifics of the Redis driver, on a real 3-master cluster, with both clients:
 * - the batch of one tick (many locks at once) is split per lock, so no script touches a slot
 *   its node does not own; the control run with grouping turned off (`cluster: false`) fails,
 *   which proves the test can see the problem;
 * - every name of one lock hashes to one slot, also for keys with braces (a key starting with
 *   `}` would otherwise make an empty hash tag);
 * - handoff messages (classic PUBLISH, carried by the cluster bus) reach the waiter's subscriber
 *   wherever it sits, for locks on each of the three masters.
 * Plus the URL forms of parseRedisUrl (pure).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { RedisDriver, parseRedisUrl, type IoRedisLike, type NodeRedisLike } from '../../src/drivers/redis/index.js';
import { allPages } from '../support/list-pages.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';

let cluster: RedisCluster;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
});

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  await cluster?.stop();
});

type Kind = 'ioredis' | 'node-redis';

async function clusterClient(kind: Kind): Promise<IoRedisLike | NodeRedisLike> {
  if (kind === 'ioredis') {
    const c = new Cluster(cluster.nodes.map((n) => ({ ...n })));
    c.on('error', () => undefined);
    closers.push(() => c.quit());
    return c;
  }
  const c = createCluster({ rootNodes: cluster.nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })) });
  c.on('error', () => undefined);
  await c.connect();
  closers.push(() => c.close());
  return c;
}

function driverOver(client: IoRedisLike | NodeRedisLike, options: { cluster?: boolean } = {}): RedisDriver {
  const d = new RedisDriver({ client, ...options });
  closers.push(() => d.close());
  return d;
}

/** `count` lock keys whose slots are served by each of the three masters (at least `perNode` each). */
async function keysOnEveryMaster(tag: string, perNode: number): Promise<{ keys: string[]; byPort: Map<number, string[]> }> {
  const names = new RedisDriver({ url: cluster.url });
  const byPort = new Map<number, string[]>();
  const keys: string[] = [];
  for (let i = 0; keys.length < perNode * 3 && i < 1000; i++) {
    const key = `${tag}:${i}`;
    const port = await cluster.portOf(names.keysFor(key).lock);
    const list = byPort.get(port) ?? [];
    if (list.length >= perNode) continue;
    list.push(key);
    byPort.set(port, list);
    keys.push(key);
  }
  await names.close();
  expect(byPort.size).toBe(3);
  return { keys, byPort };
}

describe.each<Kind>(['ioredis', 'node-redis'])('redis cluster driver (%s)', (kind) => {
  it('detects the cluster client and batches one tick of locks on all three masters without slot errors', async () => {
    const client = await clusterClient(kind);
    const driver = driverOver(client);
    const { keys } = await keysOnEveryMaster(`batch-${kind}-${Date.now()}`, 12);
    // All 36 acquisitions are issued in one tick: one batch per lock, routed to its own master.
    const results = await Promise.all(keys.map((key) => driver.tryAcquire({ key, owner: `h:1:aa:${key}`, ttlMs: 10_000 })));
    expect(results.every((r) => r.ok)).toBe(true);
    const renewed = await driver.extend(keys.map((key) => ({ key, owner: `h:1:aa:${key}`, ttlMs: 10_000 })));
    expect(renewed).toEqual(keys.map(() => true));
    const released = await Promise.all(keys.map((key) => driver.release(key, `h:1:aa:${key}`)));
    expect(released).toEqual(keys.map(() => true));
  });

  it('control: with per-lock grouping turned off, one mixed batch fails with a slot error', async () => {
    const client = await clusterClient(kind);
    const driver = driverOver(client, { cluster: false });
    const { keys } = await keysOnEveryMaster(`mixed-${kind}-${Date.now()}`, 2);
    const results = await Promise.allSettled(keys.map((key) => driver.tryAcquire({ key, owner: `h:1:aa:${key}`, ttlMs: 10_000 })));
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
    expect(errors.length).toBe(keys.length);
    expect(errors.join('\n')).toMatch(/non local key|CROSSSLOT|MOVED/);
  });

  it('keeps every name of one lock in one slot, also for keys with braces', async () => {
    const client = await clusterClient(kind);
    const driver = driverOver(client);
    const lc = new LockClient(driver);
    closers.push(() => lc.close());
    const probe = new Cluster(cluster.nodes.map((n) => ({ ...n })));
    probe.on('error', () => undefined);
    try {
      const weird = ['}', '}x', '}}', '\\}x', '\\\\}', '{', '{}', 'a{b}c', 'a}b', '{x}', `brace-${Date.now()}`];
      const locks = new Set<string>();
      for (const key of weird) {
        const k = driver.keysFor(key);
        locks.add(k.lock);
        const slots = await Promise.all([k.lock, k.fence, k.mark, k.queue, k.queueInfo].map((n) => probe.call('CLUSTER', 'KEYSLOT', n)));
        expect(new Set(slots).size, `slots of ${JSON.stringify(key)}: ${JSON.stringify(slots)}`).toBe(1);
        const lease = await lc.acquire(key, { ttlMs: 5000, waitMs: 5000 });
        expect((await lc.inspect(key))?.owner).toBe(lease.owner);
        expect(await lease.release()).toBe(true);
      }
      // Distinct keys, distinct names.
      expect(locks.size).toBe(weird.length);
      // Ordinary keys keep their names.
      expect(driver.keysFor('orders:42').lock).toBe('dlock:{orders:42}');
      expect(driver.keysFor('\\x').lock).toBe('dlock:{\\x}');
    } finally {
      probe.disconnect();
    }
  });

  it('hands a lock over by pub/sub for locks on each of the three masters', async () => {
    const holderClient = new LockClient(driverOver(await clusterClient(kind)));
    const waiterClient = new LockClient(driverOver(await clusterClient(kind)));
    closers.push(() => holderClient.close(), () => waiterClient.close());
    const { byPort } = await keysOnEveryMaster(`handoff-${kind}-${Date.now()}`, 1);
    const took: Record<string, number> = {};
    for (const [port, [key]] of byPort) {
      if (!key) continue;
      const holder = await holderClient.acquire(key, { ttlMs: 30_000 });
      const waiting = waiterClient.acquire(key, { ttlMs: 30_000, waitMs: 20_000 });
      await sleep(150);
      const releasedAt = performance.now();
      expect(await holder.release()).toBe(true);
      const lease = await waiting;
      took[port] = Math.round((performance.now() - releasedAt) * 100) / 100;
      // A lost message would cost the holder's whole TTL (30 s): the waiter was woken.
      expect(performance.now() - releasedAt).toBeLessThan(1500);
      expect(lease.token).toBeGreaterThan(holder.token);
      expect(await lease.release()).toBe(true);
    }
    console.info(`[redis-cluster:${kind}] release -> grant per master (ms): ${JSON.stringify(took)}`);
  });

  it('lists the held keys of every master in small pages, each once, and force-releases a key on each master', async () => {
    const lc = new LockClient(driverOver(await clusterClient(kind)));
    closers.push(() => lc.close());
    const tag = `list-${kind}-${Date.now()}`;
    const { keys, byPort } = await keysOnEveryMaster(tag, 3);
    const leases = await Promise.all(keys.map((key) => lc.acquire(key, { ttlMs: 10_000 })));
    const driver = driverOver(await clusterClient(kind));
    const seen = await allPages(driver, `${tag}:`, 2);
    expect(seen.sort()).toEqual([...keys].sort());
    for (const [, [key]] of byPort) {
      const lease = leases[keys.indexOf(key!)]!;
      const forced = await driver.forceRelease(key!);
      expect(forced).toEqual({ released: 1, fence: lease.token });
      const next = await lc.acquire(key!, { ttlMs: 10_000 });
      expect(next.token).toBeGreaterThan(lease.token);
      await next.release();
    }
    // The forced keys are free again; the others are still held.
    const forcedKeys = [...byPort.values()].map(([k]) => k!);
    expect((await lc.list(`${tag}:`)).map((i) => i.key).sort()).toEqual(keys.filter((k) => !forcedKeys.includes(k)).sort());
    await Promise.all(leases.map((l) => l.release()));
    expect(await lc.list(`${tag}:`)).toEqual([]);
    expect(await lc.forceRelease(`${tag}:nothing-here`)).toEqual({ released: 0, fence: 0n });
  });
});

describe('replicaAcks on a cluster with a replica per master', () => {
  let withReplicas: RedisCluster;
  beforeAll(async () => {
    withReplicas = await startRedisCluster({ replicasPerMaster: 1 });
  });
  afterAll(async () => {
    await withReplicas?.stop();
  });

  it.each<Kind>(['ioredis', 'node-redis'])(
    'WAIT goes to the master of the lock (%s): pausing that master\'s replica refuses its grants only',
    async (kind) => {
      const client =
        kind === 'ioredis'
          ? (() => {
              const c = new Cluster(withReplicas.nodes.map((n) => ({ ...n })));
              c.on('error', () => undefined);
              closers.push(() => c.quit());
              return c;
            })()
          : await (async () => {
              const c = createCluster({ rootNodes: withReplicas.nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })) });
              c.on('error', () => undefined);
              await c.connect();
              closers.push(() => c.close());
              return c;
            })();
      // 2 s: on a loaded CI machine a healthy replica can take more than 200 ms to acknowledge.
      const driver = new RedisDriver({ client, replicaAcks: { replicas: 1, timeoutMs: 2000 } });
      closers.push(() => driver.close());
      // One key per master.
      const byPort = new Map<number, string>();
      for (let i = 0; byPort.size < 3 && i < 1000; i++) {
        const key = `acks-${kind}-${Date.now()}:${i}`;
        const port = await withReplicas.portOf(driver.keysFor(key).lock);
        if (!byPort.has(port)) byPort.set(port, key);
      }
      expect(byPort.size).toBe(3);
      const entries = [...byPort];
      const [victimPort, victimKey] = entries[0] ?? [0, ''];
      const others = entries.slice(1);
      const replicas = await withReplicas.replicasOf(victimPort);
      expect(replicas).toHaveLength(1);
      const replica = withReplicas.server(replicas[0]!);
      replica.pause();
      try {
        const refused = await driver.tryAcquire({ key: victimKey, owner: 'h:1:aa:1', ttlMs: 10_000 }).then(
          () => undefined,
          (e: unknown) => e as Error & { code?: string },
        );
        expect(refused?.code).toBe('DLOCK_UNAVAILABLE');
        expect(refused?.message).toMatch(/only 0 of 1 replica/);
        // The other masters' replicas still acknowledge (a WAIT sent to the wrong node would
        // also have passed for the victim's key).
        for (const [, key] of others) {
          const r = await driver.tryAcquire({ key, owner: 'h:1:aa:2', ttlMs: 10_000 });
          expect(r.ok).toBe(true);
          expect(await driver.release(key, 'h:1:aa:2')).toBe(true);
        }
      } finally {
        replica.resume();
      }
      const again = await driver.tryAcquire({ key: victimKey, owner: 'h:1:aa:3', ttlMs: 10_000 });
      expect(again.ok).toBe(true);
      expect(await driver.release(victimKey, 'h:1:aa:3')).toBe(true);
    },
  );
});

describe('parseRedisUrl', () => {
  it('reads the single, cluster and sentinel forms', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379', replicaAcks: undefined });
    expect(parseRedisUrl('redis://h:1/2?replicaAcks=1&family=4')).toEqual({
      kind: 'single',
      url: 'redis://h:1/2?family=4',
      replicaAcks: { replicas: 1, timeoutMs: 100, onRefused: 'degrade' },
    });
    expect(parseRedisUrl('redis+cluster://u:p%40ss@a:7000,b:7001,[::1]:7002?replicaAcks=2&replicaAckTimeoutMs=50')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
        { host: '::1', port: 7002 },
      ],
      username: 'u',
      password: 'p@ss',
      replicaAcks: { replicas: 2, timeoutMs: 50, onRefused: 'degrade' },
    });
    expect(parseRedisUrl('redis+sentinel://:pw@s1:26379,s2/mymaster/3?replicaAcks=1&replicaAcksOnRefused=fail')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
      ],
      name: 'mymaster',
      db: 3,
      username: undefined,
      password: 'pw',
      replicaAcks: { replicas: 1, timeoutMs: 100, onRefused: 'fail' },
    });
  });

  it.each([
    ['redis+cluster://', /host:port/],
    ['redis+cluster://a:99999', /host:port/],
    ['redis+cluster://a:1/0', /no path/],
    ['redis+cluster://a:1?foo=1', /unknown option "foo"/],
    ['redis+sentinel://a:1', /master name/],
    ['redis+sentinel://a:1/m/x', /master name/],
    ['redis://h:1?replicaAcks=-1', /replicas/],
    ['redis://h:1?replicaAcks=1&replicaAckTimeoutMs=0', /timeoutMs/],
    ['redis://h:1?replicaAckTimeoutMs=10', /need replicaAcks/],
    ['redis+cluster://u:secret@a:1?replicaAcks=x', /replicas/],
    ['mysql://a:1', /scheme/],
  ])('refuses %s', (url, message) => {
    let error: unknown;
    try {
      parseRedisUrl(url);
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'DLOCK_INVALID_ARGUMENT' });
    expect(String((error as Error).message)).toMatch(message);
    expect(String((error as Error).message)).not.toContain('secret');
  });
});

describe('list() right after connect', () => {
  it('over an ioredis Cluster just created (not yet ready), list() names the keys of every master', async () => {
    const tag = `fresh-${Date.now()}`;
    const { keys } = await keysOnEveryMaster(tag, 1);
    const holder = new LockClient(new RedisDriver({ url: cluster.url }));
    closers.push(() => holder.close());
    const leases = await Promise.all(keys.map((k) => holder.acquire(k, { ttlMs: 10_000 })));
    const fresh = new LockClient(driverOver(await clusterClient('ioredis')));
    closers.push(() => fresh.close());
    expect((await fresh.list(`${tag}:`)).map((i) => i.key).sort()).toEqual([...keys].sort());
    await Promise.all(leases.map((l) => l.release()));
  });
});
