import { settleWithin } from '../../core/abort.js';
import { LatchWatch } from '../../core/change-watch.js';
import { sleep } from '../../core/clock.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  HandedOver,
  TrySetDriver,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import type { Conn } from './connection.js';
import { MysqlEngine } from './engine.js';
import { slotOf, type MysqlDriverOptions } from './options.js';

/** "The row's holder still holds the key", with the session lock name in `@lk` (see engine.ts LIVE). */
const LIVE_VAR = `(owner IS NOT NULL AND IF(session_id IS NULL, expires_at > UTC_TIMESTAMP(6), IS_USED_LOCK(@lk) <=> session_id))`;

/** How long one armed wake-up wait may block in the server; the core re-arms it as needed. */
const ARM_SECONDS = 3600;
/** First back-off when a busy key's signal is missing (see SignalWatch.next). */
const FREE_BACKOFF_MS = 20;
const FREE_BACKOFF_CAP_MS = 60_000;

/**
 * Lease-table mode: a row per key holds owner, fencing token and expiry by the server's clock
 * (`UTC_TIMESTAMP(6)`); the core renews it. A try-set driver: every operation is one transaction
 * sent in one round trip (no state left on the connection), so the lock does not depend on any
 * connection staying up; the core's wait loop waits. See ./index.ts for the guarantees of both
 * modes.
 *
 * FIFO with direct handoff: a waiter (its watch open) queues in `<prefix>waiters` with its busy
 * try, in the same transaction; a release hands the lock to the first live waiter in the same
 * transaction (fresh token, that waiter's TTL). A free or expired lock with live queued waiters
 * goes to the head only: arrivals never barge past the queue (`info.fair`). Entries expire 2 s
 * after the holder's expiry as the waiter's last try saw it (each try refreshes it), so the entry
 * of a waiter that died goes, and handoffs skip expired entries.
 *
 * Waking waiters without LISTEN/NOTIFY: the holder also takes a per-key "signal" user lock
 * (`GET_LOCK(signal, 0.05)`, best effort) on the connection that granted it, and releases it with
 * the row. A waiter blocks in the server on `GET_LOCK(signal, ...)` (opened before its decisive
 * try); woken, it reads in the same round trip whether the row is now its own: then it holds the
 * lock (the token comes with the wake-up, no further query) and keeps the signal for its hold on
 * that connection (its release runs there); otherwise it passes the signal on at once, so a
 * release wakes every waiter in turn with no polling. A holder that could not take the signal, or
 * whose connection died, wakes no one: waiters that find the signal missing twice in a row re-try
 * with exponential back-off (20 ms, 40 ms, ... capped by the holder's remaining TTL), the only case
 * where this driver polls; a lost wake-up costs at most that back-off, never more than one TTL
 * (the waiter's next try then confirms a lock handed to it).
 *
 * Does not: free a crashed holder's lock before its TTL; skip a waiter that died while its entry
 * is still live (the lock handed to it idles until that waiter's TTL runs out); spare the other
 * waiters a wake-up: each release wakes every local waiter of the key once (each re-tries, finds
 * the lock held, and waits again); tell the head at once when an arrival's try hands it a lock
 * whose holder expired (the head's next try, due at that expiry, confirms it).
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
  readonly info: DriverInfo = { name: 'mysql', liveness: 'lease', fair: true, scope: 'distributed' };
  private readonly watches = new Set<SignalWatch>();
  /** Connections that keep the wake-up signal for a lock handed to its owner (by owner id). */
  private readonly signalHolders = new Map<string, Conn>();

  constructor(options: MysqlDriverOptions) {
    super(options);
  }

  /**
   * One transaction in one round trip, on the key's home connection (or, for a lock handed to
   * `req.owner`, on the connection that holds the key's signal for it). The key's row is locked
   * first (created free when absent), as in every statement about a key, so tries, releases and
   * handoffs of a key are serialized and read the latest state. A free or expired row goes to the
   * first live waiter if one queues (FIFO: no barging; the head learns it from its next try or
   * wake-up), else to us; a row already ours (handed to us, or a retried request) is confirmed
   * and extended. Busy, with `queue`: enqueue us (or refresh our entry: the holder's expiry + 2 s).
   * Granted to us: take the key's wake-up signal.
   */
  async tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    const n = this.namesOf(req.key);
    const us = Math.ceil(req.ttlMs) * 1000;
    const sentAt = this.now();
    const r = await this.atomically(
      req.key,
      req.owner,
      `SET @k = ?, @me = ?, @us = ?, @q = ?, @lk = ?, @sig = ?, @mine = 0, @live = 0, @rem = NULL, @sess = 0, @h = NULL, @ht = NULL;
       START TRANSACTION;
       INSERT INTO ${this.locks} (id, name, owner, token, expires_at) VALUES (@k, ?, NULL, 0, NULL)
         ON DUPLICATE KEY UPDATE id = id;
       SELECT owner <=> @me, ${LIVE_VAR}, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at), session_id IS NOT NULL
         INTO @mine, @live, @rem, @sess FROM ${this.locks} WHERE id = @k FOR UPDATE;
       SELECT owner, ttl_us INTO @h, @ht FROM ${this.waiters}
        WHERE @mine = 0 AND @live = 0 AND id = @k AND expires_at > UTC_TIMESTAMP(6) ORDER BY seq LIMIT 1 FOR UPDATE;
       SET @g = IF(@mine = 1, @me, IF(@live = 1, NULL, IFNULL(@h, @me)));
       UPDATE ${this.locks}
          SET token = IF(@mine = 1, token, token + 1), owner = @g, session_id = NULL,
              expires_at = UTC_TIMESTAMP(6) + INTERVAL IF(@g <=> @me, @us, @ht) MICROSECOND
        WHERE id = @k AND @g IS NOT NULL;
       DELETE FROM ${this.waiters} WHERE @g IS NOT NULL AND id = @k AND owner = @g;
       INSERT INTO ${this.waiters} (id, owner, ttl_us, expires_at)
         SELECT @k, @me, @us,
                IF(@g IS NOT NULL, UTC_TIMESTAMP(6) + INTERVAL @ht MICROSECOND,
                   IF(@sess = 1 OR @rem IS NULL, UTC_TIMESTAMP(6) + INTERVAL 30 SECOND,
                      UTC_TIMESTAMP(6) + INTERVAL GREATEST(@rem, 0) MICROSECOND)) + INTERVAL 2 SECOND
           FROM DUAL WHERE @q = 1 AND NOT (@g <=> @me)
         ON DUPLICATE KEY UPDATE ttl_us = VALUES(ttl_us), expires_at = VALUES(expires_at);
       COMMIT;
       SELECT @g <=> @me AS mine, token, @sess AS session, IF(@g IS NULL, @rem, @ht) AS remaining_us,
              IF(@g <=> @me, IF(IS_USED_LOCK(@sig) <=> CONNECTION_ID(), 1, GET_LOCK(@sig, 0.05)), NULL) AS signalled
         FROM ${this.locks} WHERE id = @k`,
      [n.id, req.owner, us, queue ? 1 : 0, n.lock, n.signal, req.key],
    );
    const row = (r.at(-1) as Array<{ mine: number; token: string; session: number | string; remaining_us: string | null }>)[0];
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
      }),
    );
    return out;
  }

  /**
   * One transaction in one round trip: if `owner` holds the row (even expired: tidy), hand it to
   * the first live waiter (its entry claimed with a locking read, so a racing cancel is seen;
   * fresh token, that waiter's TTL) or free it; sweep expired entries; then release the wake-up
   * signal: the waiters wake in turn, and the one the lock went to reads its token in the same
   * round trip as its wake-up and keeps the signal (see SignalWatch). Only a live hold counts as
   * released.
   */
  async release(key: string, owner: string): Promise<boolean> {
    const n = this.namesOf(key);
    const r = await this.atomically(
      key,
      owner,
      `SET @k = ?, @me = ?, @sig = ?, @m = 0, @l = 0, @h = NULL, @ht = NULL;
       START TRANSACTION;
       SELECT 1, expires_at > UTC_TIMESTAMP(6) INTO @m, @l
         FROM ${this.locks} WHERE id = @k AND owner = @me AND session_id IS NULL FOR UPDATE;
       SELECT owner, ttl_us INTO @h, @ht FROM ${this.waiters}
        WHERE @m = 1 AND id = @k AND owner <> @me AND expires_at > UTC_TIMESTAMP(6) ORDER BY seq LIMIT 1 FOR UPDATE;
       UPDATE ${this.locks}
          SET owner = @h, token = IF(@h IS NULL, token, token + 1),
              expires_at = IF(@h IS NULL, NULL, UTC_TIMESTAMP(6) + INTERVAL @ht MICROSECOND)
        WHERE @m = 1 AND id = @k;
       DELETE FROM ${this.waiters} WHERE @m = 1 AND id = @k AND (owner <=> @h OR expires_at <= UTC_TIMESTAMP(6));
       COMMIT;
       SELECT @m = 1 AND @l = 1 AS released,
              IF(@m = 1 AND IS_USED_LOCK(@sig) <=> CONNECTION_ID(), RELEASE_LOCK(@sig), NULL) AS signalled`,
      [n.id, owner, n.signal],
    );
    this.dropSignalHolder(owner);
    const row = (r.at(-1) as Array<{ released: string | number }>)[0];
    return Number(row?.released) > 0;
  }

  /**
   * The waiter `owner` gives up: leave the queue. Every grant to a waiter deletes its entry in the
   * same transaction (which locks it first), so an entry still there means no grant; else a lock
   * handed to it meanwhile is released onward.
   */
  async cancel(key: string, owner: string): Promise<void> {
    const n = this.namesOf(key);
    const r = await this.onHome<{ affectedRows: number }>(n.id, `DELETE FROM ${this.waiters} WHERE id = ? AND owner = ?`, [n.id, owner]);
    if (r.affectedRows > 0) return;
    await this.release(key, owner);
  }

  /**
   * Run one of the transactions above on the connection that holds `owner`'s signal (a lock
   * handed to it) or the key's home connection. A failed statement leaves no transaction open.
   */
  private async atomically(key: string, owner: string, sql: string, params: readonly unknown[]): Promise<unknown[]> {
    let conn = this.signalHolders.get(owner);
    if (conn && !conn.alive) {
      this.signalHolders.delete(owner);
      conn = undefined;
    }
    conn ??= await this.home(slotOf(this.namesOf(key).id, this.o.connections));
    try {
      return await conn.query<unknown[]>(sql, params);
    } catch (e) {
      if (conn.alive) conn.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }

  /** The lock handed to `owner` was released: its signal connection holds nothing any more. */
  private dropSignalHolder(owner: string): void {
    const conn = this.signalHolders.get(owner);
    if (!conn) return;
    this.signalHolders.delete(owner);
    this.giveBack(conn);
  }

  /**
   * A wake-up watch for `key`: a connection of its own blocked on the key's signal lock. A lock
   * handed to `owner` comes with its wake-up: the watch's connection then keeps the signal for the
   * new holder (its release and tries run there).
   */
  async watch(key: string, owner: string): Promise<ChangeWatch> {
    if (this.closed) throw this.closedError();
    if (this.watches.size >= this.o.maxWaits) {
      // Over the cap of blocked connections: wait for the holder's TTL only (still no polling).
      return new LatchWatch(() => undefined);
    }
    const n = this.namesOf(key);
    const w = new SignalWatch(
      await this.takeSpare(),
      { signal: n.signal, id: n.id, owner, locks: this.locks },
      () => this.takeSpare(),
      (conn) => {
        const before = this.signalHolders.get(owner);
        if (before && before !== conn) this.giveBack(before);
        this.signalHolders.set(owner, conn);
      },
      (watch, conn) => {
        this.watches.delete(watch);
        if (!conn) return;
        // A wake-up that landed as the watch closed may have kept the signal: pass it on.
        const passOn = (): Promise<unknown> =>
          conn.alive ? conn.query('DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), 0)', [n.signal, n.signal]).catch(() => undefined) : Promise.resolve();
        if (watch.armed) {
          // Reuse the connection only once the KILL has landed (it would hit the next statement).
          void Promise.all([this.interrupt(conn), watch.settled()])
            .then(passOn)
            .then(() => this.giveBack(conn));
        } else void passOn().then(() => this.giveBack(conn));
      },
    );
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

/** What a wake-up watch needs to know of its key and waiter. */
interface WatchTarget {
  readonly signal: string;
  readonly id: Buffer;
  readonly owner: string;
  readonly locks: string;
}

/**
 * Blocks in the server until the key's signal lock is released: armed when opened (before the
 * waiter's decisive try) and re-armed by `next()`. One arm is one round trip of three statements:
 * take the signal (blocking), read whether the key's row is now ours (a handoff), and pass the
 * signal on unless it is. Results: w = 1 (the signal was held and has been released: a release
 * happened; with a token: the lock was handed to us, and we keep the signal for it); -1 = nobody
 * holds the signal (answered at once: try again once, then sleep until the holder's TTL); 0 = the
 * long server timeout passed, or the wait was interrupted.
 */
class SignalWatch implements ChangeWatch {
  private inflight: Promise<{ w: number | null; token: string | null }> | undefined;
  private freeStreak = 0;
  private done = false;
  /** Undefined once handed to the driver with a signal it keeps for a handed-over lock. */
  private conn: Conn | undefined;

  constructor(
    conn: Conn,
    private readonly t: WatchTarget,
    /** A new connection when ours died (the server restarted...) or went with a handoff. */
    private readonly reconnect: () => Promise<Conn>,
    /** The lock was handed to us: `conn` keeps the signal for the new holder. */
    private readonly onHanded: (conn: Conn) => void,
    private readonly onClose: (w: SignalWatch, conn: Conn | undefined) => void,
  ) {
    this.conn = conn;
    this.arm(conn);
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

  private arm(conn: Conn): void {
    const { signal, id, owner, locks } = this.t;
    const p = conn
      .query<unknown[]>(
        // Between taking the signal and passing it on only a read by primary key runs; should a
        // KILL QUERY land there, the driver passes the signal on before reusing the connection.
        `SET @dlock_w = IF(IS_FREE_LOCK(?), -1, GET_LOCK(?, ${ARM_SECONDS}));
         SET @dlock_t = IF(@dlock_w = 1, (SELECT token FROM ${locks}
                                           WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6)), NULL);
         SELECT @dlock_w AS w, @dlock_t AS token, IF(@dlock_w = 1 AND @dlock_t IS NULL, RELEASE_LOCK(?), NULL) AS passed`,
        [signal, signal, id, owner, signal],
      )
      .then((r) => {
        const row = (r.at(-1) as Array<{ w: string | number | null; token: string | number | null }> | undefined)?.[0];
        const w = row?.w;
        const token = row?.token;
        return { w: w === null || w === undefined ? null : Number(w), token: token === null || token === undefined ? null : String(token) };
      });
    p.catch(() => undefined);
    this.inflight = p;
  }

  async next(maxMs: number, signal: AbortSignal): Promise<boolean | HandedOver> {
    if (signal.aborted) throw signal.reason as Error;
    const start = performance.now();
    if (!this.inflight) {
      if (!this.conn?.alive) {
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
      this.arm(this.conn);
    }
    const inflight = this.inflight as Promise<{ w: number | null; token: string | null }>;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await new Promise<{ w: number | null; token: string | null } | 'timeout' | 'error'>((resolve, reject) => {
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
    // A connection error: report a change, so that the caller's next try meets the error (and
    // backs off, and reports unavailability if it lasts).
    if (outcome === 'error') return true;
    if (outcome.w === 1) {
      this.freeStreak = 0;
      if (outcome.token !== null && this.conn) {
        // Handed to us: this connection now keeps the signal for our hold.
        const conn = this.conn;
        this.conn = undefined;
        this.onHanded(conn);
        return { token: BigInt(outcome.token) };
      }
      return true;
    }
    if (outcome.w === 0) this.freeStreak = 0;
    if (outcome.w === -1) {
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
    // 0 (server timeout) or null (interrupted): let the caller try again.
    return false;
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.onClose(this, this.conn);
  }
}
