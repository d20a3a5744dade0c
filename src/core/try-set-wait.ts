import type { AcquireRequest, ChangeWatch, Grant, TryResult, WaitContext } from '../drivers/driver.js';
import { UnavailableError } from '../errors.js';
import { backoffMs, raceAbort, WaitScope } from './abort.js';
import { monotonicNow, sleep } from './clock.js';

/** What a try-set driver provides so that the core can wait for it. */
export interface TrySetOps {
  /** One atomic attempt. */
  tryAcquire(req: AcquireRequest): Promise<TryResult>;
  /** Open change notifications for a key (pub/sub, file watch...). Absent: jittered backoff. */
  watch?(key: string): Promise<ChangeWatch>;
  /** Used to give back a grant that arrived after the wait was abandoned. */
  release(key: string, owner: string): Promise<boolean>;
}

interface Gate {
  readonly queue: Array<{ go: () => void }>;
}

/**
 * The wait loop of every try-set driver, written once.
 *
 * - Fast path: one attempt, no timer, no allocation beyond the request.
 * - Slow path: waiters of one key in this process queue locally (FIFO); only the head talks to
 *   the engine. So 10,000 local waiters cost one engine waiter, and a local releaser cannot
 *   barge ahead of local waiters.
 * - The head opens the change watch *before* its decisive try (a release between a failed try
 *   and the subscription would otherwise be missed), then sleeps until a change or the holder's
 *   remaining TTL, whichever comes first: a lost notification costs at most one TTL, and there is
 *   no fixed-interval polling.
 * - Engine errors are retried with jittered backoff until the deadline, then reported as
 *   {@link UnavailableError}; a grant that lands after the wait gave up is released at once.
 */
export class TrySetWaitQueue {
  private readonly gates = new Map<string, Gate>();
  constructor(private readonly ops: TrySetOps) {}

  /** Number of keys with local waiters (for tests and inspection). */
  get waitingKeys(): number {
    return this.gates.size;
  }

  async acquire(req: AcquireRequest, ctx: WaitContext): Promise<Grant | null> {
    let first: TryResult | undefined;
    if (!this.gates.has(req.key) && !ctx.signal?.aborted) {
      try {
        first = await this.ops.tryAcquire(req);
      } catch {
        // fall through to the slow path, which retries and reports unavailability
      }
      if (first?.ok) return first.grant;
      if (first && monotonicNow() >= ctx.deadline) return null;
    }
    const scope = new WaitScope([ctx.signal], ctx.deadline, monotonicNow());
    let queued: boolean;
    try {
      queued = await this.takeTurn(req.key, scope.signal);
    } catch (e) {
      scope.dispose();
      if (scope.timedOut) return null;
      throw e;
    }
    try {
      // Straight from a failed fast path, skip the redundant try: subscribe, then try.
      return await this.loop(req, scope, !queued && first !== undefined);
    } finally {
      this.leaveTurn(req.key);
      scope.dispose();
    }
  }

  private async loop(req: AcquireRequest, scope: WaitScope, justTried: boolean): Promise<Grant | null> {
    const { signal } = scope;
    let watch: ChangeWatch | undefined;
    let lastError: unknown;
    let attempt = 0;
    let skipTry = justTried && this.ops.watch !== undefined;
    const giveBack = (r: TryResult): void => {
      if (r.ok) this.ops.release(req.key, req.owner).catch(() => undefined);
    };
    try {
      for (;;) {
        let retryAfterMs = -1;
        try {
          if (!skipTry) {
            const r = await raceAbort(this.ops.tryAcquire(req), signal, giveBack);
            if (r.ok) return r.grant;
            retryAfterMs = r.retryAfterMs;
          }
          skipTry = false;
          lastError = undefined;
          if (!watch && this.ops.watch) {
            watch = await raceAbort(this.ops.watch(req.key), signal, (w) => w.close());
            continue; // the decisive try, now that no release can slip by unseen
          }
        } catch (e) {
          if (signal.aborted) throw e;
          lastError = e;
        }
        const remaining = scope.deadline - monotonicNow();
        if (remaining <= 0) break;
        if (lastError !== undefined || !watch) {
          const delay = backoffMs(attempt++);
          await sleep(Math.min(remaining, retryAfterMs >= 0 ? Math.min(delay, retryAfterMs + 1) : delay), signal);
        } else {
          attempt = 0;
          await watch.next(Math.min(remaining, retryAfterMs >= 0 ? retryAfterMs + 1 : remaining), signal);
        }
      }
    } catch (e) {
      if (!scope.timedOut) throw e;
    } finally {
      watch?.close();
    }
    if (lastError !== undefined) {
      throw new UnavailableError(`Could not acquire lock "${req.key}" before the wait ran out`, { cause: lastError });
    }
    return null;
  }

  /** Wait for this key's local turn; resolves whether we had to queue behind another waiter. */
  private takeTurn(key: string, signal: AbortSignal): Promise<boolean> {
    const gate = this.gates.get(key);
    if (!gate) {
      this.gates.set(key, { queue: [] });
      return Promise.resolve(false);
    }
    return new Promise<boolean>((resolve, reject) => {
      const entry = {
        go: (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve(true);
        },
      };
      const onAbort = (): void => {
        const i = gate.queue.indexOf(entry);
        if (i >= 0) gate.queue.splice(i, 1);
        reject(signal.reason as Error);
      };
      gate.queue.push(entry);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private leaveTurn(key: string): void {
    const gate = this.gates.get(key);
    if (!gate) return;
    const next = gate.queue.shift();
    if (next) next.go();
    else this.gates.delete(key);
  }
}
