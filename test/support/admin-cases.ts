/**
 * Operator cases (list() and forceRelease()) shared by the queue engines' driver tests (ZooKeeper,
 * etcd): a key whose queue is longer than a page is listed once, and a force-release of every
 * semaphore permit holder hands the permits to the waiter queued behind them.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { Lease } from '../../src/core/lease.js';
import type { LockDriver } from '../../src/drivers/driver.js';
import { Semaphore } from '../../src/primitives/semaphore.js';

export function defineQueueAdminCases(newDriver: () => LockDriver): void {
  const closers: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((c) => c()));
  });
  const ctx = {
    driver: (): Promise<LockDriver> => {
      const d = newDriver();
      closers.push(() => d.close());
      return Promise.resolve(d);
    },
    client: (): Promise<LockClient> => {
      const c = new LockClient(newDriver());
      closers.push(() => c.close());
      return Promise.resolve(c);
    },
  };
  it('list: a key with more queued contenders than a page holds is listed once, beside the other keys', async () => {
    const tag = `q-${randomBytes(3).toString('hex')}:`;
    const holder = await ctx.client();
    const busy = await holder.acquire(`${tag}busy`, { ttlMs: 10_000 });
    const others = await Promise.all(['a', 'z'].map((k) => holder.acquire(`${tag}${k}`, { ttlMs: 10_000 })));
    const waiters = await Promise.all([1, 2, 3, 4].map(() => ctx.client()));
    const waits: Array<Promise<Lease>> = [];
    for (const w of waiters) {
      const p = w.acquire(`${tag}busy`, { ttlMs: 10_000, waitMs: 20_000 });
      p.catch(() => undefined); // awaited below
      waits.push(p);
      await sleep(150); // queued one after the other (FIFO engines serve them in this order)
    }
    const d = await ctx.driver();
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 20; pages++) {
      const page = await d.list(tag, { limit: 2, ...(cursor === undefined ? {} : { cursor }) });
      expect(page.keys.length).toBeLessThanOrEqual(2);
      seen.push(...page.keys);
      cursor = page.cursor;
      if (cursor === undefined) break;
    }
    expect(cursor).toBeUndefined();
    expect(seen.sort()).toEqual([`${tag}a`, `${tag}busy`, `${tag}z`]);
    const [info] = await holder.list(`${tag}busy`);
    expect(info?.holders.map((h) => h.owner)).toEqual([busy.owner]);
    // Each force-release hands the key to the next waiter in line: it never strands one.
    let last = busy;
    for (const wait of waits) {
      const r = await holder.forceRelease(`${tag}busy`);
      expect(r.released).toBe(1);
      expect(r.fence).toBeGreaterThanOrEqual(last.token);
      const next = await wait;
      expect(next.token).toBeGreaterThan(last.token);
      last = next;
    }
    await last.release();
    await Promise.all(others.map((l) => l.release()));
  });

  it('forceRelease: evicts every permit holder of a semaphore at once; the waiter for all permits gets them', async () => {
    const name = `sem-${randomBytes(3).toString('hex')}`;
    const a = await ctx.client();
    const b = await ctx.client();
    const w = await ctx.client();
    const admin = await ctx.client();
    const p1 = await new Semaphore(a, name, { permits: 3 }).acquire({ permits: 2, ttlMs: 10_000 });
    const p2 = await new Semaphore(b, name, { permits: 3 }).acquire({ permits: 1, ttlMs: 10_000 });
    const all = new Semaphore(w, name, { permits: 3 }).acquire({ permits: 3, ttlMs: 10_000, waitMs: 15_000 });
    all.catch(() => undefined); // awaited below
    await sleep(300);
    const listed = await admin.list(name);
    expect(listed.map((i) => [i.key, i.holders.length])).toEqual([[name, 2]]);
    const result = await admin.forceRelease(name);
    expect(result.released).toBe(2);
    const top = p1.token > p2.token ? p1.token : p2.token;
    expect(result.fence).toBeGreaterThanOrEqual(top);
    const granted = await all;
    expect(granted.token).toBeGreaterThan(top);
    const [after] = await admin.list(name);
    expect(after?.holders.map((h) => h.owner)).toEqual([granted.owner]);
    await granted.release();
  });
}
