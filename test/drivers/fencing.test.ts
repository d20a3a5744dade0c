/**
 * Fencing in practice on Redis (the paused-holder cases, test/support/paused-holder-cases.ts): a
 * holder paused (SIGSTOP) past its TTL must not be able to overwrite or repeat the newer holder's
 * update. With FencedRedisHash's fenced reads no increment is lost and the stale write is refused;
 * the control run (plain reads with peek(), fenced writes) loses one, proving the check can see it.
 * Also the helper's own contract: read-and-advance, refused reads, peek().
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { FencedRedisHash } from '../../src/drivers/redis/index.js';
import { StaleTokenError } from '../../src/errors.js';
import { describePausedHolder } from '../support/paused-holder-cases.js';

describePausedHolder({ name: 'redis', url: () => inject('redisUrl'), counter: 'redis', ttlMs: 600, longPauseMs: 900, longReason: 'expired' });

describe('FencedRedisHash', () => {
  const redis = new Redis(inject('redisUrl'));
  afterAll(() => redis.disconnect());
  const fresh = () => new FencedRedisHash(redis, `fenced-hash:${Math.random().toString(16).slice(2)}`);

  it('read(token) raises the fence, so a lower token can no longer write', async () => {
    const h = fresh();
    await h.write(5n, { n: 1 });
    expect(await h.read(7n)).toEqual({ n: '1' });
    expect(await h.highest()).toBe(7n);
    await expect(h.write(6n, { n: 2 })).rejects.toMatchObject({ code: 'DLOCK_STALE_TOKEN', operation: 'write', token: 6n, highest: 7n });
    await h.write(7n, { n: 2 });
    expect(await h.peek()).toEqual({ n: '2' });
  });

  it('a read with a token lower than one that has read or written is refused, and moves nothing', async () => {
    const h = fresh();
    await h.read(9n);
    const e = await h.read(8n).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StaleTokenError);
    expect(e).toMatchObject({ code: 'DLOCK_STALE_TOKEN', operation: 'read', token: 8n, highest: 9n });
    expect((e as Error).message).toMatch(/^Read of/);
    expect(await h.highest()).toBe(9n);
    // The same token reads and writes again (one holder, several steps).
    await h.read(9n);
    await h.write(9n, { n: 1 });
  });

  it('peek() reads without moving the fence; read() without a token says what to pass', async () => {
    const h = fresh();
    await h.write(3n, { n: 1 });
    expect(await h.peek()).toEqual({ n: '1' });
    expect(await h.highest()).toBe(3n);
    await expect((h.read as unknown as () => Promise<unknown>)()).rejects.toMatchObject({ code: 'DLOCK_INVALID_ARGUMENT', message: /lease\.token.*peek\(\)/ });
  });

  it('tokens beyond 2^53 compare exactly', async () => {
    const h = fresh();
    const big = 2n ** 60n;
    await h.read(big + 1n);
    await expect(h.write(big, { n: 1 })).rejects.toMatchObject({ code: 'DLOCK_STALE_TOKEN' });
  });
});
