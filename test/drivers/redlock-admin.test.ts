/**
 * Redlock's operator steps on three real nodes: list() gives a key once when a majority holds it
 * (not a minority's partial grant), also when a node gets its copy only after its scan answered;
 * forceRelease() deletes on every node that answers, raises every
 * reachable node's fence counter to the highest seen, tolerates a minority down, and refuses with
 * QuorumError when a majority does not answer. A node whose SCAN fails while its other commands
 * answer does not hide the keys it holds (the next node gives them); more failing scans than a
 * minority: QuorumError.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { QuorumError } from '../../src/errors.js';
import { allPages } from '../support/list-pages.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function nodes(): Promise<RedlockNodes> {
  const n = await startRedlock({ nodes: 3 });
  cleanups.push(() => n.stop());
  return n;
}

function client(url: string): LockClient {
  const c = new LockClient(new RedlockDriver({ url, nodeTimeoutMs: 500 }));
  cleanups.push(() => c.close());
  return c;
}

async function on<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(url, { maxRetriesPerRequest: 0 });
  r.on('error', () => undefined);
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

describe('redlock list() and forceRelease()', () => {
  it('lists a key once when a majority holds it, not a partial grant on one node', async () => {
    const n = await nodes();
    const c = client(n.url);
    const held = await c.acquire('adm:held', { ttlMs: 10_000 });
    // A contender's partial grant: the key on one node only.
    await on(n.nodes[2]!.url, (r) => r.set('dlock:{adm:partial}', 'someone:1:ab:1|7', 'PX', 10_000));
    expect((await c.list('adm:')).map((i) => [i.key, i.holders[0]?.owner])).toEqual([['adm:held', held.owner]]);
    await held.release();
    expect(await c.list('adm:')).toEqual([]);
  });

  it("a copy that lands on a node after that node's scan (a grant's last node answering late) does not hide the key", async () => {
    const n = await nodes();
    const d = new RedlockDriver({ url: n.url, nodeTimeoutMs: 500 });
    const c = new LockClient(d);
    cleanups.push(() => c.close());
    const held = await c.acquire('late:k', { ttlMs: 10_000 });
    // Listing order is by host:port: the first node loses its copy (a majority keeps it) ...
    const sorted = [...n.nodes].sort((a, b) => (`127.0.0.1:${a.port}` < `127.0.0.1:${b.port}` ? -1 : 1));
    const name = 'dlock:{late:k}';
    const value = await on(sorted[0]!.url, async (r) => {
      const v = await r.get(name);
      await r.del(name);
      return v;
    });
    expect(value).not.toBeNull();
    // ... and gets it back right after its scan answered, before the next node is scanned: the
    // key on its way to a node when acquire() resolved. Only the scan is wrapped; the engine is real.
    const first = (d as unknown as { nodes: { label: string; scanNode: () => Promise<{ scan: (...a: [string, string, number]) => Promise<{ cursor: string; keys: string[] }> }> }[] }).nodes.find((x) => x.label === `127.0.0.1:${sorted[0]!.port}`);
    expect(first, 'the first node in listing order').toBeDefined();
    const scanNode = first!.scanNode.bind(first);
    first!.scanNode = async () => {
      const real = await scanNode();
      return {
        ...real,
        scan: async (...a) => {
          const batch = await real.scan(...a);
          await on(sorted[0]!.url, (r) => r.set(name, value!, 'PX', 10_000));
          return batch;
        },
      };
    };
    expect((await c.list('late:')).map((i) => [i.key, i.holders[0]?.owner])).toEqual([['late:k', held.owner]]);
    expect(await held.release()).toBe(true);
  });

  it('a node whose SCAN fails does not hide its keys: the next node gives them; two such nodes: QuorumError', async () => {
    const n = await nodes();
    const c = client(n.url);
    const leases = await Promise.all(['scan:a', 'scan:b', 'scan:c'].map((k) => c.acquire(k, { ttlMs: 30_000 })));
    // Listing order is by host:port; the first node refuses SCAN (and only SCAN: it still answers
    // the checks a later node's keys go through, which used to make them look given already).
    const sorted = [...n.nodes].sort((a, b) => (`127.0.0.1:${a.port}` < `127.0.0.1:${b.port}` ? -1 : 1));
    await on(sorted[0]!.url, (r) => r.call('ACL', 'SETUSER', 'default', '-scan'));
    const d = new RedlockDriver({ url: n.url, nodeTimeoutMs: 500 });
    cleanups.push(() => d.close());
    expect((await c.list('scan:')).map((i) => i.key)).toEqual(['scan:a', 'scan:b', 'scan:c']);
    // Pages follow each node's SCAN order, not key order.
    expect((await allPages(d, 'scan:', 1)).sort()).toEqual(['scan:a', 'scan:b', 'scan:c']);
    await on(sorted[1]!.url, (r) => r.call('ACL', 'SETUSER', 'default', '-scan'));
    await expect(c.list('scan:')).rejects.toBeInstanceOf(QuorumError);
    await Promise.all(leases.map((l) => l.release()));
  });

  it('with one node down: evicts the holder, wakes the waiter, raises every reachable fence; with two down: QuorumError', async () => {
    const n = await nodes();
    const [holder, waiter, admin] = [client(n.url), client(n.url), client(n.url)];
    const lease = await holder.acquire('adm:k', { ttlMs: 30_000 });
    // A higher counter on one node (a contender's partial grant once INCRed it there).
    await on(n.nodes[1]!.url, (r) => r.set('dlock:{adm:k}:fence', String(lease.token + 5n)));
    await n.nodes[0]!.stop();
    const next = waiter.acquire('adm:k', { ttlMs: 10_000, waitMs: 15_000 });
    next.catch(() => undefined); // awaited below
    await sleep(200);
    const forced = await admin.forceRelease('adm:k');
    expect(forced).toEqual({ released: 1, fence: lease.token + 5n });
    for (const node of n.nodes.slice(1)) {
      expect(BigInt((await on(node.url, (r) => r.get('dlock:{adm:k}:fence'))) ?? '0')).toBeGreaterThanOrEqual(forced.fence);
    }
    // Woken by the release published on the nodes (its TTL is 30 s, its wait 15 s).
    const got = await next;
    expect(got.token).toBeGreaterThan(forced.fence);
    await got.release();
    await n.nodes[1]!.stop();
    await expect(admin.forceRelease('adm:k')).rejects.toBeInstanceOf(QuorumError);
  });
});
