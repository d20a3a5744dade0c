/**
 * Fencing in practice on Redis (the paused-holder scenario, test/support/paused-holder.ts): a
 * holder paused (SIGSTOP) past its TTL must not be able to overwrite the newer holder's data. With
 * FencedRedisHash no increment is lost and the stale write is rejected; the control run with a
 * plain HSET shows the lost update, proving the check can see it.
 */
import { describe, expect, inject, it } from 'vitest';
import { runPausedHolder } from '../support/paused-holder.js';

const TTL_MS = 600;
const run = (mode: 'fenced' | 'plain') => runPausedHolder({ counter: 'redis', url: inject('redisUrl'), mode, ttlMs: TTL_MS });

describe('paused holder and fencing (redis)', () => {
  it('with FencedRedisHash: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, accepted, rejected, pausedMs } = await run('fenced');
    expect(pausedMs).toBeGreaterThanOrEqual(TTL_MS);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    const paused = done[0]!.paused!;
    expect(paused.abortedBeforeWrite).toBe(true);
    expect(paused.reason).toBe('expired');
  });

  it('control run with a plain write: the same pause loses updates (the checker can see the failure)', async () => {
    const { final, done, accepted } = await run('plain');
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  });
});
