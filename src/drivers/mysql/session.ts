/**
 * MySQL/MariaDB session mode: the lock IS a user lock (`GET_LOCK`) held by one of this driver's
 * own connections; a row per key beside it records the owner, the fencing token and the lease's
 * renewal deadline (for `inspect`). A server-blocking driver ({@link BlockingDriver}): one try on
 * the key's home connection, or one blocking `GET_LOCK` on a connection of its own; the core's
 * wait loop (src/core/wait-loop.ts) does the rest (deadline, aborts, retries with backoff, the
 * local FIFO gate per key, at most `maxWaits` server waits at once, giving back a late grant).
 *
 * Guarantees (see also ./index.ts):
 * - a lock lives as long as the connection that took it: the server frees it when it sees the
 *   connection end (crash, kill -9, `KILL <id>`, a restart), and the driver then aborts
 *   `Grant.session` of every lease that connection held;
 * - a silent holder (paused, cut off) loses its locks about one TTL after its last statement:
 *   the connection's `wait_timeout` is the largest TTL it holds (whole seconds, rounded up), and
 *   each grant's local deadline ({@link EngineSession}, one per grant: its TTL rounded up, from the
 *   send time of the last statement answered on its connection) is never later than that;
 * - waiters are served in arrival order (the server's lock queue is FIFO); an abort ends a server
 *   wait at once with `KILL CONNECTION` (which, unlike `KILL QUERY`, cannot miss a statement that
 *   has not started yet), and an abort while the wait still opens its connection stops it before
 *   anything waits; at the deadline the server's own `GET_LOCK` timeout ends it;
 * - a grant after a long server wait is confirmed by one more statement, whose send time starts
 *   the lease (the server's idle countdown started at some unknown moment during the wait).
 *
 * Handoff (the path between a release and the next waiter's grant), one round trip each way:
 * - release: `SELECT IF(ours, IF(row ours, RELEASE_LOCK + 2, RELEASE_LOCK), 0)` is the first
 *   statement the server runs, so the waiter's GET_LOCK returns at once; the row check is
 *   sequenced before the RELEASE_LOCK by IF (its condition is evaluated before either branch);
 *   the idle limit is reset after it (it bounds nothing once the lock is gone). The grant's
 *   session (an error object, listeners) is ended after the statement is sent.
 * - grant: three statements, no result set: GET_LOCK with the lease-table check in one
 *   expression; the token write (the one InnoDB write per grant), whose new value comes back in
 *   the OK packet through `LAST_INSERT_ID(expr)` instead of a SELECT; the idle limit. Measured
 *   (bench engines, and a bare GET_LOCK handoff between two mysql2 connections in the same run):
 *   each statement after GET_LOCK costs the waiter server time, and the client's JS on both
 *   sides is the rest; the old path ran 8 statements, this one 5.
 * - kept: the token write before the grant is answered (a token handed out before it is durable
 *   could be handed out again after a crash, breaking "strictly increasing"), and the confirming
 *   statement after a long wait, which never runs on a short handoff (it runs only when the wait
 *   took more than a quarter of the TTL). Setting the waiting connection's wait_timeout to
 *   wait + TTL before it blocks would make it unnecessary (the local deadline `sent + wait_timeout`
 *   is then never later than the server's, since the server's idle countdown starts after the
 *   grant, itself after the send), at the price of a silent holder keeping its lock for up to
 *   wait + TTL until its first renewal resets the limit; not worth it for a statement that only
 *   long waits pay, once.
 * Safety of the local deadline is unchanged: it counts from the send time of the GET_LOCK (or of
 * the confirming statement), never later than the start of the server's idle countdown, which
 * is at least the TTL (wait_timeout, whole seconds rounded up).
 * Does not:
 * - grant shared (read) holds or semaphore permits: GET_LOCK has no shared mode, and building one
 *   from several user locks would tie a reader's liveness to more than its connection, so
 *   `info.modes` is exclusive only and the core refuses a ReadWriteLock with an
 *   UnsupportedModeError that points to the table mode (`mode: 'table'`); a Semaphore here is one
 *   lock per permit;
 * - survive a failover to an asynchronous replica, or work through a multiplexing proxy;
 * - keep a grant's local deadline in step with a later `extend()` to a longer TTL: the grant's
 *   session counts its TTL at grant time (renewals at the usual cadence keep it alive).
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { MysqlSessionDriver } from 'dlock/mysql';
 * const locks = new LockClient(new MysqlSessionDriver({ url: 'mysql://app:secret@db:3306/app' }));
 * await locks.using('invoice:42', async (lease) => {
 *   // lease.signal aborts at once if the connection holding the lock drops
 * });
 * await locks.close();
 * ```
 */
import { DEADLINE, raceAbort } from '../../core/abort.js';
import { EngineSession } from '../../core/session.js';
import { SessionListeners } from '../driver.js';
import type {
  AcquireRequest,
  BlockingDriver,
  DriverInfo,
  ExtendItem,
  Grant,
  SessionSource,
  SessionState,
  TryResult,
} from '../driver.js';
import type { Conn, MysqlError } from './connection.js';
import { MysqlEngine } from './engine.js';
import type { KeyNames, MysqlDriverOptions } from './options.js';
import { slotOf } from './options.js';

/** One lock this driver holds: which connection holds it, and the session its lease rides on. */
interface Held {
  readonly key: string;
  readonly owner: string;
  readonly names: KeyNames;
  readonly conn: Conn;
  ttlMs: number;
  readonly session: EngineSession;
}

const BUSY: TryResult = { ok: false, retryAfterMs: -1 };

/** See the file header. */
export class MysqlSessionDriver extends MysqlEngine implements BlockingDriver, SessionSource {
  readonly kind = 'server-blocking' as const;
  readonly info: DriverInfo = {
    name: 'mysql',
    liveness: 'session',
    fair: true,
    scope: 'distributed',
    modes: ['exclusive'],
    fairness: 'fifo',
    modeAdvice: {
      why: 'MySQL/MariaDB session mode locks with GET_LOCK, which has no shared mode: one holder per key',
      instead:
        "On MySQL/MariaDB use the lease-table mode for read-write locks and semaphores: mode: 'table' (createMysqlDriver({ url, mode: 'table' }), new MysqlTableDriver(...), or ?mode=table in the URL).",
    },
  };
  /** Held locks by owner id. */
  private readonly held = new Map<string, Held>();
  /** Held locks by connection. */
  private readonly byConn = new Map<Conn, Set<Held>>();
  /** Connections that carry a blocking wait right now. */
  private readonly waiting = new Set<Conn>();
  private state: SessionState = 'lost';
  private readonly listeners = new SessionListeners();

  constructor(options: MysqlDriverOptions) {
    super(options);
  }

  /** At most `maxWaits` server waits at once (each blocks a connection of its own). */
  get maxBlocking(): number {
    return this.o.maxWaits;
  }

  /** `connected` while the driver has a working connection; `lost` before the first and after one that carried locks dropped. */
  get sessionState(): SessionState {
    return this.state;
  }

  onSessionState(listener: (state: SessionState) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Server-side waits in progress (lets tests check that finished waits leave nothing). */
  get openWaits(): number {
    return this.waiting.size;
  }

  /** Number of locks held through this driver. */
  get heldCount(): number {
    return this.held.size;
  }

  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    const names = this.namesOf(req.key);
    const conn = await this.home(slotOf(names.id, this.o.connections));
    const grant = await this.grantOn(conn, req, names, 0);
    return grant ? { ok: true, grant } : BUSY;
  }

  /**
   * One `GET_LOCK(name, maxMs)` on a connection of its own (a blocked GET_LOCK occupies its
   * connection). Getting the connection races `signal`; once the wait is on the server, an abort
   * kills that connection (the server frees whatever it got), and this settles when it is gone.
   */
  async block(req: AcquireRequest, maxMs: number, signal: AbortSignal): Promise<TryResult> {
    if (this.closed) throw this.closedError();
    const startedAt = this.now();
    const conn = await raceAbort(this.takeSpare(), signal, (late) => this.giveBack(late));
    const left = maxMs - (this.now() - startedAt);
    if (signal.aborted || left <= 0) {
      this.giveBack(conn);
      if (signal.aborted) throw signal.reason as Error;
      return BUSY;
    }
    this.waiting.add(conn);
    const work = this.grantOn(conn, req, this.namesOf(req.key), left / 1000);
    return new Promise<TryResult>((resolve, reject) => {
      // An abort ends the server wait at once: KILL CONNECTION lands whether or not the statement
      // has started (KILL QUERY would miss one not started yet), and the server frees whatever the
      // connection got. At the deadline the server's own GET_LOCK timeout ends it.
      const onAbort = (): void => {
        if (signal.reason !== DEADLINE) void this.interrupt(conn, 'CONNECTION');
      };
      signal.addEventListener('abort', onAbort, { once: true });
      // A killed connection may never answer its statement: its end settles the wait.
      const offClose = conn.onClose((error) => settle(() => reject(error ?? new Error('The MySQL connection was closed.'))));
      let done = false;
      const settle = (fn: () => void): void => {
        if (done) return;
        done = true;
        signal.removeEventListener('abort', onAbort);
        offClose();
        this.waitEnded(conn);
        if (signal.aborted && !this.byConn.has(conn)) reject(signal.reason as Error);
        else fn();
      };
      work.then(
        (grant) =>
          settle(() => {
            // A grant (also one that landed as the wait was given up: the core gives it back).
            if (grant) resolve({ ok: true, grant });
            else if (conn.alive) resolve(BUSY); // GET_LOCK answered 0 (its timeout passed) or NULL (interrupted)
            else reject(conn.failure ?? new Error('The MySQL connection was closed.'));
          }),
        (error: unknown) => settle(() => reject(error instanceof Error ? error : new Error(String(error)))),
      );
    });
  }

  /** A wait's statement ended: its connection serves again unless it won the lock (then it holds it). */
  private waitEnded(conn: Conn): void {
    this.waiting.delete(conn);
    if (!this.byConn.has(conn)) this.giveBack(conn);
  }

  /**
   * The grant, in one round trip on `conn` of three statements (see "Handoff" in the file header):
   * take the user lock (never twice on one connection: MariaDB and MySQL count nested GET_LOCKs)
   * and, in the same expression, give it back at once if a lease-table holder of the same key is
   * live; then bump the key's fencing counter and record owner, connection and lease deadline,
   * the new token coming back in the INSERT's OK packet (`LAST_INSERT_ID(expr)`); then set the
   * connection's idle limit. A grant is the INSERT's affected rows: it writes only when the lock
   * was taken, and then always changes the row (the token moves).
   */
  private async grantOn(conn: Conn, req: AcquireRequest, n: KeyNames, waitSeconds: number): Promise<Grant | null> {
    const us = Math.ceil(req.ttlMs) * 1000;
    const idleSeconds = this.idleLimit(conn, req.ttlMs);
    let sentAt = this.now();
    let token: bigint;
    try {
      const r = await conn.query<Array<{ affectedRows: number; insertId: number | string }>>(
        `SET @dlock_got = IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), 0, IF(GET_LOCK(?, ?) = 1, IF(EXISTS (
             SELECT 1 FROM ${this.locks} WHERE id = ? AND owner IS NOT NULL AND session_id IS NULL AND (expires_at > UTC_TIMESTAMP(6)
               OR EXISTS (SELECT 1 FROM ${this.holders} WHERE id = ? AND expires_at > UTC_TIMESTAMP(6)))),
           RELEASE_LOCK(?) - 1, 1), 0));
         INSERT INTO ${this.locks} (id, name, owner, token, expires_at, session_id)
           SELECT ?, ?, ?, LAST_INSERT_ID(1), UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, CONNECTION_ID() FROM DUAL WHERE @dlock_got = 1
           ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1), owner = ?,
             expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, session_id = CONNECTION_ID();
         SET SESSION wait_timeout = IF(@dlock_got = 1, ?, @@SESSION.wait_timeout)`,
        [n.lock, n.lock, waitSeconds, n.id, n.id, n.lock, n.id, req.key, req.owner, us, req.owner, us, idleSeconds],
      );
      const written = r[1];
      if (!written || !(written.affectedRows > 0)) return null;
      token = BigInt(written.insertId);
      // Never a token we cannot vouch for (a server that did not report LAST_INSERT_ID(expr)).
      if (token <= 0n) throw new Error(`the server reported no fencing token for lock "${req.key}" (insert id ${String(written.insertId)})`);
    } catch (e) {
      // The lock may be ours without its row (an error or a KILL after GET_LOCK): give it back.
      if ((e as MysqlError).fatal !== true && conn.alive && !this.holdsOn(conn, req.key)) {
        await conn
          .query(`DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), 0)`, [n.lock, n.lock])
          .catch(() => undefined);
      }
      throw e;
    }
    let set = this.byConn.get(conn);
    if (!set) {
      set = new Set();
      this.byConn.set(conn, set);
    }
    if (this.now() - sentAt > req.ttlMs / 4) {
      // A long server wait: the grant (and the server's idle countdown) started at some unknown
      // moment after we sent it. Confirm with one more statement, whose send time is then a
      // safe start for the lease (and its row's deadline is refreshed).
      const confirmAt = this.now();
      try {
        const r = await conn.query<{ affectedRows: number }>(
          `UPDATE ${this.locks} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
             WHERE id = ? AND owner = ? AND session_id = CONNECTION_ID() AND IS_USED_LOCK(?) <=> CONNECTION_ID()`,
          [us, n.id, req.owner, n.lock],
        );
        if (r.affectedRows === 0) throw new Error('the lock was not held after the wait');
      } catch (e) {
        if (set.size === 0) this.byConn.delete(conn);
        if (conn.alive) await conn.query(`DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), 0)`, [n.lock, n.lock]).catch(() => undefined);
        throw e;
      }
      sentAt = confirmAt;
    }
    // The connection's wait_timeout is at least this TTL (rounded up) while the grant is held.
    const timeoutMs = Math.max(1, Math.ceil(req.ttlMs / 1000)) * 1000;
    const session = new EngineSession(`MySQL connection ${conn.threadId}`, timeoutMs, sentAt);
    const held: Held = { key: req.key, owner: req.owner, names: n, conn, ttlMs: req.ttlMs, session };
    this.held.set(req.owner, held);
    set.add(held);
    if (!conn.alive) void session.end('lost', conn.failure);
    return {
      token,
      sentAt,
      session: session.grantSignal(req.key, req.owner),
      validUntil: () => session.validUntil(),
    };
  }

  /** wait_timeout (s) for `conn`: the largest TTL it holds (and `extraTtlMs`), rounded up. */
  private idleLimit(conn: Conn, extraTtlMs: number): number {
    let max = extraTtlMs;
    for (const h of this.byConn.get(conn) ?? []) max = Math.max(max, h.ttlMs);
    return Math.max(1, Math.ceil(max / 1000));
  }

  private holdsOn(conn: Conn, key: string): boolean {
    for (const h of this.byConn.get(conn) ?? []) if (h.key === key) return true;
    return false;
  }

  /** Confirm, per connection in one round trip, that each lock is still held by it (and its row ours). */
  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    const out = items.map(() => false);
    const groups = new Map<Conn, number[]>();
    items.forEach((it, i) => {
      const h = this.held.get(it.owner);
      if (!h || h.key !== it.key || !h.conn.alive) return;
      const list = groups.get(h.conn) ?? [];
      list.push(i);
      groups.set(h.conn, list);
    });
    await Promise.all(
      [...groups].map(async ([conn, indexes]) => {
        const params: unknown[] = [];
        let sql = '';
        for (const i of indexes) {
          const it = items[i] as ExtendItem;
          const h = this.held.get(it.owner) as Held;
          h.ttlMs = it.ttlMs;
          sql += `UPDATE ${this.locks} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                    WHERE id = ? AND owner = ? AND session_id = CONNECTION_ID() AND IS_USED_LOCK(?) <=> CONNECTION_ID();\n`;
          params.push(Math.ceil(it.ttlMs) * 1000, h.names.id, it.owner, h.names.lock);
        }
        sql += 'SET SESSION wait_timeout = ?';
        params.push(this.idleLimit(conn, 0));
        const results = await conn.query<Array<{ affectedRows: number }>>(sql, params);
        indexes.forEach((i, j) => {
          out[i] = (results[j]?.affectedRows ?? 0) > 0;
        });
      }),
    );
    // Not ours any more (the row was removed or taken behind our back): the core marks the lease
    // lost; give the user lock back so that it does not outlive the lease.
    items.forEach((it, i) => {
      const h = this.held.get(it.owner);
      if (!out[i] && h && h.key === it.key) void this.dropHeld(h).catch(() => undefined);
    });
    return out;
  }

  async release(key: string, owner: string): Promise<boolean> {
    const h = this.held.get(owner);
    if (!h || h.key !== key) return false;
    return this.dropHeld(h);
  }

  /**
   * Release the user lock on the connection that holds it; `true` if the row was still ours. The
   * RELEASE_LOCK is the first statement the server runs (the next waiter's GET_LOCK returns at
   * once), its row check sequenced before it by IF (the condition is evaluated before either
   * branch); the idle limit follows it.
   */
  private async dropHeld(h: Held): Promise<boolean> {
    this.unlink(h);
    const conn = h.conn;
    if (!conn.alive) {
      this.endSession(h);
      return false;
    }
    const left = this.byConn.get(conn)?.size ?? 0;
    const answer = conn.query<unknown[]>(
      // No write: a session row counts only while its connection holds the user lock (LIVE), so
      // the row may keep the last owner; one InnoDB write per grant (the token) is enough.
      // r: 3 = the row was ours and the lock released, 1 = released but the row not ours, else 0/2/NULL.
      `SELECT IF(IS_USED_LOCK(?) <=> CONNECTION_ID(),
                 IF((SELECT owner = ? AND session_id = CONNECTION_ID() FROM ${this.locks} WHERE id = ?) <=> 1,
                    RELEASE_LOCK(?) + 2, RELEASE_LOCK(?)),
                 0) AS r;
       SET SESSION wait_timeout = IF(? = 0, @@GLOBAL.wait_timeout, ?)`,
      [h.names.lock, h.owner, h.names.id, h.names.lock, h.names.lock, left, this.idleLimit(conn, 0)],
    );
    // The statement is on its way: ending the grant's session (an error object, listeners) no
    // longer delays the next holder.
    this.endSession(h);
    let r: unknown[];
    try {
      r = await answer;
    } catch (e) {
      // The connection died under it (killed by a forceRelease, say): the server frees its locks.
      if ((e as MysqlError).fatal === true) return false;
      throw e;
    }
    const row = (r[0] as Array<{ r: string | number | null }>)[0];
    if (left === 0 && !this.isHome(conn)) this.giveBack(conn);
    return Number(row?.r) === 3;
  }

  /** Drop `h` from the driver's maps (no I/O, no session end). */
  private unlink(h: Held): void {
    if (this.held.get(h.owner) === h) this.held.delete(h.owner);
    const set = this.byConn.get(h.conn);
    set?.delete(h);
    if (set?.size === 0) this.byConn.delete(h.conn);
    h.session.forget(h.owner);
  }

  private endSession(h: Held): void {
    void h.session.end('closed');
  }

  private homeSet = new WeakSet<Conn>();

  private isHome(conn: Conn): boolean {
    return this.homeSet.has(conn);
  }

  protected override async home(slot: number): Promise<Conn> {
    const c = await super.home(slot);
    this.homeSet.add(c);
    return c;
  }

  protected override onOpen(conn: Conn): void {
    this.setState('connected');
    // Every answer on a connection confirms the sessions of the locks it holds.
    conn.onConfirm((sentAt) => {
      for (const h of this.byConn.get(conn) ?? []) h.session.confirmed(sentAt);
    });
    conn.onClose((error) => {
      // A killed connection may never answer its statement: it counts as a wait until it is gone.
      this.waiting.delete(conn);
      this.sessionEnded(conn, error);
    });
  }

  /** A connection ended: every lock it held is gone (the server released them). */
  private sessionEnded(conn: Conn, error: MysqlError | undefined): void {
    const set = this.byConn.get(conn);
    this.byConn.delete(conn);
    if (!set || set.size === 0 || this.closed) return;
    for (const h of set) {
      if (this.held.get(h.owner) === h) this.held.delete(h.owner);
      // 'expired' when its deadline had passed already, else 'session-lost'.
      void h.session.end('lost', error);
    }
    this.setState('lost');
  }

  private setState(next: SessionState): void {
    if (this.state === next) return;
    this.state = next;
    this.listeners.emit(next);
  }

  /** Release what is held (best effort), close every connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.held.values()].map((h) => this.dropHeld(h)));
    this.setState('lost');
    await this.closeConnections();
  }
}
