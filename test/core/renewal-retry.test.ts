/**
 * A failed renewal is retried at the client's renewal cadence when that is shorter than a tenth
 * of the TTL (a small `renewRatio` is chosen to ride out short outages, so it must keep its
 * cadence while renewals fail). The embedded memory engine, with its extend step failing on demand
 * (an engine error, as a refused connection would give).
 */
import { describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { ExtendItem } from '../../src/drivers/driver.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';

class FailingExtend extends MemoryDriver {
  failing = false;
  override extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (this.failing) return Promise.reject(new Error('engine unreachable (test)'));
    return super.extend(items);
  }
}

describe('renewal retries', () => {
  it('a failing renewal is retried at the renewRatio cadence when it is shorter than ttl/10, until the local deadline', async () => {
    const driver = new FailingExtend();
    const client = new LockClient(driver, { renewRatio: 0.02 });
    try {
      const lease = await client.acquire('renew:retry', { ttlMs: 3000 });
      const failures: number[] = [];
      client.on('renewal-failed', () => failures.push(performance.now()));
      driver.failing = true;
      const t0 = performance.now();
      await new Promise<void>((resolve) => lease.signal.addEventListener('abort', () => resolve(), { once: true }));
      const lived = performance.now() - t0;
      // Every 60 ms (0.02 × 3 s) for about 3 s: some 50 tries. A tenth of the TTL (300 ms) would
      // give at most 10; 20 leaves room for a loaded machine's late timers.
      expect(failures.length, `${failures.length} renewal failures in ${lived.toFixed(0)} ms`).toBeGreaterThanOrEqual(20);
      // Nothing after the loss.
      const n = failures.length;
      await new Promise((r) => setTimeout(r, 300));
      expect(failures.length).toBe(n);
      expect(await lease.release()).toBe(false);
    } finally {
      await client.close();
    }
  });
});
