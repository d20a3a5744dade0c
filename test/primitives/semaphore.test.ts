/**
 * Semaphore on real engines: never more than `permits` holders while more contenders overlap,
 * waits end in a grant when a permit frees, every failure leaves nothing held.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LockAbortedError, LockTimeoutError } from '../../src/errors.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { primitiveEngines } from './engines.js';

const engines = primitiveEngines();
const semName = (): string => `sem:${randomBytes(4).toString('hex')}`;

describe.each(engines)('Semaphore on $name', (engine) => {
  it('8 clients x 8 rounds on 3 permits: at most 3 holders at any time, and more than one at once', async () => {
    const name = semName();
    let inside = 0;
    let maxInside = 0;
    let grants = 0;
    const clients = await Promise.all(Array.from({ length: 8 }, () => engine.client({ ttlMs: 5000 })));
    await Promise.all(
      clients.map(async (client) => {
        const sem = new Semaphore(client, name, { permits: 3 });
        for (let round = 0; round < 8; round++) {
          await sem.using({ waitMs: 30_000 }, async (permit) => {
            inside += 1;
            maxInside = Math.max(maxInside, inside);
            expect(sem.keys).toContain(permit.key);
            await sleep(5);
            inside -= 1;
            grants += 1;
          });
        }
      }),
    );
    expect(grants).toBe(64);
    expect(maxInside).toBeLessThanOrEqual(3);
    expect(maxInside).toBeGreaterThanOrEqual(2);
    console.info(`[semaphore:${engine.name}] 64 grants, at most ${maxInside} holders at once (3 permits)`);
    expect(await new Semaphore(clients[0]!, name, { permits: 3 }).holders()).toEqual([]);
    for (const c of clients) expect(c.heldCount).toBe(0);
  }, 90_000);

  it('tryAcquire answers null when every permit is taken; a waiter gets the permit that frees; holders() lists them', async () => {
    const name = semName();
    const [a, b] = [await engine.client(), await engine.client()];
    const semA = new Semaphore(a, name, { permits: 2 });
    const semB = new Semaphore(b, name, { permits: 2 });
    const p1 = await semA.acquire();
    const p2 = await semA.acquire();
    // One key per permit, or (drivers with the permits mode) one key for the semaphore.
    expect(new Set([p1.key, p2.key]).size).toBe(semA.construction === 'per-permit' ? 2 : 1);
    expect(await semB.tryAcquire()).toBeNull();
    expect((await semB.holders()).map((h) => h.owner).sort()).toEqual([p1.owner, p2.owner].sort());
    const waiting = semB.acquire({ waitMs: 10_000 });
    await sleep(100);
    expect(await p2.release()).toBe(true);
    const got = await waiting;
    expect(got.key).toBe(p2.key);
    expect(got.token).toBeGreaterThan(p2.token);
    // The waiter waited on both permits and kept one: nothing else is held by it.
    await sleep(100);
    expect(b.heldCount).toBe(1);
    await Promise.all([p1.release(), got.release()]);
    expect(await semA.holders()).toEqual([]);
  });

  it('a wait that runs out throws LockTimeoutError naming the semaphore; an aborted one LockAbortedError; nothing left held', async () => {
    const name = semName();
    const [a, b] = [await engine.client(), await engine.client()];
    const held = await new Semaphore(a, name, { permits: 1 }).acquire();
    const sem = new Semaphore(b, name, { permits: 1 });
    const err = await sem.acquire({ waitMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).key).toBe(name);
    const ac = new AbortController();
    const pending = sem.acquire({ waitMs: 10_000, signal: ac.signal });
    await sleep(100);
    ac.abort(new Error('stop'));
    await expect(pending).rejects.toBeInstanceOf(LockAbortedError);
    expect(b.heldCount).toBe(0);
    expect((await sem.holders()).map((h) => h.owner)).toEqual([held.owner]);
    await held.release();
  });

  it('refuses bad input with InvalidArgumentError', async () => {
    const client = await engine.client();
    const perPermit = !client.driver.info.modes?.includes('permits');
    for (const permits of [1.5, Number.NaN, '3', ...(perPermit ? [0, -1, 2000] : [])]) {
      expect(() => new Semaphore(client, 's', { permits: permits as number })).toThrow(InvalidArgumentError);
    }
    // With the permits mode: up to MAX_LIMIT; out of range is an OutOfRangeError (a RangeError).
    if (!perPermit) for (const permits of [0, -1, 2 ** 41]) expect(() => new Semaphore(client, 's', { permits })).toThrow(RangeError);
    expect(() => new Semaphore(client, '', { permits: 1 })).toThrow(InvalidArgumentError);
    expect(() => new Semaphore(client, 's', undefined as unknown as { permits: number })).toThrow(InvalidArgumentError);
  });
});
