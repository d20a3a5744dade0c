/**
 * The operator's view: list() of held keys (in bounded pages) and forceRelease() of a stuck
 * holder, whose evicted lease is told at its next renewal and whose fencing token is never reused.
 */
import { expect, it } from 'vitest';
import { ReadWriteLock } from '../../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../../src/primitives/semaphore.js';
import { allPages } from '../../support/list-pages.js';
import type { SuiteContext } from './context.js';
import { whenAborted } from './helpers.js';

export function defineAdmin(ctx: SuiteContext): void {
  const { newClient, newDriver, uniqueKey } = ctx;

  it('list: every held key under a prefix, sorted, with holders; released keys leave the list', async () => {
    const prefix = `${uniqueKey('list')}:`;
    const c = await newClient();
    const other = await newClient();
    const b = await c.acquire(`${prefix}b`, { ttlMs: 10_000 });
    const a = await c.acquire(`${prefix}a`, { ttlMs: 10_000 });
    // Outside the prefix (a key that merely shares its first characters is not under it).
    const outside = await c.acquire(`${prefix.slice(0, -1)}x`, { ttlMs: 10_000 });
    const listed = await other.list(prefix);
    expect(listed.map((i) => i.key)).toEqual([`${prefix}a`, `${prefix}b`]);
    expect(listed[0]!.holders.map((h) => [h.owner, h.token])).toEqual([[a.owner, a.token]]);
    expect(listed[1]!.holders.map((h) => [h.owner, h.token])).toEqual([[b.owner, b.token]]);
    expect(listed[0]!.mode).toBe('exclusive');
    expect(await a.release()).toBe(true);
    expect((await other.list(prefix)).map((i) => i.key)).toEqual([`${prefix}b`]);
    await b.release();
    await outside.release();
    expect(await other.list(prefix)).toEqual([]);
  });

  it('list: the driver answers in bounded pages that together name every held key once', async () => {
    const prefix = `${uniqueKey('pages')}:`;
    const c = await newClient();
    const names = Array.from({ length: 7 }, (_, i) => `${prefix}${String(i).padStart(2, '0')}`);
    const leases = await Promise.all(names.map((n) => c.acquire(n, { ttlMs: 10_000 })));
    const d = await newDriver();
    expect(typeof d.list).toBe('function');
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await d.list(prefix, { limit: 3, ...(cursor === undefined ? {} : { cursor }) });
      expect(page.keys.length).toBeLessThanOrEqual(3);
      seen.push(...page.keys);
      cursor = page.cursor;
      pages++;
      expect(pages).toBeLessThan(50);
    } while (cursor !== undefined);
    expect([...new Set(seen)].sort()).toEqual(names);
    expect(seen.length).toBe(names.length);
    expect(pages).toBeGreaterThanOrEqual(3);
    // The client's limit stops early.
    expect((await c.list(prefix, { limit: 2 })).length).toBe(2);
    await Promise.all(leases.map((l) => l.release()));
  });

  it('forceRelease: frees a held key, wakes its waiter with a greater token, and the evicted lease is told', async () => {
    const key = uniqueKey('force');
    const holder = await newClient();
    const waiter = await newClient();
    const admin = await newClient();
    const ttlMs = 1500;
    const evicted = await holder.acquire(key, { ttlMs });
    const lost = whenAborted(evicted.signal, ttlMs * 3);
    lost.catch(() => undefined); // awaited below
    const next = waiter.acquire(key, { ttlMs: 10_000, waitMs: 15_000 });
    next.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    // Let the waiter queue up before the eviction.
    await new Promise((r) => setTimeout(r, 200));
    const result = await admin.forceRelease(key);
    expect(result.released).toBe(1);
    expect(result.fence).toBeGreaterThanOrEqual(evicted.token);
    const granted = await next;
    expect(granted.token).toBeGreaterThan(evicted.token);
    expect(granted.token).toBeGreaterThan(result.fence - 1n);
    // The evicted holder learns it at its next renewal (a third of the TTL), before its TTL ends.
    const { reason } = await lost;
    expect((reason as { code?: string }).code).toBe('DLOCK_LOCK_LOST');
    // Told by the engine (its renewal found the hold gone), not a local expiry.
    expect(['not-held', 'session-lost']).toContain((reason as { reason?: string }).reason);
    expect(evicted.isHeld()).toBe(false);
    // A fenced resource (keeps the highest token it saw) now rejects the evicted holder's write.
    let highest = 0n;
    const write = (token: bigint): boolean => (token >= highest ? ((highest = token), true) : false);
    expect(write(granted.token)).toBe(true);
    expect(write(evicted.token)).toBe(false);
    // Its release does not touch the new holder's lock.
    expect(await evicted.release()).toBe(false);
    expect((await admin.inspect(key))?.owner).toBe(granted.owner);
    await granted.release();
  });

  it('forceRelease: a free key is left as it was (nothing created), and tokens never go back', async () => {
    const key = uniqueKey('force-free');
    const c = await newClient();
    const first = await c.acquire(key, { ttlMs: 10_000 });
    const t1 = first.token;
    await first.release();
    const free = await c.forceRelease(key);
    expect(free.released).toBe(0);
    expect(await c.inspect(key)).toBeNull();
    expect((await c.list(key)).map((i) => i.key)).toEqual([]);
    const again = await c.acquire(key, { ttlMs: 10_000 });
    expect(again.token).toBeGreaterThan(t1);
    expect((await c.forceRelease(key)).released).toBe(1);
    const third = await c.acquire(key, { ttlMs: 10_000 });
    expect(third.token).toBeGreaterThan(again.token);
    await third.release();
  });

  it('forceRelease: removes every reader of a read-write lock at once, and each reader\'s lease is told', async (t) => {
    const probe = await newDriver();
    if (!(probe.info.modes ?? ['exclusive']).includes('shared')) t.skip(`${probe.info.name} does not grant shared holds (info.modes)`);
    const name = uniqueKey('force-readers');
    const r1 = await newClient();
    const r2 = await newClient();
    const admin = await newClient();
    // A short TTL: each reader's next renewal comes a third of it later.
    const a = await new ReadWriteLock(r1, name).read.acquire({ ttlMs: 1500 });
    const b = await new ReadWriteLock(r2, name).read.acquire({ ttlMs: 1500 });
    const lost = [a, b].map((l) => whenAborted(l.signal, 5000));
    for (const p of lost) p.catch(() => undefined); // awaited below
    const listed = await admin.list(name);
    expect(listed.map((i) => [i.key, i.mode, i.holders.length])).toEqual([[name, 'shared', 2]]);
    expect((await admin.forceRelease(name)).released).toBe(2);
    expect(await admin.inspect(name)).toBeNull();
    // Each evicted reader is told (by its renewal, or its ended session).
    for (const { reason } of await Promise.all(lost)) expect(['not-held', 'session-lost']).toContain((reason as { reason?: string }).reason);
    const w = await new ReadWriteLock(admin, name).write.acquire({ ttlMs: 10_000, waitMs: 5000 });
    expect(w.token).toBeGreaterThan(a.token > b.token ? a.token : b.token);
    await w.release();
  });

  it('list: readers, permit holders (permits and limit) and queued waiters, and pages over keys of every mode', async (t) => {
    const probe = await newDriver();
    const modes = probe.info.modes ?? ['exclusive'];
    if (!modes.includes('shared')) t.skip(`${probe.info.name} grants exclusive holds only (info.modes)`);
    // Engines that keep a queue count a waiter; fairness 'none' (Redlock) keeps none.
    const queued = probe.info.fairness === 'none' ? 0 : 1;
    const prefix = `${uniqueKey('modes')}:`;
    const [r1, r2, w, admin] = await Promise.all([newClient(), newClient(), newClient(), newClient()]);
    const rw = `${prefix}rw`;
    const sem = `${prefix}sem`;
    const x = `${prefix}x`;
    const a = await new ReadWriteLock(r1, rw).read.acquire({ ttlMs: 10_000 });
    const b = await new ReadWriteLock(r2, rw).read.acquire({ ttlMs: 10_000 });
    const permits = modes.includes('permits');
    const p2 = permits ? await new Semaphore(r1, sem, { permits: 3 }).acquire({ permits: 2, ttlMs: 10_000 }) : undefined;
    const p1 = permits ? await new Semaphore(r2, sem, { permits: 3 }).acquire({ permits: 1, ttlMs: 10_000 }) : undefined;
    const ex = await r1.acquire(x, { ttlMs: 10_000 });
    const writer = new ReadWriteLock(w, rw).write.acquire({ ttlMs: 10_000, waitMs: 15_000 });
    writer.catch(() => undefined); // awaited below
    // The writer queues behind the readers (polled: on a loaded machine its try may come late).
    if (queued > 0) await expect.poll(async () => (await admin.inspectAll(rw)).waiters, { timeout: 10_000 }).toBe(queued);
    else await new Promise((r) => setTimeout(r, 300));
    const keys = permits ? [rw, sem, x] : [rw, x];
    const listed = await admin.list(prefix);
    expect(listed.map((i) => i.key)).toEqual(keys);
    const byKey = new Map(listed.map((i) => [i.key, i]));
    const readers = byKey.get(rw)!;
    expect([readers.mode, readers.waiters]).toEqual(['shared', queued]);
    expect(readers.holders.map((h) => [h.owner, h.token, h.mode]).sort()).toEqual([[a.owner, a.token, 'shared'], [b.owner, b.token, 'shared']].sort());
    for (const h of readers.holders) expect(h.remainingMs === -1 || (h.remainingMs > 0 && h.remainingMs <= 10_000)).toBe(true);
    if (p1 && p2) {
      const s = byKey.get(sem)!;
      expect([s.mode, s.limit, s.waiters]).toEqual(['permits', 3, 0]);
      expect(s.holders.map((h) => [h.owner, h.permits]).sort()).toEqual([[p2.owner, 2], [p1.owner, 1]].sort());
    }
    expect(byKey.get(x)!.holders.map((h) => [h.owner, h.mode])).toEqual([[ex.owner, 'exclusive']]);
    // The driver's pages (one key each) name every key once, whatever mode holds it.
    expect((await allPages(probe, prefix, 1)).sort()).toEqual(keys);
    await Promise.all([a.release(), b.release()]);
    const wl = await writer;
    const [after] = await admin.list(rw);
    expect([after?.mode, after?.holders.map((h) => h.owner), after?.waiters]).toEqual(['exclusive', [wl.owner], 0]);
    await Promise.all([wl.release(), ex.release(), p1?.release(), p2?.release()]);
    expect(await admin.list(prefix)).toEqual([]);
  });
}
