/**
 * An abort that lands while a session-mode wait opens its dedicated connection (both SQL session
 * drivers): the waiter talks to the server through a delaying proxy, so its first try takes one
 * slow round trip and opening the wait's own connection about one more; the abort lands inside
 * the second. No vitest imports.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockClient } from '../../src/core/client.js';
import type { DelayProxy } from './delay-proxy.js';

/** What the aborted wait ended with, and how long after the abort. */
export interface AbortedWait {
  readonly outcome: unknown;
  readonly settledAfterMs: number;
}

/**
 * `waiter` reaches the server through `proxy` (delay 0 so far) and has not waited yet (no spare
 * wait connection); `key` is held elsewhere. Returns once the aborted `acquire()` settled.
 */
export async function abortWhileConnecting(waiter: LockClient, proxy: DelayProxy, key: string, delayMs = 500): Promise<AbortedWait> {
  // Warm up the main/home connection (a try opens it and registers the key).
  if ((await waiter.tryAcquire(key)) !== null) throw new Error(`"${key}" must be held elsewhere`);
  proxy.setDelay(delayMs);
  // One round trip through the proxy (the wait's first try costs the same)...
  const t0 = performance.now();
  await waiter.tryAcquire(key);
  const tryMs = performance.now() - t0;
  const ac = new AbortController();
  const waiting = waiter.acquire(key, { waitMs: 20_000, signal: ac.signal }).then(
    () => 'acquired',
    (e: unknown) => e,
  );
  // ...then the wait opens a connection of its own (one more round trip or two): abort inside that.
  await sleep(tryMs + 300);
  const abortedAt = performance.now();
  ac.abort(new Error('stop'));
  const outcome = await waiting;
  return { outcome, settledAfterMs: performance.now() - abortedAt };
}
