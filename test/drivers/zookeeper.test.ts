/**
 * ZooKeeper driver specifics on a real standalone server (Debian package `zookeeper`): URL
 * options, session states reaching the lease, no herd on release, parent cleanup, and the
 * handoff / throughput measurements quoted in the README.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { Lease } from '../../src/core/lease.js';
import type { SessionState } from '../../src/drivers/driver.js';
import { ZooKeeperDriver, parseZooKeeperUrl } from '../../src/drivers/zookeeper/index.js';
import { LockLostError } from '../../src/errors.js';
import { startDelayProxy } from '../support/delay-proxy.js';
import { ownEntryDeletedCase } from '../support/queue-cases.js';
import { startZooKeeper, zooKeeperAdmin, type ZooKeeperAdmin, type ZooKeeperCluster } from '../support/zookeeper.js';

let zk: ZooKeeperCluster;
let admin: ZooKeeperAdmin;
const clients: LockClient[] = [];
const drivers: ZooKeeperDriver[] = [];

beforeAll(async () => {
  zk = await startZooKeeper();
  admin = await zooKeeperAdmin(zk.connectionString);
});

afterAll(async () => {
  await admin.close();
  await zk.stop();
});

afterEach(async () => {
  await Promise.allSettled([...clients.splice(0).map((c) => c.close()), ...drivers.splice(0).map((d) => d.close())]);
});

function driver(opts: { sessionTimeoutMs?: number; cleanupDelayMs?: number; url?: string } = {}): ZooKeeperDriver {
  const d = new ZooKeeperDriver({ url: opts.url ?? zk.url, sessionTimeoutMs: opts.sessionTimeoutMs ?? 4000, cleanupDelayMs: opts.cleanupDelayMs });
  drivers.push(d);
  return d;
}

function client(d = driver()): LockClient {
  const c = new LockClient(d);
  clients.push(c);
  return c;
}

const key = (name: string): string => `zk-driver:${name}:${Math.random().toString(36).slice(2)}`;

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

describe('zookeeper:// URLs', () => {
  it('parses servers, root and options, and refuses what it does not know', () => {
    expect(parseZooKeeperUrl('zookeeper://a:2181,b:2182/apps/locks?sessionTimeoutMs=5000&spinDelayMs=100')).toEqual({
      connectionString: 'a:2181,b:2182',
      root: '/apps/locks',
      sessionTimeoutMs: 5000,
      spinDelayMs: 100,
    });
    expect(parseZooKeeperUrl('zookeeper://zk1')).toEqual({ connectionString: 'zk1:2181', root: '/dlock' });
    expect(parseZooKeeperUrl('zookeeper://zk1:2181/')).toEqual({ connectionString: 'zk1:2181', root: '/dlock' });
    for (const bad of ['zookeeper://', 'zookeeper://a:99999', 'zookeeper://a:1/x//y', 'zookeeper://a:1?timeout=5', 'redis://a:1']) {
      expect(() => parseZooKeeperUrl(bad), bad).toThrow(TypeError);
    }
    for (const bad of ['zookeeper://a:1?sessionTimeoutMs=0', 'zookeeper://a:1?sessionTimeoutMs=soon', 'zookeeper://a:1?spinDelayMs=1.5']) {
      expect(() => parseZooKeeperUrl(bad), bad).toThrow(RangeError);
    }
  });

  it('keeps its znodes under the URL path', async () => {
    const d = driver({ url: `${zk.url}/custom/root` });
    const k = key('root');
    const g = await d.tryAcquire({ key: k, owner: 'h:1:ab:1', ttlMs: 5000 });
    expect(g.ok).toBe(true);
    expect(d.lockPath(k).startsWith('/custom/root/locks/')).toBe(true);
    expect(await admin.children(d.lockPath(k))).toHaveLength(1);
    expect(await d.release(k, 'h:1:ab:1')).toBe(true);
  });
});

describe('ZooKeeper sessions reach the lease', () => {
  it('an idle session holding a lock stays connected: its heartbeats alone keep confirming it (no suspension, no loss) over several timeouts', async () => {
    const sessionTimeoutMs = 2000;
    const d = driver({ sessionTimeoutMs });
    const states: SessionState[] = [];
    d.onSessionState((s) => states.push(s));
    const c = client(d);
    const lease = await c.acquire(key('idle'), { ttlMs: 30_000 });
    const lows: number[] = [];
    const start = performance.now();
    // Nothing but the session's own heartbeats writes meanwhile (the renewal only reads).
    while (performance.now() - start < 5 * sessionTimeoutMs) {
      lows.push(lease.remainingMs());
      await sleep(50);
    }
    console.info(`[zookeeper] idle session: ${JSON.stringify({ states, lowestRemainingMs: Math.round(Math.min(...lows)), sessionTimeoutMs })}`);
    expect(states).not.toContain('suspended');
    expect(states).not.toContain('lost');
    expect(lease.isHeld()).toBe(true);
    // Confirmations trail by about half the timeout, never by the suspicion's two thirds.
    expect(Math.min(...lows)).toBeGreaterThan(0);
    expect(await lease.release()).toBe(true);
  }, 30_000);

  it('while the server is down the session is suspended, validity stops advancing, and the lease is lost (expired) at the session deadline', async () => {
    const own = await startZooKeeper();
    try {
      const sessionTimeoutMs = 1500;
      const d = driver({ url: own.url, sessionTimeoutMs });
      const states: SessionState[] = [];
      d.onSessionState((s) => states.push(s));
      const c = client(d);
      const k = key('suspended');
      // The lease's own TTL is far away: the session is what decides.
      const lease = await c.acquire(k, { ttlMs: 30_000 });
      expect(d.sessionState).toBe('connected');
      await sleep(600);
      expect(lease.remainingMs()).toBeGreaterThan(sessionTimeoutMs / 2);
      expect(lease.remainingMs()).toBeLessThanOrEqual(sessionTimeoutMs);

      const lost = new Promise<{ reason: unknown; at: number }>((resolve) =>
        lease.signal.addEventListener('abort', () => resolve({ reason: lease.signal.reason, at: performance.now() }), { once: true }),
      );
      const downAt = performance.now();
      await own.servers[0]!.kill9();
      await sleep(100);
      expect(d.sessionState).toBe('suspended');
      const r1 = lease.remainingMs();
      await sleep(200);
      const r2 = lease.remainingMs();
      // No contact: the deadline stays where it was, so the remaining time only shrinks.
      expect(r2).toBeLessThanOrEqual(r1 - 150);
      expect(lease.isHeld()).toBe(true);

      const { reason, at } = await lost;
      expect(reason).toBeInstanceOf(LockLostError);
      expect((reason as LockLostError).reason).toBe('expired');
      // The last contact was at most ~timeout/6 before the kill.
      expect(at - downAt).toBeGreaterThan(sessionTimeoutMs / 2);
      expect(at - downAt).toBeLessThan(sessionTimeoutMs + 1000);
      expect(lease.isHeld()).toBe(false);
      await sleep(50);
      // The old session is lost; the core's give-back of the lost lease may already be opening
      // a new one (not connected while the server is down).
      expect(d.sessionState).toBe('lost');
      expect(states).toEqual(['connected', 'suspended', 'lost']);

      // A new session on the next acquisition, once the server is back; the old session's znode
      // goes when the server expires it.
      await own.servers[0]!.restart();
      const again = await c.acquire(k, { ttlMs: 5000, waitMs: 15_000 });
      expect(d.sessionState).toBe('connected');
      expect(again.token).toBeGreaterThan(lease.token);
      expect(await again.release()).toBe(true);
    } finally {
      await Promise.allSettled([...clients.splice(0).map((c) => c.close()), ...drivers.splice(0).map((d) => d.close())]);
      await own.stop();
    }
  }, 60_000);

  it('a waiter whose session ends while it queues (cut off past its deadline) queues again on a new session and gets the lock', async () => {
    // The waiter reaches ZooKeeper through a proxy that can hold its bytes back: with a 4 s delay
    // and a 1.5 s session, its session passes its local deadline while it waits.
    const proxy = await startDelayProxy(zk.servers[0]!.clientPort);
    try {
      const holderDriver = driver();
      const holder = client(holderDriver);
      const waiterDriver = driver({ url: `zookeeper://127.0.0.1:${proxy.port}`, sessionTimeoutMs: 1500 });
      const waiter = client(waiterDriver);
      const k = key('requeue');
      const held = await holder.acquire(k, { ttlMs: 30_000 });
      const states: SessionState[] = [];
      waiterDriver.onSessionState((st) => states.push(st));
      const sessionEvents: SessionState[] = [];
      waiter.on('session', (e) => sessionEvents.push(e.state));
      const pending = waiter.acquire(k, { ttlMs: 5000, waitMs: 30_000 }).then(
        (lease) => ({ lease, at: performance.now() }),
        (error: unknown) => ({ error }),
      );
      // Queued: two znodes under the key.
      const dir = holderDriver.lockPath(k);
      for (let i = 0; i < 100 && (await admin.children(dir)).length < 2; i++) await sleep(20);
      const before = await admin.children(dir);
      expect(before).toHaveLength(2);

      proxy.setDelay(4000);
      for (let i = 0; i < 200 && !states.includes('lost'); i++) await sleep(25);
      expect(states).toContain('lost');
      proxy.setDelay(0);
      // Queued again on a new session (the client's event stream says so: the session came back):
      // the old znode goes (withdrawn by the new session, or when the server expires the old
      // one); the new one is behind the holder's.
      for (let i = 0; i < 300 && sessionEvents.lastIndexOf('connected') < sessionEvents.indexOf('lost'); i++) await sleep(25);
      expect(sessionEvents.lastIndexOf('connected')).toBeGreaterThan(sessionEvents.indexOf('lost'));
      // Znode names end in their 10-digit sequence number: the holder's is the lower one.
      const bySeq = (a: string, b: string): number => a.slice(-10).localeCompare(b.slice(-10));
      const [holderNode, oldWaiterNode] = [...before].sort(bySeq);
      const requeued = async (): Promise<string[]> => {
        const now = (await admin.children(dir)).sort(bySeq);
        return now.length === 2 && now[0] === holderNode && now[1] !== oldWaiterNode ? now : [];
      };
      for (let i = 0; i < 300 && (await requeued()).length === 0; i++) await sleep(25);
      expect(await requeued()).toHaveLength(2);
      expect(waiterDriver.sessionState).toBe('connected');

      const releasedAt = performance.now();
      expect(await held.release()).toBe(true);
      const got = await pending;
      if ('error' in got) throw got.error;
      expect(got.at - releasedAt).toBeLessThan(2000);
      expect(got.lease.token).toBeGreaterThan(held.token);
      expect(await got.lease.release()).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('close() ends the session: its locks are freed at once and its grants abort with reason closed', async () => {
    const d = driver();
    const k = key('close');
    const r = await d.tryAcquire({ key: k, owner: 'h:1:ab:2', ttlMs: 5000 });
    if (!r.ok) throw new Error('expected a grant');
    expect(d.sessionState).toBe('connected');
    await d.close();
    expect(r.grant.session?.aborted).toBe(true);
    expect((r.grant.session?.reason as LockLostError).reason).toBe('closed');
    expect(d.sessionState).toBe('lost');
    expect(await admin.children(d.lockPath(k))).toEqual([]);
    await expect(d.inspect(k)).rejects.toMatchObject({ code: 'DLOCK_CLOSED' });
  });

  it('extend() confirms each znode in one batch: false for unknown owners and for znodes deleted behind its back', async () => {
    const d = driver();
    const [k1, k2] = [key('extend-1'), key('extend-2')];
    expect((await d.tryAcquire({ key: k1, owner: 'h:1:ab:3', ttlMs: 5000 })).ok).toBe(true);
    expect((await d.tryAcquire({ key: k2, owner: 'h:1:ab:4', ttlMs: 5000 })).ok).toBe(true);
    const [victim] = await admin.children(d.lockPath(k2));
    await admin.remove(`${d.lockPath(k2)}/${victim}`);
    const before = d.requestCount;
    expect(
      await d.extend([
        { key: k1, owner: 'h:1:ab:3', ttlMs: 5000 },
        { key: k2, owner: 'h:1:ab:4', ttlMs: 5000 },
        { key: k1, owner: 'someone:9:ff:1', ttlMs: 5000 },
      ]),
    ).toEqual([true, false, false]);
    expect(d.requestCount - before).toBe(2); // one exists per known znode, sent together
    expect(await d.release(k1, 'h:1:ab:3')).toBe(true);
  });
});

describe('ZooKeeper queue', () => {
  it("a waiter whose own znode is deleted by someone else queues again at once and gets the lock within its wait", async () => {
    const holderDriver = driver();
    const k = key('own-deleted');
    const dir = holderDriver.lockPath(k);
    // Znode names end in their 10-digit sequence number: the queue's order.
    const bySeq = (a: string, b: string): number => a.slice(-10).localeCompare(b.slice(-10));
    await ownEntryDeletedCase(client(holderDriver), client(), k, {
      entries: async () => (await admin.children(dir)).sort(bySeq),
      remove: (name) => admin.remove(`${dir}/${name}`),
    });
  });

  it('a release wakes only the next waiter (no herd), which takes the turn without a request; the others send nothing', async () => {
    const k = key('herd');
    const holder = client();
    const waiterDrivers = [0, 1, 2, 3, 4].map(() => driver());
    const lease = await holder.acquire(k, { ttlMs: 10_000 });
    const granted: number[] = [];
    const leases: Promise<Lease>[] = [];
    for (const [i, d] of waiterDrivers.entries()) {
      leases.push(
        client(d)
          .acquire(k, { ttlMs: 10_000, waitMs: 30_000 })
          .then((l) => {
            granted.push(i);
            return l;
          }),
      );
      await sleep(50); // queued in this order
    }
    await sleep(300); // everyone queued and watching
    const before = waiterDrivers.map((d) => d.requestCount);
    expect(await lease.release()).toBe(true);
    const first = await leases[0]!;
    await sleep(300);
    const after = waiterDrivers.map((d) => d.requestCount);
    // The next waiter holds without a single request (its predecessor was the holder, and the
    // watch on its own znode, set in the same round trip, would have fired first had that gone);
    // the others sent nothing either.
    expect(after.map((n, i) => n - before[i]!)).toEqual([0, 0, 0, 0, 0]);
    expect(granted).toEqual([0]);
    await first.release();
    for (const l of leases.slice(1)) await (await l).release();
    expect(granted).toEqual([0, 1, 2, 3, 4]);
  });

  it('an empty key parent is deleted after the last release, not while someone queues', async () => {
    const d = driver({ cleanupDelayMs: 100 });
    const other = driver({ cleanupDelayMs: 100 });
    const k = key('cleanup');
    const dir = d.lockPath(k);
    const parent = dir.slice(0, dir.lastIndexOf('/'));
    const name = dir.slice(parent.length + 1);
    const a = client(d);
    const b = client(other);
    const l1 = await a.acquire(k, { ttlMs: 5000 });
    const waiting = b.acquire(k, { ttlMs: 5000, waitMs: 10_000 });
    await sleep(200);
    expect(await l1.release()).toBe(true);
    const l2 = await waiting;
    await sleep(400); // past the cleanup delay: the parent stays while l2 holds
    expect(await admin.children(parent)).toContain(name);
    expect(await l2.release()).toBe(true);
    const deadline = performance.now() + 5000;
    while ((await admin.children(parent)).includes(name) && performance.now() < deadline) await sleep(50);
    expect(await admin.children(parent)).not.toContain(name);
    // And the next acquisition makes it again.
    const l3 = await a.acquire(k, { ttlMs: 5000 });
    expect(l3.token).toBeGreaterThan(l2.token);
    await l3.release();
  });

  it('measures: idle round trip, handoff (release to next grant), uncontended and contended cycles', async () => {
    const d = driver();
    const c = client(d);
    // Idle round trip: a read of a missing lock.
    const rtts: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t = performance.now();
      await c.inspect('zk-driver:rtt-probe');
      rtts.push(performance.now() - t);
    }
    // Handoff: a waiter queued behind a holder; from the release call to the waiter's grant.
    const handoffs: number[] = [];
    const holderClient = client();
    const waiterClient = client();
    for (let i = 0; i < 40; i++) {
      const k = key('handoff');
      const h = await holderClient.acquire(k, { ttlMs: 10_000 });
      let grantedAt = 0;
      const w = waiterClient.acquire(k, { ttlMs: 10_000, waitMs: 10_000 }).then((l) => {
        grantedAt = performance.now();
        return l;
      });
      await sleep(30);
      const t = performance.now();
      await h.release();
      const l = await w;
      handoffs.push(grantedAt - t);
      await l.release();
    }
    // Uncontended: acquire + release in a loop on one key.
    const uk = key('uncontended');
    let n = 0;
    let t0 = performance.now();
    while (performance.now() - t0 < 2000) {
      const l = await c.acquire(uk, { ttlMs: 10_000 });
      await l.release();
      n++;
    }
    const uncontendedPerSec = n / ((performance.now() - t0) / 1000);
    // Contended: 8 clients (8 sessions) on one key for 3 s.
    const ck = key('contended');
    const cs = Array.from({ length: 8 }, () => client());
    let cycles = 0;
    const waits: number[] = [];
    t0 = performance.now();
    await Promise.all(
      cs.map(async (cc) => {
        while (performance.now() - t0 < 3000) {
          const t = performance.now();
          const l = await cc.acquire(ck, { ttlMs: 10_000, waitMs: 30_000 });
          waits.push(performance.now() - t);
          cycles++;
          await l.release();
        }
      }),
    );
    const contendedPerSec = cycles / ((performance.now() - t0) / 1000);
    const r = (x: number): number => Math.round(x * 100) / 100;
    const result = {
      rttP50Ms: r(quantile(rtts, 0.5)),
      handoffP50Ms: r(quantile(handoffs, 0.5)),
      handoffP90Ms: r(quantile(handoffs, 0.9)),
      uncontendedPerSec: Math.round(uncontendedPerSec),
      contendedPerSec: Math.round(contendedPerSec),
      contendedWaitP50Ms: r(quantile(waits, 0.5)),
      contendedWaitMaxMs: r(Math.max(...waits)),
    };
    console.info(`[zookeeper] measures: ${JSON.stringify(result)}`);
    // Generous: the structural bound (one read after the watch fires) is asserted above.
    expect(result.handoffP50Ms).toBeLessThan(250);
    expect(cycles).toBeGreaterThan(10);
    // No waiter starves: FIFO bounds a wait by the queue ahead of it.
    expect(result.contendedWaitMaxMs).toBeLessThan(10_000);
  }, 60_000);
});
