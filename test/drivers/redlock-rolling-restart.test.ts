/**
 * Redlock through a rolling restart of its nodes, on real independent redis-servers without
 * persistence: each node in turn is killed (-9) and started again empty, the others stay up,
 * with a pause longer than a renewal interval between two restarts (issue 10).
 *
 * Renewal restores the key on a node that lost it (set if absent, never over another owner), so
 * the holder keeps a majority throughout: its signal never aborts, a contender trying all along
 * never gets the lock, every node holds it again at the end, and the next holder's fencing token
 * is still above the holder's although every node's counter was wiped once.
 *
 * Before the fix, renewal refreshed only the nodes that still held the key: after the second
 * restart only a minority held it, the lease was lost and a contender could take the lock.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { withRedisClient } from '../support/redis.js';
import { startRedlock } from '../support/redlock.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

function client(url: string, opts: ConstructorParameters<typeof LockClient>[1] = {}): { locks: LockClient; driver: RedlockDriver } {
  const driver = new RedlockDriver({ url });
  const locks = new LockClient(driver, opts);
  cleanups.push(() => locks.close());
  return { locks, driver };
}

/**
 * TTL 6 s, renewals every 1 s (renewRatio 1/6): the pause after each restart (3 s) spans two or
 * three of them, and a renewal may come 2 s late on a loaded machine before the next restart.
 */
const TTL_MS = 6000;
const RENEW_RATIO = 1 / 6;
const PAUSE_MS = 3000;

async function rollingRestart(count: number): Promise<void> {
  const nodes = await startRedlock({ nodes: count });
  cleanups.push(() => nodes.stop());
  const key = `rolling-${count}`;
  const holder = client(nodes.url, { ttlMs: TTL_MS, renewRatio: RENEW_RATIO });
  // Counters well above what the contender's failed tries can push a wiped counter to (each
  // try on an empty node increments it), so that a token that went back would show.
  const lock = holder.driver.lockKey(key);
  await Promise.all(nodes.nodes.map((n) => withRedisClient(n.port, (r) => r.set(`${lock}:fence`, '1000'))));
  const lease = await holder.locks.acquire(key);
  let abortedWith: unknown;
  lease.signal.addEventListener('abort', () => (abortedWith = lease.signal.reason ?? 'aborted'));

  // A contender tries all along; it must never get the lock.
  const contender = client(nodes.url, { ttlMs: TTL_MS, renew: false });
  const stolen: bigint[] = [];
  let contending = true;
  const contend = (async () => {
    while (contending) {
      const l = await contender.locks.tryAcquire(key).catch(() => null);
      if (l) {
        stolen.push(l.token);
        await l.release().catch(() => false);
      }
      await sleep(250);
    }
  })();

  for (const node of nodes.nodes) {
    await node.kill9();
    await node.restart({ empty: true });
    await sleep(PAUSE_MS);
  }
  contending = false;
  await contend;

  expect({ aborted: lease.signal.aborted, reason: abortedWith, stolen }).toEqual({ aborted: false, reason: undefined, stolen: [] });
  expect(lease.isHeld()).toBe(true);
  expect(lease.token).toBe(1001n);
  // Every node holds it again (restored), with the holder's token: at least a majority must.
  const values = await Promise.all(nodes.nodes.map((n) => withRedisClient(n.port, (r) => r.get(lock))));
  const ours = values.filter((v) => v?.startsWith(`${lease.owner}|${lease.token}`)).length;
  expect(ours, `values on the nodes: ${JSON.stringify(values)}`).toBeGreaterThanOrEqual(holder.driver.quorum);
  expect(ours).toBe(count);

  // Fencing never goes back: every counter was wiped once, yet the next token is higher.
  expect(await lease.release()).toBe(true);
  const next = await contender.locks.acquire(key, { waitMs: 5000 });
  expect(next.token).toBeGreaterThan(lease.token);
  await next.release();
}

describe('redlock survives a rolling restart of its nodes (no persistence)', () => {
  it('3 nodes, restarted empty one at a time: the lease holds, nobody else gets the lock, tokens keep rising', async () => {
    await rollingRestart(3);
  }, 120_000);

  it('5 nodes, restarted empty one at a time: the same', async () => {
    await rollingRestart(5);
  }, 180_000);
});
