/**
 * Ownership and fencing: only the owner releases or extends (also after expiry, never touching
 * the next holder), tokens strictly increase, marks are raised only while held and never lowered.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { LockClient } from '../../../src/core/client.js';
import { markStoreOf } from '../../../src/drivers/id-store.js';
import { UnavailableError } from '../../../src/errors.js';
import type { SuiteContext } from './context.js';

export function defineReleaseAndTokens(ctx: SuiteContext): void {
  const { factory, newClient, newDriver, uniqueKey } = ctx;

  // ---------------------------------------------------------------- ownership

  it('never lets a non-owner release or extend, and release answers the same every time', async () => {
    const key = uniqueKey('owner');
    const a = await newClient();
    const foreign = await newDriver();
    const lease = await a.acquire(key, { ttlMs: 10_000 });

    expect(await foreign.release(key, 'someone-else')).toBe(false);
    expect(lease.isHeld()).toBe(true);
    expect(await foreign.extend([{ key, owner: 'someone-else', ttlMs: 60_000 }])).toEqual([false]);
    const state = await a.inspect(key);
    expect(state?.owner).toBe(lease.owner);
    expect(state?.token).toBe(lease.token);
    // The foreign extend did not lengthen the holder's TTL.
    expect(state?.remainingMs).toBeLessThanOrEqual(10_000);

    expect(await lease.release()).toBe(true);
    expect(await lease.release()).toBe(true);
    expect(await foreign.release(key, lease.owner)).toBe(false);
    expect(await a.inspect(key)).toBeNull();
  });

  it('a release or extend of an expired lease never touches the next holder', async () => {
    const key = uniqueKey('expired-release');
    const a = await newClient();
    const b = await newClient();
    const foreign = await newDriver();
    const old = await a.acquire(key, { ttlMs: 200, renew: false });
    await sleep(400);
    expect(old.isHeld()).toBe(false);
    const next = await b.tryAcquire(key, { ttlMs: 10_000 });
    expect(next).not.toBeNull();
    if (!next) return;
    expect(next.token).toBeGreaterThan(old.token);

    expect(await old.release()).toBe(false);
    expect(await old.release()).toBe(false);
    expect(await foreign.release(key, old.owner)).toBe(false);
    expect(await foreign.extend([{ key, owner: old.owner, ttlMs: 60_000 }])).toEqual([false]);
    const state = await b.inspect(key);
    expect(state?.owner).toBe(next.owner);
    expect(state?.token).toBe(next.token);
    expect(state?.remainingMs).toBeLessThanOrEqual(10_000);
    expect(next.isHeld()).toBe(true);
    expect(await next.release()).toBe(true);
  });

  it('release() of a lease that ran past its deadline answers false and leaves no hold of its owner on the engine', async () => {
    const key = uniqueKey('late-release');
    const a = await newClient();
    const lease = await a.acquire(key, { ttlMs: 300, renew: false });
    // The process stalls past the lease's deadline (no timer of the client runs meanwhile), then
    // releases at once: the client finds the lease lost there and gives the key back. Session
    // engines keep the key as long as the session lives, so only that give-back frees it.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
    expect(await lease.release()).toBe(false);
    expect(await a.inspect(key)).toBeNull();
    expect(await a.tryAcquire(key, { ttlMs: 10_000 })).not.toBeNull();
  });

  it('a release the engine did not answer is retried in the background: the key is free long before its TTL', async () => {
    // The engine is real; only the first release request fails on its way, as one sent to an
    // isolated etcd member does while the session is kept alive through the others.
    const key = uniqueKey('release-retry');
    const driver = await newDriver();
    let failures = 1;
    const flaky = new Proxy(driver, {
      get(target, prop) {
        if (prop === 'release') {
          return async (k: string, owner: string) => {
            if (failures-- > 0) throw Object.assign(new Error('connect ECONNRESET (injected into the first release request)'), { code: 'ECONNRESET' });
            return target.release(k, owner);
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const a = new LockClient(flaky);
    try {
      const lease = await a.acquire(key, { ttlMs: 60_000 });
      await expect(lease.release()).rejects.toBeInstanceOf(UnavailableError);
      expect(lease.isHeld()).toBe(false);
      const b = await newClient();
      // Without the retry the key stays until its 60 s TTL (a session engine: while the session lives).
      const next = await b.acquire(key, { waitMs: 10_000 });
      expect(next.token).toBeGreaterThan(lease.token);
      expect(failures).toBeLessThan(0);
      expect(await next.release()).toBe(true);
    } finally {
      await a.close();
    }
  });

  // ---------------------------------------------------------------- tokens

  it('tokens strictly increase across clients and across a driver re-open', async () => {
    const key = uniqueKey('tokens');
    const a = await newClient();
    const b = await newClient();
    const tokens: bigint[] = [];
    for (let i = 0; i < 4; i++) {
      for (const c of [a, b]) {
        const lease = await c.acquire(key, { ttlMs: 5000 });
        expect(typeof lease.token).toBe('bigint');
        tokens.push(lease.token);
        expect(await lease.release()).toBe(true);
      }
    }
    await a.close();
    await b.close();
    const reopened = await newClient();
    const lease = await reopened.acquire(key, { ttlMs: 5000 });
    tokens.push(lease.token);
    await lease.release();
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1] ?? 0n);
  });

  it('marks: raised only while held, never lowered, kept after release and across a driver re-open', async () => {
    const key = uniqueKey('mark');
    const d = markStoreOf(await newDriver());
    if (!d) throw new Error(`${factory.name} must implement readMark/raiseMark (worker-id leases need them)`);
    expect(await d.readMark(key)).toBe(0n);
    expect(await d.raiseMark(key, 'nobody:1:aa:1', 5n)).toBe(false);
    const grant = await d.tryAcquire({ key, owner: 'host:1:aa:1', ttlMs: 5000 });
    expect(grant.ok).toBe(true);
    expect(await d.raiseMark(key, 'someone-else:2:bb:1', 99n)).toBe(false);
    expect(await d.readMark(key)).toBe(0n);
    const big = 2n ** 62n + 12345n; // beyond 2^53: marks are exact bigints
    expect(await d.raiseMark(key, 'host:1:aa:1', big)).toBe(true);
    expect(await d.raiseMark(key, 'host:1:aa:1', 7n)).toBe(true);
    expect(await d.readMark(key)).toBe(big);
    expect(await d.release(key, 'host:1:aa:1')).toBe(true);
    expect(await d.raiseMark(key, 'host:1:aa:1', big + 1n)).toBe(false);
    const again = markStoreOf(await newDriver());
    expect(await again?.readMark(key)).toBe(big);
  });
}
