/**
 * etcd faults on a real 3-member cluster (loopback, short election timeout):
 * 1. kill -9 of the Raft leader while a lock is held and waiters queue: exclusion holds, the queue
 *    keeps its order, no grant is stale (each grant is valid when reported, tokens increase);
 * 2. kill -9 of the holder's process: its lock is freed by etcd once its lease TTL runs out (not
 *    before), the queued waiter gets it, with a higher fencing token.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { Lease } from '../../src/core/lease.js';
import { EtcdDriver } from '../../src/drivers/etcd/index.js';
import { assertExclusion, sectionsFrom } from '../support/checkers.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import type { LogEntry } from '../support/protocol.js';
import { forkWorker, killWorkers, startTogether } from '../support/workers.js';

let cluster: EtcdCluster;
const clients: LockClient[] = [];

beforeAll(async () => {
  cluster = await startEtcdCluster({ query: 'leaseTtlS=1' });
});
afterEach(async () => {
  await killWorkers();
  await Promise.allSettled(clients.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await cluster.dispose();
});

/** A client on every member of the cluster, its connection open. */
async function client(leaseTtlS: number): Promise<LockClient> {
  const driver = new EtcdDriver({ hosts: [...cluster.endpoints], leaseTtlS });
  await driver.inspect('faults:connect');
  const c = new LockClient(driver);
  clients.push(c);
  return c;
}

const uniqueKey = (name: string): string => `faults:${name}:${randomBytes(4).toString('hex')}`;
const now = (): string => process.hrtime.bigint().toString();

async function countKeys(prefix: string): Promise<number> {
  const admin = new Etcd3({ hosts: cluster.members.filter((m) => m.running).map((m) => m.endpoint) });
  try {
    return await admin.getAll().prefix(prefix).count();
  } finally {
    admin.close();
  }
}

describe('etcd on a 3-member cluster', () => {
  it('kill -9 of the leader while held with a queue: exclusion, FIFO order, no stale grant', async () => {
    const key = uniqueKey('leader');
    // 5 s leases: an election (~0.5-1 s here) and the clients' reconnects fit well inside.
    const holderClient = await client(5);
    const waiters = await Promise.all([0, 1, 2, 3].map(() => client(5)));
    const holder = await holderClient.acquire(key, { ttlMs: 10_000 });
    const log: LogEntry[] = [];
    const order: number[] = [];
    const stale: string[] = [];
    const tokens: bigint[] = [];
    const runs: Promise<void>[] = [];
    for (const [i, c] of waiters.entries()) {
      runs.push(
        (async () => {
          log.push({ pid: i, op: 'lock', phase: 'request', t: now(), cycle: 0 });
          const lease: Lease = await c.acquire(key, { ttlMs: 10_000, waitMs: 40_000 });
          log.push({ pid: i, op: 'lock', phase: 'acquired', t: now(), token: lease.token.toString(), cycle: 0 });
          order.push(i);
          tokens.push(lease.token);
          // No stale grant: valid when reported, and etcd names this owner as the holder.
          if (!lease.isHeld()) stale.push(`waiter ${i}: reported but not held`);
          const seen = await c.inspect(key);
          if (seen?.owner !== lease.owner) stale.push(`waiter ${i}: etcd says the holder is ${seen?.owner}`);
          await sleep(30);
          const end = now();
          const stillHeld = lease.isHeld();
          const releaseOk = await lease.release();
          log.push({ pid: i, op: 'lock', phase: 'released', t: end, token: lease.token.toString(), cycle: 0, stillHeld, releaseOk });
        })(),
      );
      await sleep(150); // arrival order is unambiguous
    }
    const prefix = new EtcdDriver({ hosts: [...cluster.endpoints] }).lockPrefix(key);
    expect(await countKeys(prefix)).toBe(5); // the holder and four queued waiters

    const leader = await cluster.leader();
    await leader.kill9();
    const killedAt = performance.now();
    const next = await cluster.leader();
    const electedMs = Math.round(performance.now() - killedAt);
    expect(next.name).not.toBe(leader.name);
    expect(holder.isHeld()).toBe(true);
    expect(await holder.release()).toBe(true);
    await Promise.all(runs);
    const doneMs = Math.round(performance.now() - killedAt);
    console.info(`[etcd faults] leader ${leader.name} killed: new leader ${next.name} after ${electedMs} ms; 4 queued grants done ${doneMs} ms after the kill`);

    expect(order).toEqual([0, 1, 2, 3]);
    expect(stale).toEqual([]);
    const sections = sectionsFrom(log);
    expect(sections).toHaveLength(4);
    assertExclusion(sections, { minContended: 3 });
    expect(sections.filter((s) => s.stillHeld !== true || s.releaseOk !== true)).toEqual([]);
    expect(tokens[0]).toBeGreaterThan(holder.token);
    expect(await countKeys(prefix)).toBe(0);

    await leader.restart();
  }, 90_000);

  it('kill -9 of the holder process: freed after its lease TTL, the queued waiter gets it with a higher token', async () => {
    const key = uniqueKey('holder');
    const worker = forkWorker({ mode: 'hold', url: cluster.url, key, ttlMs: 1000 });
    await startTogether([worker]);
    const held = await worker.next('held', 30_000);
    const c = await client(5);
    const waiting = c.acquire(key, { ttlMs: 10_000, waitMs: 20_000 });
    await sleep(500); // queued behind the worker, which keeps renewing
    expect((await c.inspect(key))?.holder?.pid).toBe(worker.pid);

    process.kill(worker.pid, 'SIGKILL');
    await worker.exited;
    const killedAt = performance.now();
    const lease = await waiting;
    const freedMs = performance.now() - killedAt;
    console.info(`[etcd faults] holder killed: lock granted to the waiter ${Math.round(freedMs)} ms later (lease TTL 1 s)`);
    // Not at once (the lease outlives the process by up to its TTL, at least TTL - keep-alive
    // interval), and not long after (TTL + etcd's 0.5 s expiry sweep + handoff).
    expect(freedMs).toBeGreaterThan(300);
    expect(freedMs).toBeLessThan(3500);
    expect(lease.token).toBeGreaterThan(BigInt(held.token));
    expect((await c.inspect(key))?.owner).toBe(lease.owner);
    expect(await lease.release()).toBe(true);
  }, 60_000);
});
