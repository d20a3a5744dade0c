/** Helpers the conformance suite's files share (no test state: that is the SuiteContext of context.ts). */
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import type { LockDriver } from '../../../src/drivers/driver.js';

/** Error of a call, whether it threw synchronously or rejected. Fails when it succeeds. */
export async function errorOf(fn: () => unknown): Promise<Error & { code?: string; option?: string; reason?: string }> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`threw a non-Error: ${String(e)}`);
    return e;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** Resolve with the abort reason and the monotonic time it fired; reject after `timeoutMs`. */
export function whenAborted(signal: AbortSignal, timeoutMs: number): Promise<{ reason: unknown; at: number }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      resolve({ reason: signal.reason, at: performance.now() });
      return;
    }
    const timer = setTimeout(() => reject(new Error(`lease.signal did not abort within ${timeoutMs} ms`)), timeoutMs);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve({ reason: signal.reason, at: performance.now() });
      },
      { once: true },
    );
  });
}

/** Bound a promise so that a hanging engine call fails the test instead of the whole run. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `fn` until it returns true or `ms` pass; returns the last answer. */
export async function eventually(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  for (;;) {
    if (await fn()) return true;
    if (performance.now() > end) return false;
    await sleep(10);
  }
}

/**
 * A held lock's remaining TTL as inspect reports it: within (0, ttlMs], or -1 from a session
 * driver whose lock lives as long as the holder's session (LockState.remainingMs).
 */
export function expectRemaining(remainingMs: number | undefined, ttlMs: number, driver: LockDriver): void {
  if (driver.info.liveness === 'session' && remainingMs === -1) return;
  expect(remainingMs).toBeGreaterThan(0);
  expect(remainingMs).toBeLessThanOrEqual(ttlMs);
}

/** Whether `e`, its causes, or the answers it carries mention `pattern` (message or code). */
export function mentions(e: unknown, pattern: RegExp): boolean {
  return pattern.test(describeChain(e));
}

/** `e`'s message and code, then its causes' and carried errors', one per line. */
export function describeChain(e: unknown, depth = 0): string {
  if (depth > 6 || e === undefined || e === null) return '';
  if (!(e instanceof Error)) return JSON.stringify(e) ?? '';
  const x = e as Error & { code?: string | number; errors?: unknown[]; answers?: unknown };
  const parts = [`${x.name}: ${x.message}${x.code === undefined ? '' : ` [${x.code}]`}`];
  if (x.cause !== undefined) parts.push(describeChain(x.cause, depth + 1));
  for (const inner of x.errors ?? []) parts.push(describeChain(inner, depth + 1));
  if (x.answers !== undefined) parts.push(JSON.stringify(x.answers, (_k, v: unknown) => (v instanceof Error ? `${v.name}: ${v.message}` : v)));
  return parts.filter(Boolean).join('\n');
}

/** One line of measurements, for the run log. */
export function note(suite: string, what: string, values: Record<string, unknown>): void {
  console.info(`[conformance:${suite}] ${what}: ${JSON.stringify(values)}`);
}

export const hostTag = hostname().replace(/[:\s]/g, '_') || 'unknown-host';
