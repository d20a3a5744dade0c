/**
 * MultiLock on real engines: overlapping key sets taken in opposite orders by concurrent clients
 * neither deadlock nor overlap; every failure leaves nothing held; one signal for the set.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LockAbortedError, LockLostError, LockTimeoutError } from '../../src/errors.js';
import { MultiLock } from '../../src/primitives/multi-lock.js';
import { primitiveEngines } from './engines.js';

const engines = primitiveEngines();
const prefix = (): string => `multi:${randomBytes(4).toString('hex')}:`;

describe.each(engines)('MultiLock on $name', (engine) => {
  it('overlapping sets taken in opposite orders by 6 concurrent clients: no deadlock, never two holders of a key', async () => {
    const p = prefix();
    const all = ['a', 'b', 'c', 'd'].map((k) => p + k);
    const inside = new Map(all.map((k) => [k, 0]));
    let violations = 0;
    let waiting = 0;
    let maxWaiting = 0;
    let grants = 0;
    const clients = await Promise.all(Array.from({ length: 6 }, () => engine.client({ ttlMs: 5000 })));
    await Promise.all(
      clients.map(async (client, i) => {
        for (let round = 0; round < 12; round++) {
          // Random subsets of two or three keys, listed forwards or backwards.
          const pick = all.filter((_, j) => (i + round + j) % 4 !== 0 || j === round % 4).slice(0, 2 + ((i + round) % 2));
          const keys = i % 2 === 0 ? pick : [...pick].reverse();
          waiting += 1;
          maxWaiting = Math.max(maxWaiting, waiting);
          const held = await new MultiLock(client, keys).acquire({ waitMs: 30_000 });
          waiting -= 1;
          grants += 1;
          expect(held.keys).toEqual([...keys].sort());
          for (const k of held.keys) {
            const n = (inside.get(k) ?? 0) + 1;
            inside.set(k, n);
            if (n > 1) violations += 1;
          }
          await sleep(1 + (round % 3));
          for (const k of held.keys) inside.set(k, (inside.get(k) ?? 1) - 1);
          expect(await held.release()).toBe(true);
        }
      }),
    );
    expect(grants).toBe(72);
    expect(violations).toBe(0);
    // The clients really contended: several waited at the same time.
    expect(maxWaiting).toBeGreaterThanOrEqual(3);
    for (const k of all) expect(await clients[0]!.inspect(k)).toBeNull();
  }, 90_000);

  it('when one key stays busy, the wait ends with LockTimeoutError for that key and the keys already taken are released', async () => {
    const p = prefix();
    const [holder, taker] = [await engine.client(), await engine.client()];
    const busy = await holder.acquire(`${p}c`, { ttlMs: 10_000 });
    const multi = new MultiLock(taker, [`${p}c`, `${p}a`, `${p}b`]);
    const err = await multi.acquire({ waitMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).key).toBe(`${p}c`);
    expect((err as LockTimeoutError).waitMs).toBe(300);
    expect(await holder.inspect(`${p}a`)).toBeNull();
    expect(await holder.inspect(`${p}b`)).toBeNull();
    expect(taker.heldCount).toBe(0);
    expect(await busy.release()).toBe(true);
  });

  it('tryAcquire answers null when any key is busy (nothing left held), else holds all with one token per key', async () => {
    const p = prefix();
    const [holder, taker] = [await engine.client(), await engine.client()];
    const busy = await holder.acquire(`${p}b`);
    const multi = new MultiLock(taker, [`${p}a`, `${p}b`, `${p}a`]);
    expect(multi.keys).toEqual([`${p}a`, `${p}b`]);
    expect(await multi.tryAcquire()).toBeNull();
    expect(await holder.inspect(`${p}a`)).toBeNull();
    await busy.release();
    const held = await multi.tryAcquire();
    expect(held).not.toBeNull();
    expect(held!.isHeld()).toBe(true);
    expect([...held!.tokens.keys()]).toEqual([`${p}a`, `${p}b`]);
    expect(held!.tokenOf(`${p}b`)).toBeGreaterThan(busy.token);
    expect(() => held!.tokenOf('nope')).toThrow(InvalidArgumentError);
    expect((await holder.inspect(`${p}a`))?.owner).toBe(held!.leases[0]!.owner);
    expect(await held!.release()).toBe(true);
    expect(await held!.release()).toBe(true); // idempotent
    expect(held!.isHeld()).toBe(false);
    expect(await holder.inspect(`${p}b`)).toBeNull();
  });

  it('an aborted wait rejects with LockAbortedError and leaves nothing held', async () => {
    const p = prefix();
    const [holder, taker] = [await engine.client(), await engine.client()];
    const busy = await holder.acquire(`${p}z`);
    const ac = new AbortController();
    const pending = new MultiLock(taker, [`${p}y`, `${p}z`]).acquire({ waitMs: 10_000, signal: ac.signal });
    await sleep(100);
    ac.abort(new Error('stop'));
    await expect(pending).rejects.toBeInstanceOf(LockAbortedError);
    expect(await holder.inspect(`${p}y`)).toBeNull();
    expect(taker.heldCount).toBe(0);
    await busy.release();
  });

  it("one signal for the set: it aborts with the lost lock's reason; using() releases everything", async () => {
    const p = prefix();
    const client = await engine.client();
    let reason: unknown;
    await new MultiLock(client, [`${p}1`, `${p}2`]).using({ ttlMs: 200, maxHoldMs: 400 }, async (held) => {
      expect(held.signal.aborted).toBe(false);
      await new Promise<void>((resolve) => held.signal.addEventListener('abort', () => resolve(), { once: true }));
      reason = held.signal.reason;
      expect(held.isHeld()).toBe(false);
    });
    expect(reason).toBeInstanceOf(LockLostError);
    expect((reason as LockLostError).reason).toBe('max-hold');
    expect(client.heldCount).toBe(0);
  });

  it('refuses bad input with InvalidArgumentError', async () => {
    const client = await engine.client();
    expect(() => new MultiLock(client, [])).toThrow(InvalidArgumentError);
    expect(() => new MultiLock(client, ['a', ''])).toThrow(InvalidArgumentError);
    expect(() => new MultiLock(client, 'ab')).toThrow(InvalidArgumentError);
    expect(() => new MultiLock(client, [1 as unknown as string])).toThrow(InvalidArgumentError);
  });
});
