import { settleWithin } from '../../core/abort.js';
import { LatchWatch } from '../../core/change-watch.js';
import { sleep } from '../../core/clock.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  TrySetDriver,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import type { Conn } from './connection.js';
import { LIVE, MysqlEngine } from './engine.js';
import { slotOf, type MysqlDriverOptions } from './options.js';

/** How long one armed wake-up wait may block in the server; the core re-arms it as needed. */
const ARM_SECONDS = 3600;
/** First back-off when a busy key's signal is missing (see SignalWatch.next). */
const FREE_BACKOFF_MS = 20;
const FREE_BACKOFF_CAP_MS = 60_000;

/**
 * Lease-table mode: a row per key holds owner, fencing token and expiry by the server's clock
 * (`UTC_TIMESTAMP(6)`); the core renews it. A try-set driver: every statement is atomic on its
 * own (autocommit), so the lock does not depend on any connection staying up; the core's wait
 * loop waits. See ./index.ts for the guarantees of both modes. Does not: free a crashed
 * holder's lock before its TTL, order waiters fairly, or hand the lock over directly (a woken
 * waiter takes it with its own try).
 *
 * Waking waiters without LISTEN/NOTIFY: the holder also takes a per-key "signal" user lock
 * (`GET_LOCK(signal, 0.05)`, best effort) on the connection that granted it, and releases it with
 * the row. A waiter blocks in the server on `GET_LOCK(signal, ...)` (opened before its decisive
 * try), and passes the signal on at once (`RELEASE_LOCK` in the same round trip), so a release
 * wakes every waiter in turn with no polling. A holder that could not take the signal, or whose
 * connection died, wakes no one: waiters that find the signal missing twice in a row re-try with
 * exponential back-off (20 ms, 40 ms, ... capped by the holder's remaining TTL), the only case
 * where this driver polls; a lost wake-up costs at most that back-off, never more than one TTL.
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { MysqlTableDriver } from 'dlock/mysql';
 * const locks = new LockClient(new MysqlTableDriver({ url: 'mysql://app:secret@db:3306/app' }));
 * const lease = await locks.acquire('report:daily', { ttlMs: 10_000 });
 * try { ... } finally { await lease.release(); }
 * ```
 */
export class MysqlTableDriver extends MysqlEngine implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = { name: 'mysql', liveness: 'lease', fair: false, scope: 'distributed' };
  private readonly watches = new Set<SignalWatch>();

  constructor(options: MysqlDriverOptions) {
    super(options);
  }

  /**
   * One statement grants when the row is free, expired or already ours (a retried request), and
   * bumps the fencing counter on a new grant; the next one reads the outcome and, if granted,
   * takes the key's wake-up signal. Both run in one round trip on the key's home connection.
   */
  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    const n = this.namesOf(req.key);
    const us = Math.ceil(req.ttlMs) * 1000;
    const sentAt = this.now();
    const r = await this.onHome<unknown[]>(
      n.id,
      `INSERT INTO ${this.locks} (id, name, owner, token, expires_at)
         VALUES (?, ?, ?, 1, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
       ON DUPLICATE KEY UPDATE
         token      = IF(owner <=> ?, token, IF(${LIVE}, token, token + 1)),
         owner      = IF(owner <=> ? OR NOT ${LIVE}, ?, owner),
         session_id = IF(owner <=> ?, NULL, session_id),
         expires_at = IF(owner <=> ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, expires_at);
       SELECT owner <=> ? AS mine, token, session_id IS NOT NULL AS session,
              TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS remaining_us,
              IF(owner <=> ?, IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), 1, GET_LOCK(?, 0.05)), NULL) AS signalled
         FROM ${this.locks} WHERE id = ?`,
      [
        n.id, req.key, req.owner, us,
        req.owner, n.lock,
        req.owner, n.lock, req.owner,
        req.owner,
        req.owner, us,
        req.owner, req.owner, n.signal, n.signal, n.id,
      ],
    );
    const row = (r[1] as Array<{ mine: number; token: string; session: number; remaining_us: string | null }>)[0];
    if (row && Number(row.mine) === 1) return { ok: true, grant: { token: BigInt(row.token), sentAt } };
    const retryAfterMs = !row || Number(row.session) === 1 ? -1 : Math.max(0, Math.floor(Number(row.remaining_us ?? 0) / 1000));
    return { ok: false, retryAfterMs };
  }


  /** One round trip per home connection: an UPDATE per lease, only while unexpired and ours. */
  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    const out = items.map(() => false);
    const groups = new Map<number, number[]>();
    items.forEach((it, i) => {
      const slot = slotOf(this.namesOf(it.key).id, this.o.connections);
      groups.set(slot, [...(groups.get(slot) ?? []), i]);
    });
    await Promise.all(
      [...groups].map(async ([slot, indexes]) => {
        const params: unknown[] = [];
        const sql = indexes
          .map((i) => {
            const it = items[i] as ExtendItem;
            params.push(Math.ceil(it.ttlMs) * 1000, this.namesOf(it.key).id, it.owner);
            return `UPDATE ${this.locks} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                      WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6)`;
          })
          .join(';\n');
        const conn = await this.home(slot);
        const r = await conn.query<{ affectedRows: number } | Array<{ affectedRows: number }>>(sql, params);
        const results = Array.isArray(r) ? r : [r];
        indexes.forEach((i, j) => {
          out[i] = (results[j]?.affectedRows ?? 0) > 0;
        });
        // A lease lost with its row free (force-released, or expired): pass the wake-up signal
        // on, so that the waiters blocked on it try now rather than at the holder's TTL.
        const lost = indexes.filter((i) => !out[i]).map((i) => this.namesOf((items[i] as ExtendItem).key));
        if (lost.length > 0) {
          await conn
            .query(
              lost.map(() => `DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID() AND NOT EXISTS (SELECT 1 FROM ${this.locks} WHERE id = ? AND ${LIVE}), RELEASE_LOCK(?), 0)`).join(';\n'),
              lost.flatMap((n) => [n.signal, n.id, n.lock, n.signal]),
            )
            .catch(() => undefined);
        }
      }),
    );
    return out;
  }

  /**
   * Clear the row if `owner` holds it (only a live hold counts as released; our own expired row is
   * tidied too), and release the wake-up signal, which wakes the waiters.
   */
  async release(key: string, owner: string): Promise<boolean> {
    const n = this.namesOf(key);
    const r = await this.onHome<unknown[]>(
      n.id,
      `UPDATE ${this.locks} SET owner = NULL, expires_at = NULL
         WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6);
       SET @dlock_live = ROW_COUNT();
       UPDATE ${this.locks} SET owner = NULL, expires_at = NULL WHERE id = ? AND owner = ? AND session_id IS NULL;
       SELECT @dlock_live AS released,
              IF(@dlock_live + ROW_COUNT() > 0 AND IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), NULL) AS signalled`,
      [n.id, owner, n.id, owner, n.signal, n.signal],
    );
    const row = (r[3] as Array<{ released: string | number }>)[0];
    return Number(row?.released) > 0;
  }

  /** A wake-up watch for `key`: a connection of its own blocked on the key's signal lock. */
  async watch(key: string): Promise<ChangeWatch> {
    if (this.closed) throw this.closedError();
    if (this.watches.size >= this.o.maxWaits) {
      // Over the cap of blocked connections: wait for the holder's TTL only (still no polling).
      return new LatchWatch(() => undefined);
    }
    const w = new SignalWatch(await this.takeSpare(), this.namesOf(key).signal, () => this.takeSpare(), (watch, conn) => {
      this.watches.delete(watch);
      if (watch.armed) {
        // Reuse the connection only once the KILL has landed (it would hit the next statement).
        void Promise.all([this.interrupt(conn), watch.settled()]).then(() => this.giveBack(conn));
      } else this.giveBack(conn);
    });
    this.watches.add(w);
    return w;
  }

  /** Open wake-up watches (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.watches.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watches]) w.close();
    await settleWithin(Promise.allSettled([...this.watches].map((w) => w.settled())), 1000);
    await this.closeConnections();
  }
}

/**
 * Blocks in the server until the key's signal lock is released: armed when opened (before the
 * waiter's decisive try) and re-armed by `next()`. Results of one arm: 1 = the signal was held and
 * has been released (a release happened: try again); -1 = nobody holds the signal (answered at
 * once: try again once, then sleep until the holder's TTL); 0 = the long server timeout passed, or the wait was interrupted.
 */
class SignalWatch implements ChangeWatch {
  private inflight: Promise<number | null> | undefined;
  private freeStreak = 0;
  private done = false;

  constructor(
    private conn: Conn,
    private readonly signalName: string,
    /** A new connection when ours died (the server restarted...). */
    private readonly reconnect: () => Promise<Conn>,
    private readonly onClose: (w: SignalWatch, conn: Conn) => void,
  ) {
    this.arm();
  }

  /** Whether a server wait is in flight. */
  get armed(): boolean {
    return this.inflight !== undefined;
  }

  /** Resolves when no statement of this watch is running any more. */
  settled(): Promise<void> {
    return (this.inflight ?? Promise.resolve()).then(
      () => undefined,
      () => undefined,
    );
  }

  private arm(): void {
    const p = this.conn
      .query<Array<{ w: string | number | null }>>(
        // One expression, so that nothing (not even a KILL QUERY) can come between taking the
        // signal and passing it on: a waiter never keeps it.
        `SELECT IF(IS_FREE_LOCK(?), -1, IF(GET_LOCK(?, ${ARM_SECONDS}) = 1, RELEASE_LOCK(?), 0)) AS w`,
        [this.signalName, this.signalName, this.signalName],
      )
      .then((r) => {
        const w = r[0]?.w;
        return w === null || w === undefined ? null : Number(w);
      });
    p.catch(() => undefined);
    this.inflight = p;
  }

  async next(maxMs: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) throw signal.reason as Error;
    const start = performance.now();
    if (!this.inflight) {
      if (!this.conn.alive) {
        try {
          this.conn = await this.reconnect();
        } catch {
          // Still unreachable: fall back to the holder's TTL bound.
          await sleep(maxMs, signal);
          return false;
        }
        if (this.done) {
          // Closed (by the driver's close) while reconnecting: hand the new connection back.
          this.onClose(this, this.conn);
          return false;
        }
      }
      this.arm();
    }
    const inflight = this.inflight as Promise<number | null>;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await new Promise<number | null | 'timeout' | 'error'>((resolve, reject) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, maxMs));
      onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      inflight.then(resolve, () => resolve('error'));
    }).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    });
    if (outcome === 'timeout') return false;
    this.inflight = undefined;
    if (outcome === 1) {
      this.freeStreak = 0;
      return true;
    }
    if (outcome === 0) this.freeStreak = 0;
    if (outcome === -1) {
      // Nobody holds the signal: it may have been released just before we armed (try again at
      // once), or the holder has not taken it (yet: on a starved CPU the waiters passing it on
      // can keep it from the new holder past its 50 ms; or its connection died). Then back off
      // exponentially (20 ms, 40 ms, ...) up to the holder's TTL: a few tries per TTL, and
      // only while the signal is missing.
      const streak = this.freeStreak++;
      if (streak === 0) return true;
      const backoff = Math.min(FREE_BACKOFF_CAP_MS, FREE_BACKOFF_MS * 2 ** Math.min(streak - 1, 16));
      await sleep(Math.max(0, Math.min(maxMs, backoff) - (performance.now() - start)), signal);
      return false;
    }
    // A connection error: report a change, so that the caller's next try meets the error (and
    // backs off, and reports unavailability if it lasts). 0 (server timeout) or null
    // (interrupted): let the caller try again.
    return outcome === 'error';
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.onClose(this, this.conn);
  }
}
