/**
 * Redlock under node faults, on real independent redis-servers:
 * - 5 nodes, 2 killed: locks are still granted and exclusive; 3 killed: a QuorumError within the
 *   wait that lists what each node answered;
 * - a node restarted without persistence inside the TTL: two holders at once (the documented
 *   hazard), and the two mitigations that prevent it (appendfsync always; a delayed restart);
 * - replies delayed past the TTL (test/support/delay-proxy.ts): no grant with expired validity
 *   is ever reported, and partial grants are removed at once;
 * - read-write locks: nodes down to a minority grant neither side (QuorumError, the live node's
 *   partial grant removed); a reader admitted only by a node the writer's majority lacks is
 *   refused, and the rollback removes its own entry there, never the writer's; renewal restores
 *   a read hold on a node restarted empty; a waiting writer is not starved by overlapping readers.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { driftFor, monotonicNow } from '../../src/core/clock.js';
import type { Lease } from '../../src/core/lease.js';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { QuorumError } from '../../src/errors.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { assertExclusion, sectionsFrom } from '../support/checkers.js';
import { startDelayProxy, type DelayProxy } from '../support/delay-proxy.js';
import type { LogEntry } from '../support/protocol.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function nodesOf(count: number, persistence: 'none' | 'fsync-always' = 'none'): Promise<RedlockNodes> {
  const n = await startRedlock({ nodes: count, persistence });
  cleanups.push(() => n.stop());
  return n;
}

function client(url: string, opts: ConstructorParameters<typeof LockClient>[1] = {}): LockClient {
  const c = new LockClient(new RedlockDriver({ url }), opts);
  cleanups.push(() => c.close());
  return c;
}

/** The raw value of the lock key on one node (through a connection of its own), or null. */
async function valueOn(url: string, lock: string): Promise<string | null> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return await r.get(lock);
  } finally {
    r.disconnect();
  }
}

/** Four clients in this process, `cycles` acquisitions each, logged for the overlap checker. */
async function contend(clients: readonly LockClient[], key: string, cycles: number): Promise<LogEntry[]> {
  const log: LogEntry[] = [];
  const t = (): string => process.hrtime.bigint().toString();
  await Promise.all(
    clients.map(async (c, pid) => {
      for (let cycle = 0; cycle < cycles; cycle++) {
        log.push({ pid, op: 'lock', phase: 'request', t: t(), cycle });
        const lease = await c.acquire(key, { ttlMs: 5000, waitMs: 30_000 });
        log.push({ pid, op: 'lock', phase: 'acquired', t: t(), token: lease.token.toString(), cycle });
        await sleep(2);
        const end = t();
        const stillHeld = lease.isHeld();
        const releaseOk = await lease.release();
        log.push({ pid, op: 'lock', phase: 'released', t: end, token: lease.token.toString(), cycle, stillHeld, releaseOk });
      }
    }),
  );
  return log;
}

describe('redlock over 5 nodes with nodes killed', () => {
  it('with 2 of 5 killed, locks are still granted, exclusive, with increasing tokens', async () => {
    const nodes = await nodesOf(5);
    await nodes.nodes[1]?.kill9();
    await nodes.nodes[3]?.kill9();
    const clients = [0, 1, 2, 3].map(() => client(nodes.url));
    const sections = sectionsFrom(await contend(clients, 'k2of5', 8));
    expect(sections).toHaveLength(32);
    assertExclusion(sections, { minContended: 3 });
    expect(sections.filter((s) => s.stillHeld !== true || s.releaseOk !== true)).toEqual([]);
  }, 60_000);

  it('with 3 of 5 killed, acquire fails within its wait with a QuorumError listing every node', async () => {
    const nodes = await nodesOf(5);
    const c = client(nodes.url);
    // Connections are up before the kill (the realistic case: nodes die under a running app).
    expect(await (await c.acquire('warm', { ttlMs: 5000 })).release()).toBe(true);
    const killed = [0, 2, 4];
    await Promise.all(killed.map(async (i) => nodes.nodes[i]?.kill9()));

    const waitMs = 1500;
    const start = performance.now();
    const err = await c.acquire('k3of5', { ttlMs: 5000, waitMs }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const took = performance.now() - start;
    expect(err).toBeInstanceOf(QuorumError);
    const q = err as QuorumError;
    expect(q.code).toBe('DLOCK_UNAVAILABLE');
    expect(q.quorum).toBe(3);
    expect(q.answers).toHaveLength(5);
    expect(q.answers.map((a) => a.node)).toEqual(nodes.nodes.map((n) => `127.0.0.1:${n.port}`));
    for (const [i, a] of q.answers.entries()) expect(a.answer, JSON.stringify(a)).toBe(killed.includes(i) ? 'unreachable' : 'granted');
    expect(q.message).toMatch(/needs 3 of 5 nodes and got 2/);
    expect(took).toBeGreaterThanOrEqual(waitMs - 5);
    expect(took).toBeLessThan(waitMs + 2500);

    // tryAcquire answers at once, with the same per-node detail.
    const t2 = performance.now();
    const err2 = await c.tryAcquire('k3of5-try').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err2).toBeInstanceOf(QuorumError);
    expect(performance.now() - t2).toBeLessThan(1500);
    // The partial grants on the two live nodes were released, not left to expire.
    const lock = new RedlockDriver({ url: nodes.url }).lockKey('k3of5-try');
    await sleep(50);
    for (const i of [1, 3]) expect(await valueOn(nodes.nodes[i]?.url ?? '', lock)).toBeNull();
  }, 60_000);
});

/** Every shared holder entry of `lock` on one node (`<lock>:h`, see redlock-ops.lua). */
async function sharedOn(url: string, lock: string): Promise<Record<string, string>> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return await r.hgetall(`${lock}:h`);
  } finally {
    r.disconnect();
  }
}

describe('redlock read-write locks and a minority of nodes (N = 3)', () => {
  it('with 2 of 3 nodes down, neither a reader nor a writer is granted, and the live node keeps nothing', async () => {
    const nodes = await nodesOf(3);
    const c = client(nodes.url);
    const rw = new ReadWriteLock(c, 'rw-minority');
    // Connections up first, and a read hold that really worked on the majority.
    const warm = await rw.read.acquire({ ttlMs: 5000 });
    expect(await warm.release()).toBe(true);
    await nodes.nodes[0]?.kill9();
    await nodes.nodes[2]?.kill9();
    for (const side of [rw.read, rw.write]) {
      const err = await side.acquire({ ttlMs: 5000, waitMs: 600 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, side.mode).toBeInstanceOf(QuorumError);
      const q = err as QuorumError;
      expect(q.answers.map((a) => a.answer)).toEqual(['unreachable', 'granted', 'unreachable']);
      await expect(side.tryAcquire({ ttlMs: 5000 })).rejects.toBeInstanceOf(QuorumError);
    }
    expect(c.heldCount).toBe(0);
    // The one node that admitted them had its partial grants given back at once.
    const lock = new RedlockDriver({ url: nodes.url }).lockKey('rw-minority');
    await sleep(50);
    expect(await valueOn(nodes.nodes[1]?.url ?? '', lock)).toBeNull();
    expect(await sharedOn(nodes.nodes[1]?.url ?? '', lock)).toEqual({});
  }, 30_000);

  it('a writer on nodes 1+2: a reader admitted only by node 3 is refused, and rolls back only its own entry there', async () => {
    const nodes = await nodesOf(3);
    const key = 'rw-split';
    const lock = new RedlockDriver({ url: nodes.url }).lockKey(key);
    await nodes.nodes[2]?.kill9();
    // No renewal: it would restore the writer on node 3 (see the driver's header).
    const w = client(nodes.url, { renew: false });
    const write = await new ReadWriteLock(w, key).write.acquire({ ttlMs: 10_000 });
    await nodes.nodes[2]?.restart({ empty: true });
    const r = client(nodes.url);
    const readers = new ReadWriteLock(r, key);
    // Node 3 admits the reader, nodes 1 and 2 refuse it: busy, not an error, no grant.
    expect(await readers.read.tryAcquire({ ttlMs: 10_000 })).toBeNull();
    await sleep(50);
    // Node 3 did admit it (its counter moved), and the rollback removed that entry.
    expect(Number(await valueOn(nodes.nodes[2]?.url ?? '', `${lock}:fence`))).toBeGreaterThan(0);
    expect(await sharedOn(nodes.nodes[2]?.url ?? '', lock)).toEqual({});
    expect(await valueOn(nodes.nodes[2]?.url ?? '', lock)).toBeNull();
    for (const i of [0, 1]) expect((await valueOn(nodes.nodes[i]?.url ?? '', lock))?.startsWith(`${write.owner}|`)).toBe(true);
    expect(write.isHeld()).toBe(true);
    expect(await write.release()).toBe(true);
    // Now readers share it on every node, and a writer is refused by the majority they hold.
    const r1 = await readers.read.acquire({ ttlMs: 10_000, waitMs: 5000 });
    const r2 = await new ReadWriteLock(client(nodes.url), key).read.tryAcquire({ ttlMs: 10_000 });
    expect(r2).not.toBeNull();
    expect(r1.token).toBeGreaterThan(write.token);
    expect(r2!.token).not.toBe(r1.token);
    expect(await new ReadWriteLock(w, key).write.tryAcquire({ ttlMs: 10_000 })).toBeNull();
    expect((await r.inspectAll(key)).holders.map((h) => h.owner).sort()).toEqual([r1.owner, r2!.owner].sort());
    await Promise.all([r1.release(), r2!.release()]);
  }, 30_000);
});

describe('redlock read-write locks: a waiting writer stops new readers (N = 3)', () => {
  it('a writer gets in although overlapping readers keep arriving, and no reader is inside while it writes', async () => {
    const nodes = await nodesOf(3);
    const key = 'rw-writer-first';
    let stop = false;
    let inside = 0;
    let writing = false;
    let besideWriter = 0;
    /** Reads granted while the writer waited. */
    let overtook = 0;
    let waiting = false;
    // Three readers in turn, each re-entering at once: some reader always holds a majority, so
    // without the waiting writer's flag the key would never be free for it.
    const readers = [0, 1, 2].map(async (i) => {
      const rw = new ReadWriteLock(client(nodes.url), key);
      await sleep(i * 7);
      while (!stop) {
        await rw.read.using({ ttlMs: 5000, waitMs: 20_000 }, async () => {
          inside += 1;
          if (writing) besideWriter += 1;
          if (waiting) overtook += 1;
          await sleep(25);
          inside -= 1;
        });
      }
    });
    const deadline = performance.now() + 5000;
    while (inside === 0 && performance.now() < deadline) await sleep(5);
    expect(inside).toBeGreaterThan(0);
    waiting = true;
    const seen = await new ReadWriteLock(client(nodes.url), key).write.using({ ttlMs: 5000, waitMs: 15_000 }, async () => {
      waiting = false;
      writing = true;
      const atStart = inside;
      await sleep(20);
      writing = false;
      return atStart;
    });
    stop = true;
    await Promise.all(readers);
    expect(seen).toBe(0);
    expect(besideWriter).toBe(0);
    // Only reads already on their way when the writer's first try landed (without the flag:
    // hundreds, until the readers happen to leave the key free at once).
    console.info(`[redlock] reads granted while the writer waited: ${overtook}`);
    expect(overtook).toBeLessThanOrEqual(12);
  }, 40_000);
});

describe('redlock read-write locks and a node restarted empty (N = 3)', () => {
  it('renewal restores a read hold as a shared entry on the node that forgot it; a writer stays out', async () => {
    const nodes = await nodesOf(3);
    const key = 'rw-restore';
    const lock = new RedlockDriver({ url: nodes.url }).lockKey(key);
    const read = await new ReadWriteLock(client(nodes.url), key).read.acquire({ ttlMs: 1500 });
    await nodes.nodes[0]?.restart({ empty: true });
    expect(await sharedOn(nodes.nodes[0]?.url ?? '', lock)).toEqual({});
    // A renewal (every 500 ms) reaches nodes 2 and 3, finds node 1 free and restores it there.
    const deadline = performance.now() + 5000;
    while (!(read.owner in (await sharedOn(nodes.nodes[0]?.url ?? '', lock))) && performance.now() < deadline) await sleep(100);
    expect(Object.keys(await sharedOn(nodes.nodes[0]?.url ?? '', lock))).toEqual([read.owner]);
    expect(await valueOn(nodes.nodes[0]?.url ?? '', lock)).toBe('|h');
    await nodes.nodes[1]?.restart({ empty: true });
    // Nodes 1 and 3 still hold the read: a writer has no majority, the reader keeps its lease.
    expect(await new ReadWriteLock(client(nodes.url), key).write.tryAcquire({ ttlMs: 5000 })).toBeNull();
    expect(read.isHeld()).toBe(true);
    expect(await read.release()).toBe(true);
  }, 30_000);
});

describe('redlock and a node that restarts inside the TTL (N = 3)', () => {
  /**
   * Put holder A on nodes 1 and 2 only: node 3 is down while A acquires, then comes back (with
   * whatever data it kept). Returns A's lease (TTL 10 s, no renewal so that nothing repairs it).
   */
  async function holderOnNodes12(nodes: RedlockNodes, key: string): Promise<{ a: LockClient; lease: Lease }> {
    await nodes.nodes[2]?.kill9();
    const a = client(nodes.url, { renew: false });
    const lease = await a.acquire(key, { ttlMs: 10_000 });
    await nodes.nodes[2]?.restart();
    return { a, lease };
  }

  it('HAZARD: without persistence, node 2 restarted empty lets B hold the lock while A still holds it', async () => {
    const nodes = await nodesOf(3, 'none');
    const key = 'hazard';
    const { lease: a } = await holderOnNodes12(nodes, key);
    await nodes.nodes[1]?.restart({ empty: true });
    const b = client(nodes.url, { renew: false });
    const bLease = await b.tryAcquire(key, { ttlMs: 10_000 });
    // Two holders at once: this is why nodes must keep their data (or stay down past the TTL).
    expect(bLease).not.toBeNull();
    expect(a.isHeld()).toBe(true);
    expect(bLease?.isHeld()).toBe(true);
    // And the fencing token went back (node 2 and node 3 both forgot the counter).
    expect(bLease?.token).toBeLessThanOrEqual(a.token);
  }, 60_000);

  it('MITIGATION appendfsync always: node 2 restarts with the lock, so B is refused until A releases', async () => {
    const nodes = await nodesOf(3, 'fsync-always');
    const key = 'fsync';
    const { lease: a } = await holderOnNodes12(nodes, key);
    await nodes.nodes[1]?.restart(); // kill -9, restart: reloads the AOF
    const b = client(nodes.url, { renew: false });
    expect(await b.tryAcquire(key, { ttlMs: 10_000 })).toBeNull();
    expect(a.isHeld()).toBe(true);
    // Let A's connection to the restarted node come back (ioredis retries within 1 s), so that
    // its release reaches a majority.
    await sleep(1200);
    expect(await a.release()).toBe(true);
    const bLease = await b.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
    expect(bLease.token).toBeGreaterThan(a.token);
  }, 60_000);

  it('MITIGATION delayed restart: node 2 kept down past the TTL; B gets the lock only after A lost it', async () => {
    const nodes = await nodesOf(3, 'none');
    const key = 'delayed';
    const ttlMs = 1500;
    await nodes.nodes[2]?.kill9();
    const aClient = client(nodes.url, { renew: false });
    const a = await aClient.acquire(key, { ttlMs });
    await nodes.nodes[2]?.restart();
    const downAt = monotonicNow();
    await nodes.nodes[1]?.kill9();
    const b = client(nodes.url, { renew: false });
    // While node 2 is down: node 1 is A's, node 3 is free, node 2 unreachable: no majority for B.
    expect(await b.tryAcquire(key, { ttlMs: 10_000 })).toBeNull();
    // Restart only once the longest TTL has passed.
    await sleep(Math.max(0, ttlMs + 200 - (monotonicNow() - downAt)));
    await nodes.nodes[1]?.restart({ empty: true });
    const bLease = await b.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
    expect(a.isHeld()).toBe(false);
    expect(a.signal.aborted).toBe(true);
    expect(bLease.isHeld()).toBe(true);
  }, 60_000);
});

describe('redlock with replies delayed (TCP proxy in front of every node)', () => {
  async function delayed(): Promise<{ nodes: RedlockNodes; proxies: DelayProxy[]; url: string }> {
    const nodes = await nodesOf(3);
    const proxies = await Promise.all(nodes.nodes.map((n) => startDelayProxy(n.port)));
    cleanups.push(() => Promise.all(proxies.map((p) => p.close())));
    return { nodes, proxies, url: `redlock://${proxies.map((p) => `127.0.0.1:${p.port}`).join(',')}` };
  }

  it('never reports a grant whose validity is gone, whatever the delay', async () => {
    const { proxies, url } = await delayed();
    const d = new RedlockDriver({ url });
    cleanups.push(() => d.close());
    const ttlMs = 400;
    const validFor = ttlMs - driftFor(ttlMs);
    const outcomes: Array<{ oneWayMs: number; granted: number; refused: number; errors: number }> = [];
    // One-way delays: round trips from 0 to 1.5 x TTL.
    for (const oneWayMs of [0, 60, 150, 190, 205, 300]) {
      for (const p of proxies) p.setDelay(oneWayMs);
      const row = { oneWayMs, granted: 0, refused: 0, errors: 0 };
      for (let i = 0; i < 3; i++) {
        const owner = `h:1:delay${oneWayMs}:${i}`;
        const key = `delay:${oneWayMs}:${i}`;
        const sentAt = monotonicNow();
        try {
          const r = await d.tryAcquire({ key, owner, ttlMs });
          const at = monotonicNow();
          if (r.ok) {
            row.granted++;
            // Reported only with validity left, counted from when the request was sent. (The
            // driver checks just before it resolves; `at` is read a few microtasks later, so allow
            // for this process being descheduled in between on a loaded machine.)
            expect(r.grant.sentAt).toBeGreaterThanOrEqual(sentAt);
            expect(at).toBeLessThan(r.grant.sentAt + validFor + 25);
            await d.release(key, owner);
          } else row.refused++;
        } catch (e) {
          expect(e).toBeInstanceOf(QuorumError);
          row.errors++;
        }
      }
      outcomes.push(row);
    }
    console.info(`[redlock] delayed replies (TTL ${ttlMs} ms): ${JSON.stringify(outcomes)}`);
    // Short delays grant; a round trip beyond the TTL never does.
    expect(outcomes.find((o) => o.oneWayMs === 0)?.granted).toBe(3);
    expect(outcomes.find((o) => o.oneWayMs === 60)?.granted).toBe(3);
    for (const o of outcomes.filter((x) => 2 * x.oneWayMs >= validFor)) expect(o.granted, JSON.stringify(o)).toBe(0);
    for (const p of proxies) p.setDelay(0);
  }, 60_000);

  it('a client acquire with replies slower than its round gets no lease, and partial grants are removed at once', async () => {
    const { nodes, proxies } = await delayed();
    // Rounds give up on a node after 300 ms, far below the 5 s TTL: a release before the TTL is
    // then visibly a release, not an expiry.
    const url = `redlock://${proxies.map((p) => `127.0.0.1:${p.port}`).join(',')}?nodeTimeoutMs=300`;
    const ttlMs = 5000;
    const oneWayMs = 1200;
    // Node 3 answers at once; nodes 1 and 2 only after the round's deadline.
    proxies[0]?.setDelay(oneWayMs);
    proxies[1]?.setDelay(oneWayMs);
    const c = client(url);
    const start = performance.now();
    const err = await c.acquire('slow', { ttlMs, waitMs: 500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(performance.now() - start).toBeLessThan(500 + 1500);
    expect(err).toBeInstanceOf(QuorumError);
    const q = err as QuorumError;
    expect(q.answers.map((a) => a.answer)).toEqual(['unreachable', 'unreachable', 'granted']);
    expect(q.answers[0]?.detail).toMatch(/no answer within 300 ms/);
    expect(c.heldCount).toBe(0);
    const lock = new RedlockDriver({ url: nodes.url }).lockKey('slow');
    // Node 3's partial grants were released as each round failed (the last round ends 300 ms
    // after it started at the latest), long before their 5 s TTL.
    await sleep(400);
    expect(await valueOn(nodes.nodes[2]?.url ?? '', lock)).toBeNull();
    // The delayed requests reach nodes 1 and 2 after 1.2 s, each followed by its release: once
    // those have gone through, nothing is left anywhere, still long before any TTL ran out.
    await sleep(2 * oneWayMs);
    for (const n of nodes.nodes) expect(await valueOn(n.url, lock)).toBeNull();
    expect(performance.now() - start).toBeLessThan(ttlMs + oneWayMs);
  }, 60_000);
});
