/**
 * etcd driver specifics on a standalone etcd member: URL options, the fencing compare in a user's
 * own transaction, id ranges, the session (lease) state and its loss, and measurements (round
 * trip, handoff, contended throughput) for the README.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3, SortOrder, SortTarget } from 'etcd3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockClient } from '../../src/core/client.js';
import type { SessionState } from '../../src/drivers/driver.js';
import { EtcdDriver, parseEtcdUrl } from '../../src/drivers/etcd/index.js';
import { IdsExhaustedError, LockLostError } from '../../src/errors.js';
import { assertExclusion, contendedGrants, sectionsFrom } from '../support/checkers.js';
import { startEtcd } from '../support/etcd.js';
import { ownEntryDeletedCase } from '../support/queue-cases.js';
import { runLockLoops } from '../support/workers.js';

const server = await startEtcd();
const admin = new Etcd3({ hosts: server.endpoint });
const closers: Array<{ close(): Promise<void> }> = [];

afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  admin.close();
  await server.dispose();
});

async function driver(leaseTtlS = 5): Promise<EtcdDriver> {
  const d = new EtcdDriver({ hosts: server.endpoint, leaseTtlS });
  closers.push(d);
  await d.inspect('etcd-test:connect');
  return d;
}
async function client(leaseTtlS = 5): Promise<LockClient> {
  const c = new LockClient(await driver(leaseTtlS));
  closers.push(c);
  return c;
}
const uniqueKey = (name: string): string => `etcd-test:${name}:${randomBytes(4).toString('hex')}`;
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round((s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0) * 100) / 100;
};

describe('etcd URL', () => {
  it('parses hosts, default port and options; refuses unknown options and bad values', () => {
    expect(parseEtcdUrl('etcd://10.0.0.1:2379,10.0.0.2,[::1]:2380/?leaseTtlS=3&prefix=app/&timeoutMs=800')).toEqual({
      hosts: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379', 'http://[::1]:2380'],
      leaseTtlS: 3,
      prefix: 'app/',
      timeoutMs: 800,
    });
    expect(() => parseEtcdUrl('etcd://h:1?leaseTTL=3')).toThrow(/Unknown option "leaseTTL"/);
    expect(() => parseEtcdUrl('etcd://h:1?leaseTtlS=1.5')).toThrow(RangeError);
    expect(() => parseEtcdUrl('etcd://')).toThrow(/names no etcd host/);
    expect(() => new EtcdDriver({ url: 'etcd://h:1?leaseTtlS=0' })).toThrow(/leaseTtlS/);
    expect(() => new EtcdDriver({ url: 'etcd://h:1', hosts: 'http://h:1' })).toThrow(/exactly one/);
  });

  it('connect("etcd://...") locks through an EtcdDriver with the URL prefix', async () => {
    const prefix = `p${randomBytes(3).toString('hex')}/`;
    const locks = await connect(`etcd://127.0.0.1:${server.clientPort}?prefix=${prefix}&leaseTtlS=2`);
    closers.push(locks);
    expect(locks.driver).toBeInstanceOf(EtcdDriver);
    expect((locks.driver as EtcdDriver).leaseTtlS).toBe(2);
    const lease = await locks.acquire('k', { ttlMs: 5000 });
    expect(await admin.getAll().prefix(prefix).count()).toBe(1);
    expect(await lease.release()).toBe(true);
    expect(await admin.getAll().prefix(prefix).count()).toBe(0);
  });
});

describe('etcd fencing', () => {
  it("fenceCompare lets only the current holder write in the user's own transaction", async () => {
    const d = await driver();
    const locks = new LockClient(d);
    closers.push(locks);
    const other = await client();
    const key = uniqueKey('fence');
    const data = Buffer.from(`${key}/data`);
    const write = (lease: Parameters<EtcdDriver['fenceCompare']>[0], value: string) =>
      d.client.kv.txn({ compare: [d.fenceCompare(lease)], success: [{ request_put: { key: data, value: Buffer.from(value) } }], failure: [] });

    const first = await locks.acquire(key, { ttlMs: 5000 });
    expect((await write(first, 'one')).succeeded).toBe(true);
    // The same check with etcd3's builder.
    const viaBuilder = await d.client
      .if(d.holderKey(first.key, first.owner), 'Create', '==', first.token.toString())
      .then(d.client.put(data).value('one-b'))
      .commit();
    expect(viaBuilder.succeeded).toBe(true);
    expect(await first.release()).toBe(true);

    const second = await other.acquire(key, { ttlMs: 5000 });
    expect(second.token).toBeGreaterThan(first.token);
    // The old holder's write is refused: its key is gone.
    expect((await write(first, 'stale')).succeeded).toBe(false);
    expect((await write(second, 'two')).succeeded).toBe(true);
    expect(await admin.get(data.toString()).string()).toBe('two');
    expect(await second.release()).toBe(true);
  });
});

describe('etcd id ranges', () => {
  it('allocateRange: concurrent drivers get disjoint, contiguous ranges', async () => {
    const name = uniqueKey('ids');
    const drivers = await Promise.all([0, 1, 2].map(() => driver()));
    const ranges: Array<[bigint, bigint]> = [];
    await Promise.all(
      drivers.map(async (d) => {
        for (let i = 0; i < 15; i++) {
          const count = BigInt(1 + (i % 4));
          const end = await d.allocateRange(name, count);
          ranges.push([end - count + 1n, end]);
        }
      }),
    );
    ranges.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    let next = 1n;
    for (const [from, to] of ranges) {
      expect(from).toBe(next);
      next = to + 1n;
    }
    expect(BigInt((await admin.get(drivers[0]!.counterKey(name)).string()) ?? '0')).toBe(next - 1n);
  });

  it('allocateRange refuses to pass 2^63 - 1 and changes nothing', async () => {
    const d = await driver();
    const name = uniqueKey('ids-max');
    await admin.put(d.counterKey(name)).value((2n ** 63n - 5n).toString());
    expect(await d.allocateRange(name, 4n)).toBe(2n ** 63n - 1n);
    await expect(d.allocateRange(name, 1n)).rejects.toBeInstanceOf(IdsExhaustedError);
    expect(await admin.get(d.counterKey(name)).string()).toBe((2n ** 63n - 1n).toString());
  });
});

describe('etcd session', () => {
  it('reports its state; a lease revoked behind its back aborts the grants it carried, and the next acquisition opens a new lease', async () => {
    const d = await driver(3);
    const locks = new LockClient(d);
    closers.push(locks);
    const states: SessionState[] = [];
    d.onSessionState((s) => states.push(s));
    expect(d.sessionState).toBe('lost');
    const key = uniqueKey('session');
    const a = await locks.acquire(key, { ttlMs: 10_000 });
    const b = await locks.acquire(`${key}:b`, { ttlMs: 10_000 });
    expect(d.sessionState).toBe('connected');
    const first = d.leaseId;
    expect(first).toMatch(/^[0-9a-f]+$/);

    const revokedAt = performance.now();
    await d.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${first}`).toString() });
    // The next keep-alive answer (every TTL/3 = 1 s) says the lease is gone.
    const reasons = await Promise.all(
      [a, b].map((l) => new Promise<unknown>((resolve) => l.signal.addEventListener('abort', () => resolve(l.signal.reason), { once: true }))),
    );
    const lostAfterMs = performance.now() - revokedAt;
    expect(lostAfterMs).toBeLessThan(2500);
    for (const r of reasons) {
      expect(r).toBeInstanceOf(LockLostError);
      expect((r as LockLostError).reason).toBe('session-lost');
    }
    expect(states.at(-1)).toBe('lost');
    expect(d.sessionState).toBe('lost');

    const again = await locks.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
    expect(again.token).toBeGreaterThan(a.token);
    expect(d.leaseId).not.toBe(first);
    expect(d.sessionState).toBe('connected');
    expect(await again.release()).toBe(true);
    await locks.close();
    expect(d.sessionState).toBe('lost');
    expect(states.at(-1)).toBe('lost');
  });

  it('a waiter whose lease is lost enqueues again on a new lease and still gets the lock', async () => {
    const holder = await client();
    const d = await driver(3);
    const waiterClient = new LockClient(d);
    closers.push(waiterClient);
    const key = uniqueKey('requeue');
    const held = await holder.acquire(key, { ttlMs: 10_000 });
    const waiting = waiterClient.acquire(key, { ttlMs: 10_000, waitMs: 15_000 });
    await sleep(300);
    const lost = d.leaseId;
    expect(lost).toBeDefined();
    await d.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${lost}`).toString() });
    await sleep(1500); // the waiter notices and enqueues again
    expect(await held.release()).toBe(true);
    const lease = await waiting;
    expect(d.leaseId).not.toBe(lost);
    expect(lease.token).toBeGreaterThan(held.token);
    expect(await lease.release()).toBe(true);
  });
});

describe('etcd queue', () => {
  it("a waiter whose own key is deleted by someone else queues again at once and gets the lock within its wait", async () => {
    const d = await driver();
    const holder = new LockClient(d);
    closers.push(holder);
    const key = uniqueKey('own-deleted');
    const prefix = Buffer.from(d.lockPrefix(key));
    const end = Buffer.from(`${prefix.toString().slice(0, -1)}0`);
    await ownEntryDeletedCase(holder, await client(), key, {
      // Oldest (the holder) first; named by key and create revision (a re-created key differs).
      entries: async () => {
        const r = await admin.kv.range({ key: prefix, range_end: end, sort_target: SortTarget.Create, sort_order: SortOrder.Ascend, keys_only: true });
        return r.kvs.map((kv) => `${kv.key.toString()}@${kv.create_revision}`);
      },
      remove: async (entry) => {
        await admin.delete().key(entry.slice(0, entry.lastIndexOf('@'))).exec();
      },
    });
  });
});

describe('etcd measurements (README)', () => {
  it('round trip, handoff to one waiter, and contended throughput', async () => {
    const d = await driver();
    const rtt: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t = performance.now();
      await d.inspect('etcd-test:rtt');
      rtt.push(performance.now() - t);
    }

    const a = await client();
    const b = await client();
    const key = uniqueKey('handoff');
    const handoff: number[] = [];
    for (let i = 0; i < 40; i++) {
      const holder = await a.acquire(key, { ttlMs: 10_000 });
      const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 10_000 });
      await sleep(20); // the waiter is queued and watching
      const t0 = performance.now();
      await holder.release();
      const lease = await waiting;
      handoff.push(performance.now() - t0);
      await lease.release();
    }

    const workers = 8;
    const cycles = 25;
    const spec = { mode: 'loop', url: server.url, key: uniqueKey('contended'), cycles, holdMs: 0, ttlMs: 10_000, waitMs: 60_000 } as const;
    const { logs } = await runLockLoops(Array.from({ length: workers }, () => spec), { timeoutMs: 90_000 });
    const sections = sectionsFrom(logs);
    expect(sections).toHaveLength(workers * cycles);
    assertExclusion(sections, { minContended: workers });
    const spanS = Number((sections.at(-1)?.end ?? 0n) - (sections[0]?.start ?? 0n)) / 1e9;
    const waitsMs = sections.map((s) => Number(s.start - s.requestedAt) / 1e6);
    let sameHolderAgain = 0;
    for (let i = 1; i < sections.length; i++) if (sections[i]?.pid === sections[i - 1]?.pid) sameHolderAgain++;

    const figures = {
      rttMs: { p50: pct(rtt, 50), p90: pct(rtt, 90) },
      handoffMs: { p50: pct(handoff, 50), p90: pct(handoff, 90), max: pct(handoff, 100) },
      handoffInRoundTrips: Math.round((pct(handoff, 50) / pct(rtt, 50)) * 10) / 10,
      contended: {
        processes: workers,
        cyclesPerSec: Math.round(sections.length / spanS),
        contendedGrants: contendedGrants(sections),
        waitP50Ms: pct(waitsMs, 50),
        waitMaxMs: pct(waitsMs, 100),
        releaserRetakes: `${Math.round((sameHolderAgain / (sections.length - 1)) * 100)}%`,
      },
    };
    console.info(`[etcd measurements] ${JSON.stringify(figures)}`);
    // A handoff is event-driven: far below any polling interval or TTL.
    expect(pct(handoff, 50)).toBeLessThan(250);
  }, 180_000);
});
