/**
 * The core's pass-on (src/core/pass-on.ts, TrySetDriver.passOn): a release the driver answers
 * `'left'` (left to bargers while a queue head waits for its turn) is passed on at the next
 * event-loop turn, unless the client asks for that key again first, and before the driver closes.
 * The driver here is the in-process memory engine with its release answering `'left'` and a
 * recording `passOn`; the Redis driver's own `'left'` and `passOn` are tested on Redis in
 * test/drivers/redis-admission.test.ts.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { PassOn } from '../../src/core/pass-on.js';
import type { TrySetDriver } from '../../src/drivers/driver.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';

/** Memory engine whose releases say "left to bargers", with a passOn; records passOn calls and the close. */
function leavingDriver(): TrySetDriver & { log: string[] } {
  const memory = new MemoryDriver();
  const log: string[] = [];
  const release = memory.release.bind(memory);
  const close = memory.close.bind(memory);
  const driver: TrySetDriver = memory;
  driver.release = async (key, owner) => ((await release(key, owner)) ? 'left' : false);
  driver.passOn = (key) => {
    log.push(`passOn ${key}`);
    return Promise.resolve();
  };
  driver.close = async () => {
    log.push('close');
    await close();
  };
  return Object.assign(driver, { log });
}

describe('core pass-on', () => {
  it('a key left to bargers is passed on at the next turn, not before', async () => {
    const driver = leavingDriver();
    const passOn = new PassOn(driver);
    const held = await driver.tryAcquire({ key: 'k', owner: 'a', ttlMs: 10_000 });
    expect(held.ok).toBe(true);
    expect(await passOn.release('k', 'a')).toBe(true);
    // In the release's continuation: nothing sent yet.
    expect(driver.log).toEqual([]);
    expect(passOn.pending).toBe(1);
    await nextTurn();
    await nextTurn();
    expect(driver.log).toEqual(['passOn k']);
    expect(passOn.pending).toBe(0);
    await driver.close();
  });

  it('asking for the key again in the continuation keeps it: no pass-on for that key, the others go', async () => {
    const driver = leavingDriver();
    const passOn = new PassOn(driver);
    await driver.tryAcquire({ key: 'k', owner: 'a', ttlMs: 10_000 });
    await driver.tryAcquire({ key: 'j', owner: 'b', ttlMs: 10_000 });
    await Promise.all([passOn.release('k', 'a'), passOn.release('j', 'b')]);
    passOn.asked('k');
    await nextTurn();
    await nextTurn();
    expect(driver.log).toEqual(['passOn j']);
    await driver.close();
  });

  it('flush() passes on at once; the turn after sends nothing more', async () => {
    const driver = leavingDriver();
    const passOn = new PassOn(driver);
    await driver.tryAcquire({ key: 'k', owner: 'a', ttlMs: 10_000 });
    await passOn.release('k', 'a');
    await passOn.flush();
    expect(driver.log).toEqual(['passOn k']);
    await nextTurn();
    await nextTurn();
    expect(driver.log).toEqual(['passOn k']);
    await driver.close();
  });

  it('a driver without passOn: a "left" release is a release, nothing more is sent', async () => {
    const driver = leavingDriver();
    delete driver.passOn;
    const passOn = new PassOn(driver);
    await driver.tryAcquire({ key: 'k', owner: 'a', ttlMs: 10_000 });
    expect(await passOn.release('k', 'a')).toBe(true);
    await nextTurn();
    await nextTurn();
    expect(passOn.pending).toBe(0);
    expect(driver.log).toEqual([]);
    await driver.close();
  });

  it('through the client: release() resolves true and passes on; an acquire in the continuation keeps the key; close() passes on before the driver closes', async () => {
    const driver = leavingDriver();
    const client = new LockClient(driver, { renew: false });
    const first = await client.acquire('k');
    expect(await first.release()).toBe(true);
    await nextTurn();
    await nextTurn();
    expect(driver.log).toEqual(['passOn k']);

    // A loop that re-acquires at once (waiting acquire, then a single try on another key).
    const again = await client.acquire('k');
    await again.release();
    const third = await client.acquire('k', { waitMs: 1000 });
    const other = await client.acquire('j');
    await other.release();
    const tried = await client.tryAcquire('j');
    await nextTurn();
    await nextTurn();
    expect(driver.log).toEqual(['passOn k']);

    // Still held at close(): close releases them and passes them on before the driver closes.
    expect(tried).not.toBeNull();
    expect(third.isHeld()).toBe(true);
    await client.close();
    expect(driver.log).toEqual(['passOn k', 'passOn k', 'passOn j', 'close']);
  });
});
