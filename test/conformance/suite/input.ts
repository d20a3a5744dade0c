/**
 * Bad input: bad keys and out-of-range options are refused with typed errors naming the option,
 * always as a rejection, never as a synchronous throw.
 */
import { expect, it } from 'vitest';
import { LockClient } from '../../../src/core/client.js';
import type { SuiteContext } from './context.js';
import { errorOf } from './helpers.js';

export function defineInput(ctx: SuiteContext): void {
  const { newClient, newDriver, uniqueKey } = ctx;

  // ---------------------------------------------------------------- bad input

  it('refuses bad keys with TypeError DLOCK_INVALID_ARGUMENT', async () => {
    const c = await newClient();
    for (const bad of ['', 42, null, undefined, {}, ['k']] as unknown as string[]) {
      for (const call of [
        () => c.acquire(bad),
        () => c.tryAcquire(bad),
        () => c.using(bad, () => 1),
        () => c.inspect(bad),
        () => c.inspectAll(bad),
        () => c.forceRelease(bad),
      ]) {
        const e = await errorOf(call);
        expect(e).toBeInstanceOf(TypeError);
        expect(e.code).toBe('DLOCK_INVALID_ARGUMENT');
      }
    }
    expect(c.heldCount).toBe(0);
    // list(): a prefix that is not a string, a limit that is not a whole number >= 1.
    for (const bad of [42, null, {}] as unknown as string[]) {
      const e = await errorOf(() => c.list(bad));
      expect(e).toBeInstanceOf(TypeError);
      expect(e.code).toBe('DLOCK_INVALID_ARGUMENT');
    }
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      const e = await errorOf(() => c.list('', { limit }));
      expect(e).toBeInstanceOf(RangeError);
      expect([e.code, e.option]).toEqual(['DLOCK_OUT_OF_RANGE', 'limit']);
    }
  });

  it('refuses out-of-range ttlMs / waitMs / maxHoldMs / renewRatio with RangeError DLOCK_OUT_OF_RANGE naming the option', async () => {
    const key = uniqueKey('range');
    const c = await newClient();
    const driver = await newDriver();
    const bads = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1.5, 2 ** 31];
    const expectRange = (e: Error & { code?: string; option?: string }, option: string, value: unknown): void => {
      expect(e, `${option}=${String(value)}`).toBeInstanceOf(RangeError);
      expect(e.code).toBe('DLOCK_OUT_OF_RANGE');
      expect(e.option).toBe(option);
      expect(e.message).toContain(option);
    };
    for (const option of ['ttlMs', 'waitMs', 'maxHoldMs'] as const) {
      for (const v of [...bads, ...(option === 'waitMs' ? [] : [0])]) {
        expectRange(await errorOf(() => c.acquire(key, { [option]: v })), option, v);
        expectRange(await errorOf(() => new LockClient(driver, { [option]: v })), option, v);
        if (option !== 'waitMs') expectRange(await errorOf(() => c.tryAcquire(key, { [option]: v })), option, v);
      }
    }
    for (const v of [1, 1.5, 0, -0.1, Number.NaN]) {
      expectRange(await errorOf(() => new LockClient(driver, { renewRatio: v })), 'renewRatio', v);
    }
    // Renewals need time to travel: a tiny TTL with renewal on is refused, without it allowed.
    expectRange(await errorOf(() => c.acquire(key, { ttlMs: 10 })), 'ttlMs', 10);
    // (It may still come back null: a grant whose validity ran out on the way is never reported.)
    const tiny = await c.tryAcquire(key, { ttlMs: 10, renew: false });
    await tiny?.release();
    expect(c.heldCount).toBe(0);
    expect(await c.inspect(key)).toBeNull();
  });

  it('reports bad input as a rejection, never as a synchronous throw', async () => {
    const c = await newClient();
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['acquire', () => c.acquire('')],
      ['tryAcquire', () => c.tryAcquire('')],
      ['tryAcquire ttlMs', () => c.tryAcquire('k', { ttlMs: Number.NaN })],
      ['using', () => c.using('', () => 1)],
      ['inspect', () => c.inspect('')],
      ['inspectAll', () => c.inspectAll('')],
      ['forceRelease', () => c.forceRelease('')],
      ['list prefix', () => c.list(42 as unknown as string)],
      ['list limit', () => c.list('', { limit: 0 })],
    ];
    const sync: string[] = [];
    for (const [name, call] of calls) {
      let p: Promise<unknown> | undefined;
      try {
        p = call();
      } catch {
        sync.push(name);
      }
      if (p) await p.catch(() => undefined);
    }
    expect(sync).toEqual([]);
  });
}
