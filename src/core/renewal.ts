import type { ExtendItem, LockDriver } from '../drivers/driver.js';
import { driftFor, monotonicNow } from './clock.js';
import type { HeldLock } from './lease.js';

/** Optional diagnostics sink; dlock never writes to the console itself. */
export interface Logger {
  /** Details: renewals, retries, connection events. */
  debug?(message: string, context?: Record<string, unknown>): void;
  /** Something went wrong that dlock handles (a failed renewal it retries, a connection error). */
  warn?(message: string, context?: Record<string, unknown>): void;
}

/**
 * One renewal scheduler per client: a single unref'd timer for every lease the client holds.
 *
 * At each tick it renews, in one `driver.extend()` batch, every lease whose renewal falls due
 * within a short window (so leases taken close together share round trips), and marks lost every
 * lease whose local deadline has passed: a lease whose renewals hang still loses its lock on
 * time. Nothing here throws from a timer: every failure becomes a lost lease or a retry.
 */
export class RenewalScheduler {
  private readonly leases = new Set<HeldLock>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private stopped = false;

  constructor(
    private readonly driver: LockDriver,
    private readonly renewRatio: number,
    private readonly logger: Logger | undefined,
    /** Hears each held lease whose renewal failed (it is retried until the local deadline). */
    private readonly onFailed?: (held: HeldLock, error: unknown) => void,
  ) {}

  get size(): number {
    return this.leases.size;
  }

  /** Start watching a lease; `renew` false: only its deadline is watched. */
  add(held: HeldLock, renew: boolean): void {
    if (this.stopped) return;
    if (renew) held.nextRenewAt = held.acquiredAt + held.ttlMs * this.renewRatio;
    this.leases.add(held);
    this.arm(Math.min(held.nextRenewAt, held.validUntil));
  }

  /**
   * Stop watching a lease. The timer stays armed even when no lease is left (it is unref'd, and
   * its tick then finds nothing to do): a client that takes and releases a lease in a loop would
   * otherwise create and clear a timer per cycle, and Node a timer list with it (about a
   * twentieth of a semaphore cycle's client CPU); the next lease's renewal falls due after the
   * armed time, so it needs no timer of its own.
   */
  delete(held: HeldLock): void {
    this.leases.delete(held);
  }

  /** Called after a successful extend (automatic or explicit). */
  renewed(held: HeldLock, sentAt: number, ttlMs: number): void {
    held.validUntil = sentAt + ttlMs - driftFor(ttlMs);
    if (Number.isFinite(held.nextRenewAt)) held.nextRenewAt = sentAt + held.ttlMs * this.renewRatio;
    if (this.leases.has(held)) this.arm(Math.min(held.nextRenewAt, held.validUntil));
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
    this.leases.clear();
  }

  private arm(at: number): void {
    if (this.stopped || at >= this.timerAt) return;
    this.disarm();
    this.timerAt = at;
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.ceil(at - monotonicNow())));
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  private tick(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = monotonicNow();
    const batch: HeldLock[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const held of this.leases) {
      if (!held.check(now)) {
        this.leases.delete(held);
        continue;
      }
      // Renew early by up to a quarter of the interval so neighbours share one batch.
      const window = held.ttlMs * this.renewRatio * 0.25;
      if (!held.renewing && held.nextRenewAt <= now + window) {
        const ttl = Math.min(held.ttlMs, Math.floor(held.maxHoldUntil - now));
        if (ttl > 0) batch.push(held);
        else {
          // maxHoldMs reached: stop renewing and let the TTL run out.
          held.nextRenewAt = Number.POSITIVE_INFINITY;
          held.maxHoldReached = true;
        }
      }
      next = Math.min(next, held.renewing ? held.validUntil : Math.min(held.nextRenewAt, held.validUntil));
    }
    if (batch.length > 0) this.renewBatch(batch, now);
    if (Number.isFinite(next)) this.arm(next);
  }

  private renewBatch(batch: HeldLock[], sentAt: number): void {
    const items: ExtendItem[] = batch.map((h) => ({
      key: h.key,
      owner: h.owner,
      ttlMs: Math.min(h.ttlMs, Math.floor(h.maxHoldUntil - sentAt)),
    }));
    for (const h of batch) h.renewing = true;
    this.driver.extend(items).then(
      (results) => {
        batch.forEach((h, i) => {
          h.renewing = false;
          if (h.state !== 'held') return;
          if (results[i]) {
            this.renewed(h, sentAt, items[i]?.ttlMs ?? h.ttlMs);
            if (h.maxHoldUntil - sentAt <= h.ttlMs) {
              h.nextRenewAt = Number.POSITIVE_INFINITY;
              h.maxHoldReached = true;
            }
          } else {
            h.lose('not-held');
            this.leases.delete(h);
          }
        });
      },
      (error: unknown) => {
        const now = monotonicNow();
        // A lease lost meanwhile (its signal aborted) stops here: no retry, no log line.
        const live = batch.filter((h) => {
          h.renewing = false;
          return h.state === 'held' && this.leases.has(h);
        });
        if (live.length > 0) this.logger?.warn?.('dlock: renewal failed; retrying until the local deadline', { error, keys: live.map((h) => h.key) });
        for (const h of live) {
          this.onFailed?.(h, error);
          // Retry at the renewal cadence or every tenth of the TTL, whichever is sooner, so a
          // small renewRatio (chosen to ride out short outages) keeps its cadence while failing.
          h.nextRenewAt = now + Math.max(10, Math.min(h.ttlMs / 10, h.ttlMs * this.renewRatio));
          this.arm(Math.min(h.nextRenewAt, h.validUntil));
        }
      },
    );
  }
}
