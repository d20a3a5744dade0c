/**
 * Reentrancy inside using() (and not outside it), and inspect() of a free and a held lock.
 */
import { expect, it } from 'vitest';
import type { SuiteContext } from './context.js';
import { errorOf, expectRemaining, hostTag } from './helpers.js';

export function defineReentrancyInspect(ctx: SuiteContext): void {
  const { newClient, uniqueKey } = ctx;

  // ---------------------------------------------------------------- reentrancy

  it('reentrant acquire re-enters inside using(); without reentrant the nested acquire times out', async () => {
    const key = uniqueKey('reentrant');
    const c = await newClient();
    const other = await newClient();
    await c.using(key, { reentrant: true, ttlMs: 5000 }, async (outer) => {
      const inner = await c.acquire(key, { reentrant: true, waitMs: 500 });
      expect(inner.token).toBe(outer.token);
      expect(inner.holdCount).toBe(2);
      expect(outer.holdCount).toBe(2);
      // Another client never re-enters this client's hold.
      expect(await other.tryAcquire(key, { reentrant: true })).toBeNull();
      expect(await inner.release()).toBe(true);
      expect(outer.holdCount).toBe(1);
      expect(outer.isHeld()).toBe(true);
      const state = await other.inspect(key);
      expect(state?.owner).toBe(outer.owner);
      expect(state?.token).toBe(outer.token);
    });
    expect(await other.inspect(key)).toBeNull();

    await c.using(key, { ttlMs: 5000 }, async (outer) => {
      const err = await errorOf(() => c.acquire(key, { waitMs: 300 }));
      expect(err.code).toBe('DLOCK_TIMEOUT');
      expect(outer.isHeld()).toBe(true);
      expect(outer.holdCount).toBe(1);
    });
    expect(await other.inspect(key)).toBeNull();

    // Outside any using()/run() scope, reentrant does not re-enter.
    const plain = await c.acquire(key, { ttlMs: 5000 });
    expect((await errorOf(() => c.acquire(key, { reentrant: true, waitMs: 200 }))).code).toBe('DLOCK_TIMEOUT');
    expect(await plain.release()).toBe(true);
    expect(c.heldCount).toBe(0);
  });

  // ---------------------------------------------------------------- inspect

  it('inspect: null when free; owner, holder, token and remaining TTL when held', async () => {
    const key = uniqueKey('inspect');
    const c = await newClient();
    const other = await newClient();
    expect(await other.inspect(key)).toBeNull();
    const ttlMs = 5000;
    const lease = await c.acquire(key, { ttlMs });
    const info = await other.inspect(key);
    expect(info).not.toBeNull();
    expect(info?.key).toBe(key);
    expect(info?.owner).toBe(lease.owner);
    expect(info?.holder?.pid).toBe(process.pid);
    expect(info?.holder?.host).toBe(hostTag);
    expect(info?.token).toBe(lease.token);
    expectRemaining(info?.remainingMs, ttlMs, other.driver);
    expect(await lease.release()).toBe(true);
    expect(await other.inspect(key)).toBeNull();
  });
}
