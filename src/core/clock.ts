/**
 * Monotonic milliseconds (fractional). Never goes backwards and ignores wall-clock steps, so it
 * is the only clock the core uses to decide validity. `Date.now()` never decides anything here.
 */
export function monotonicNow(): number {
  // The global one, looked up on each call, so that a test's fake clock reaches the core.
  return globalThis.performance.now();
}

/** Milliseconds of clock drift to subtract from a TTL: Redlock's 1% + 2 ms. */
export function driftFor(ttlMs: number): number {
  return Math.floor(ttlMs * 0.01) + 2;
}

/**
 * Resolve after `ms`, or reject with `signal.reason` once `signal` aborts. The timer is ref'd:
 * whoever awaits a sleep wants the process to stay alive for it.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, Math.ceil(ms)));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
