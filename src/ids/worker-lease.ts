/**
 * Worker ids leased through any dlock engine: a worker id is a lock (`ids:<name>:worker:<slot>`)
 * held with a TTL and renewed by the LockClient, plus a durable high-water mark kept beside it
 * (`MarkStore.readMark` / `raiseMark`, src/drivers/id-store.ts).
 *
 * The mark is the protocol that makes recycling a worker id safe:
 * - a holder raises the mark AHEAD of the time it issues ids in, and never issues beyond the last
 *   mark the engine accepted (its "ceiling"); the engine accepts a raise only from the current
 *   holder, atomically;
 * - a new holder reads the mark after its claim and issues only above it (its "floor").
 * Every mark the old holder saw accepted was written while it held the key, so before the new
 * holder's claim, so at or below what the new holder reads: the old holder's ids (at or below its
 * ceiling) and the new holder's (above its floor) cannot meet, whatever the clocks, pauses or
 * crashes did. A holder that cannot raise its mark stops at its ceiling (self-fencing) instead of
 * running on unprotected.
 *
 * Claiming: the slots are tried once each in order from a random start, with `tryAcquire` (one
 * round trip each; the first free one usually wins). A free slot whose mark is ahead of our clock
 * (the previous holder's clock was ahead of ours, ours was stepped back, or it closed cleanly a
 * moment ago and its mark still covers its look-ahead window) would make us wait; it is released
 * and the scan goes on, preferring a slot we can use at once, and falls back to the one with the
 * shortest wait. A single slot (a fixed `slot`, or workerBits 0) is waited for with the client's
 * event-driven `acquire` when `waitMs` allows; several slots are rescanned with a jittered backoff.
 * A slot the engine could not answer about (busy, failing) is skipped and the scan goes on; if no
 * slot was had by the deadline, that engine error is reported rather than "no free worker id".
 *
 * Marks are as durable as the engine's writes: SQLite fsyncs each one; Redis keeps them only as
 * well as its persistence settings (`appendonly yes`, `appendfsync always` for crash safety).
 */
import type { LockClient } from '../core/client.js';
import { monotonicNow, sleep } from '../core/clock.js';
import type { Lease } from '../core/lease.js';
import { markStoreOf, type MarkStore } from '../drivers/id-store.js';
import { LockTimeoutError, NoFreeWorkerError, UnavailableError, UnsupportedDriverError } from '../errors.js';

/** Options of {@link WorkerLease.claim}. */
export interface WorkerLeaseOptions {
  readonly client: LockClient;
  /** The id generator's name: keys are `ids:<name>:worker:<slot>`. */
  readonly name: string;
  /** Number of slots (2^workerBits). */
  readonly slots: number;
  /** Claim exactly this slot. */
  readonly slot?: number;
  /** Lease TTL on the engine, in ms (renewed by the client). */
  readonly ttlMs: number;
  /** How long to wait for a free slot, in ms (0: fail at once). */
  readonly waitMs: number;
  /** How long the caller accepts to wait for a slot's mark; a slot needing longer is not taken. */
  readonly maxMarkWaitMs: number;
  /** Ms the caller would have to wait before issuing above `markMs` (0: at once). */
  readonly waitForMark: (markMs: number) => number;
  readonly signal?: AbortSignal;
}

/** The key of one worker slot. */
export function workerKey(name: string, slot: number): string {
  return `ids:${name}:worker:${slot}`;
}

/** Largest number of slots one claim scans. */
const MAX_SCAN = 4096;

/** A claimed worker slot: see the file header. */
export class WorkerLease {
  private constructor(
    private readonly store: MarkStore,
    readonly slot: number,
    readonly key: string,
    readonly lease: Lease,
    /** The slot's mark when it was claimed (ms since 1970; 0 when never written). */
    readonly markMs: number,
  ) {}

  /** Claim a slot; see the file header. Throws {@link NoFreeWorkerError} when none can be had. */
  static async claim(o: WorkerLeaseOptions): Promise<WorkerLease> {
    WorkerLease.storeOf(o);
    const started = monotonicNow();
    const order = o.slot !== undefined ? [o.slot] : scanOrder(o.slots);
    if (order.length === 1) return WorkerLease.claimOne(o, order[0] ?? 0, started);
    for (let attempt = 0; ; attempt++) {
      const failed: unknown[] = [];
      const got = await WorkerLease.scan(o, order, failed);
      if (got) return got;
      const left = started + o.waitMs - monotonicNow();
      if (left <= 0) {
        // Slots we could not even ask about (engine busy or failing): say so rather than "none free".
        if (failed.length > 0) throw failed[failed.length - 1];
        throw new NoFreeWorkerError(o.name, order.length, Math.round(monotonicNow() - started));
      }
      await sleep(Math.min(left, 50 * 2 ** Math.min(attempt, 4) * (0.5 + Math.random())), o.signal);
    }
  }

  /** One slot, waited for with the client's acquire (woken when the holder releases or expires). */
  private static async claimOne(o: WorkerLeaseOptions, slot: number, started: number): Promise<WorkerLease> {
    const key = workerKey(o.name, slot);
    let lease: Lease | null;
    try {
      lease =
        o.waitMs > 0
          ? await o.client.acquire(key, { ttlMs: o.ttlMs, renew: true, waitMs: o.waitMs, signal: o.signal })
          : await o.client.tryAcquire(key, { ttlMs: o.ttlMs, renew: true, signal: o.signal });
    } catch (e) {
      if (e instanceof LockTimeoutError) lease = null;
      else throw e;
    }
    if (!lease) throw new NoFreeWorkerError(o.name, 1, Math.round(monotonicNow() - started));
    return WorkerLease.adopt(o, slot, key, lease);
  }

  /** Try each slot once; a usable one is kept, slots that would make us wait are remembered. */
  private static async scan(o: WorkerLeaseOptions, order: readonly number[], failed: unknown[]): Promise<WorkerLease | null> {
    const later: Array<{ slot: number; waitMs: number }> = [];
    for (const slot of order) {
      o.signal?.throwIfAborted();
      const key = workerKey(o.name, slot);
      let lease: Lease | null;
      try {
        lease = await o.client.tryAcquire(key, { ttlMs: o.ttlMs, renew: true, signal: o.signal });
      } catch (e) {
        // One busy or failing answer (e.g. SQLITE_BUSY under load) must not end the scan.
        if (!(e instanceof UnavailableError)) throw e;
        failed.push(e);
        continue;
      }
      if (!lease) continue;
      let wl: WorkerLease;
      try {
        wl = await WorkerLease.adopt(o, slot, key, lease);
      } catch (e) {
        if (!(e instanceof UnavailableError)) throw e;
        failed.push(e);
        continue;
      }
      const waitMs = o.waitForMark(wl.markMs);
      if (waitMs <= 0) return wl;
      later.push({ slot, waitMs });
      await wl.release();
    }
    // Every free slot needs a wait for its mark: take the shortest acceptable one that is still free.
    later.sort((a, b) => a.waitMs - b.waitMs);
    for (const { slot, waitMs } of later) {
      if (waitMs > o.maxMarkWaitMs) break;
      const key = workerKey(o.name, slot);
      const lease = await o.client.tryAcquire(key, { ttlMs: o.ttlMs, renew: true, signal: o.signal });
      if (lease) return WorkerLease.adopt(o, slot, key, lease);
    }
    // Free slots exist but all need too long a wait: hand the best back to the caller to report.
    const best = later[0];
    if (best) {
      const key = workerKey(o.name, best.slot);
      const lease = await o.client.tryAcquire(key, { ttlMs: o.ttlMs, renew: true, signal: o.signal });
      if (lease) return WorkerLease.adopt(o, best.slot, key, lease);
    }
    return null;
  }

  /** The client's driver as a mark store; throws when it is not one. */
  private static storeOf(o: WorkerLeaseOptions): MarkStore {
    const store = markStoreOf(o.client.driver);
    if (!store) throw new UnsupportedDriverError(o.client.driver.info.name, 'readMark/raiseMark', 'worker-id leases (IdGenerator)');
    return store;
  }

  private static async adopt(o: WorkerLeaseOptions, slot: number, key: string, lease: Lease): Promise<WorkerLease> {
    try {
      // Read after the claim: from now on only we can raise it.
      const store = WorkerLease.storeOf(o);
      const mark = await store.readMark(key);
      return new WorkerLease(store, slot, key, lease, Number(mark));
    } catch (e) {
      await lease.release().catch(() => false);
      throw e;
    }
  }

  /**
   * Raise the slot's mark to `markMs` (never lowers it). Resolves false when the engine no longer
   * records this lease as the holder (nothing written); rejects when the engine is unreachable.
   */
  raise(markMs: number): Promise<boolean> {
    return this.store.raiseMark(this.key, this.lease.owner, BigInt(markMs));
  }

  /** Give the slot back (idempotent). */
  release(): Promise<boolean> {
    return this.lease.release();
  }
}

/** All slots once, from a random start (up to {@link MAX_SCAN} of them). */
function scanOrder(slots: number): number[] {
  const start = Math.floor(Math.random() * slots);
  const n = Math.min(slots, MAX_SCAN);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = (start + i) % slots;
  return out;
}
