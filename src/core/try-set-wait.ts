import type { AcquireRequest, ChangeWatch, Grant, TryResult, WaitContext } from '../drivers/driver.js';
import { UnavailableError } from '../errors.js';
import { backoffMs, raceAbort, settleWithin, WaitScope } from './abort.js';
import { driftFor, monotonicNow, sleep } from './clock.js';
import { KeyGates } from './key-gates.js';

/** What a try-set driver provides so that the core can wait for it. */
export interface TrySetOps {
  /** One atomic attempt; `queue`: from a waiter whose watch is open (see LockDriver.tryAcquire). */
  tryAcquire(req: AcquireRequest, queue?: boolean): Promise<TryResult>;
  /** Open change notifications for a key (pub/sub, file watch...). Absent: jittered backoff. */
  watch?(key: string, owner: string): Promise<ChangeWatch>;
  /** Leave the engine's queue (drivers that queue waiters). */
  cancel?(key: string, owner: string): Promise<void>;
  /** Used to give back a grant that arrived after the wait was abandoned. */
  release(key: string, owner: string): Promise<boolean>;
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
  private readonly gates = new KeyGates();
  /** Waits in progress and the queue exits they still owe the engine. */
  private readonly busy = new Set<Promise<unknown>>();
  constructor(private readonly ops: TrySetOps) {}

  /**
   * Resolve once every wait in progress has ended and has left the engine's queue (or after
   * `maxMs`). A driver calls this in `close()` before closing its connection.
   */
  async drain(maxMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, maxMs);
    });
    while (this.busy.size > 0) {
      const more = await Promise.race([Promise.allSettled([...this.busy]).then(() => true), limit.then(() => false)]);
      if (!more) break;
    }
    clearTimeout(timer);
  }

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
      queued = await this.gates.take(req.key, scope.signal);
    } catch (e) {
      scope.dispose();
      if (scope.timedOut) return null;
      throw e;
    }
    const waiting = this.loop(req, scope, !queued && first !== undefined);
    this.busy.add(waiting);
    try {
      // Straight from a failed fast path, skip the redundant try: subscribe, then try.
      return await waiting;
    } finally {
      this.busy.delete(waiting);
      this.gates.leave(req.key);
      scope.dispose();
    }
  }

  private async loop(req: AcquireRequest, scope: WaitScope, justTried: boolean): Promise<Grant | null> {
    const { signal } = scope;
    let watch: ChangeWatch | undefined;
    let lastError: unknown;
    let attempt = 0;
    let skipTry = justTried && this.ops.watch !== undefined;
    /** Send time of the last queued try that found the lock busy: a handoff happened after it. */
    let lastBusyAt = Number.NEGATIVE_INFINITY;
    let queued = false;
    let granted = false;
    const giveBack = (r: TryResult): void => {
      if (r.ok) this.ops.release(req.key, req.owner).catch(() => undefined);
    };
    try {
      for (;;) {
        let retryAfterMs = -1;
        try {
          if (!skipTry) {
            const sentAt = monotonicNow();
            const queue = watch !== undefined;
            queued ||= queue;
            const r = await raceAbort(this.ops.tryAcquire(req, queue), signal, giveBack);
            if (r.ok) {
              granted = true;
              return r.grant;
            }
            retryAfterMs = r.retryAfterMs;
            if (queue) lastBusyAt = sentAt;
          }
          skipTry = false;
          lastError = undefined;
          if (!watch && this.ops.watch) {
            watch = await raceAbort(this.ops.watch(req.key, req.owner), signal, (w) => w.close());
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
          const woke = await watch.next(Math.min(remaining, retryAfterMs >= 0 ? retryAfterMs + 1 : remaining), signal);
          // Handed over by the engine after our last busy try: its TTL started after that try was
          // sent. Take it at once unless that bound leaves too little validity; then the next try
          // confirms it (the engine answers "yours" and extends it).
          if (typeof woke === 'object' && lastBusyAt + req.ttlMs - driftFor(req.ttlMs) - monotonicNow() > req.ttlMs / 2) {
            granted = true;
            return { token: woke.token, sentAt: lastBusyAt };
          }
        }
      }
    } catch (e) {
      if (!scope.timedOut) throw e;
    } finally {
      watch?.close();
      // Leave the engine's queue; a handoff that raced with our exit is passed on.
      // Bounded: an unreachable engine must not hold up the caller's timeout or abort.
      if (queued && !granted && this.ops.cancel) await settleWithin(this.ops.cancel(req.key, req.owner), 1000);
    }
    if (lastError !== undefined) {
      throw new UnavailableError(`Could not acquire lock "${req.key}" before the wait ran out`, { cause: lastError });
    }
    return null;
  }
}
