/**
 * Many concurrent waiters on one client (a semaphore's tasks each waiting on every permit, or
 * plain acquires of distinct busy keys) must not make Node print MaxListenersExceededWarning:
 * dlock adds one abort listener per wait to signals of its own, and library code never writes to
 * the console (found by examples/semaphore-pool.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { Semaphore } from '../../src/primitives/semaphore.js';

let warnings: Error[] = [];
const onWarning = (w: Error): void => void warnings.push(w);
beforeEach(() => {
  warnings = [];
  process.on('warning', onWarning);
});
afterEach(() => {
  process.off('warning', onWarning);
});

/** Node emits 'warning' on the next tick after the listener was added. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

describe('many waiters on one client', () => {
  it('20 acquires waiting on distinct busy keys, with and without a signal', async () => {
    const locks = new LockClient(new MemoryDriver(), { ttlMs: 5000 });
    const held = await Promise.all(Array.from({ length: 20 }, (_, i) => locks.acquire(`k${i}`)));
    // Each wait has a signal of its own (one signal shared by 20 waits would be the caller's 20 listeners).
    const waits = held.flatMap((_, i) => [
      locks.acquire(`k${i}`, { waitMs: 10_000, signal: new AbortController().signal }).then((l) => l.release()),
      locks.acquire(`k${i}`, { waitMs: 10_000 }).then((l) => l.release()),
    ]);
    await settle();
    for (const l of held) await l.release();
    await Promise.all(waits);
    await settle();
    await locks.close();
    expect(warnings.map((w) => w.name + ': ' + w.message)).toEqual([]);
  });

  it('12 tasks on a 16-permit semaphore whose permits are all busy', async () => {
    const locks = new LockClient(new MemoryDriver(), { ttlMs: 5000 });
    const sem = new Semaphore(locks, 'api', { permits: 16 });
    const taken = await Promise.all(Array.from({ length: 16 }, () => sem.acquire()));
    const waits = Array.from({ length: 12 }, () => sem.using({ waitMs: 10_000 }, () => undefined));
    await settle();
    for (const p of taken) await p.release();
    await Promise.all(waits);
    await settle();
    await locks.close();
    expect(warnings.map((w) => w.name + ': ' + w.message)).toEqual([]);
  });
});
