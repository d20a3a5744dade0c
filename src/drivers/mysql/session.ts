import { DEADLINE, WaitScope, backoffMs, settleWithin } from '../../core/abort.js';
import { driftFor, sleep } from '../../core/clock.js';
import { LockLostError, UnavailableError } from '../../errors.js';
import { SessionListeners } from '../driver.js';
import type {
  AcquireRequest,
  DriverInfo,
  ExtendItem,
  Grant,
  NativeWaitDriver,
  SessionSource,
  SessionState,
  TryResult,
  WaitContext,
} from '../driver.js';
import type { Conn, MysqlError } from './connection.js';
import { MysqlEngine } from './engine.js';
import type { KeyNames, MysqlDriverOptions } from './options.js';
import { slotOf } from './options.js';

/** One lock this driver holds: which connection holds it, and the signal its session aborts. */
interface Held {
  readonly key: string;
  readonly owner: string;
  readonly names: KeyNames;
  readonly conn: Conn;
  ttlMs: number;
  readonly session: AbortController;
}

/** A server-side wait may not outlive its deadline by more than this before we cut it off. */
const WAIT_GRACE_MS = 2000;
/** An aborted server wait is interrupted every KILL_REPEAT_MS until it ends, at most this often; then its connection is dropped. */
const KILL_REPEATS = 40;
const KILL_REPEAT_MS = 50;

/**
 * Session mode: the lock IS a MySQL user lock (`GET_LOCK`) held by one of this driver's own
 * connections; a row per key beside it records the owner, the fencing token and the lease's
 * renewal deadline (for `inspect`). See the module header in ./index.ts for what it guarantees.
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
export class MysqlSessionDriver extends MysqlEngine implements NativeWaitDriver, SessionSource {
  /** Transitional: this driver still waits by itself (being ported to its kind). */
  readonly kind = 'native' as const;
  readonly info: DriverInfo = { name: 'mysql', liveness: 'session', fair: true, scope: 'distributed' };
  /** Held locks by owner id. */
  private readonly held = new Map<string, Held>();
  /** Held locks by connection. */
  private readonly byConn = new Map<Conn, Set<Held>>();
  /** Connections that carry a blocking wait right now. */
  private readonly waiting = new Set<Conn>();
  /** Waits in progress (close() lets them finish their clean-up). */
  private readonly busy = new Set<Promise<unknown>>();
  private state: SessionState = 'lost';
  private readonly listeners = new SessionListeners();

  constructor(options: MysqlDriverOptions) {
    super(options);
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
    return grant ? { ok: true, grant } : { ok: false, retryAfterMs: -1 };
  }

  /**
   * Wait in the server: `GET_LOCK(name, remaining wait)` on a connection of its own (a blocked
   * GET_LOCK occupies its connection). Local waiters of one key queue behind the first, which
   * alone waits on the server. An abort interrupts the server wait with `KILL QUERY`.
   */
  async acquire(req: AcquireRequest, wait: WaitContext): Promise<Grant | null> {
    if (this.closed) throw this.closedError();
    if (!this.turns.has(req.key) && !wait.signal.aborted) {
      try {
        // Through the instance method: one attempt, no connection of its own.
        const first = await this.tryAcquire(req);
        if (first.ok) return first.grant;
        if (this.now() >= wait.deadline) return null;
      } catch {
        // the wait below retries and reports unavailability
      }
    }
    const scope = new WaitScope([wait.signal], wait.deadline, this.now());
    const work = this.waitInServer(req, scope);
    this.busy.add(work);
    try {
      return await work;
    } finally {
      this.busy.delete(work);
      scope.dispose();
    }
  }

  private async waitInServer(req: AcquireRequest, scope: WaitScope): Promise<Grant | null> {
    try {
      await this.turns.enter(req.key, scope.signal);
    } catch (e) {
      if (scope.timedOut) return null;
      throw e;
    }
    const names = this.namesOf(req.key);
    let lastError: unknown;
    try {
      for (let attempt = 0; ; attempt++) {
        const remaining = scope.deadline - this.now();
        if (remaining <= 0 || scope.signal.aborted) break;
        let conn: Conn | undefined;
        try {
          conn = await this.takeSpare();
          const grant = await this.waitOn(conn, req, names, remaining, scope.signal);
          if (grant) {
            if (scope.signal.aborted) {
              // Granted as the wait was given up: give it straight back.
              await this.release(req.key, req.owner).catch(() => false);
              break;
            }
            return grant;
          }
          if (!conn.alive) throw conn.failure ?? new Error('The MySQL connection was closed.');
          this.giveBack(conn);
          conn = undefined;
          // GET_LOCK answered 0 (its timeout passed) or NULL (interrupted): loop re-checks time.
          if (!scope.signal.aborted && scope.deadline - this.now() > 50) continue;
          lastError = undefined;
          break;
        } catch (e) {
          if (conn) this.giveBack(conn);
          if (scope.signal.aborted) break;
          lastError = e;
          await sleep(Math.min(backoffMs(attempt), Math.max(0, scope.deadline - this.now())), scope.signal).catch(() => undefined);
        }
      }
    } finally {
      this.turns.leave(req.key);
    }
    if (scope.signal.aborted && !scope.timedOut) throw scope.signal.reason as Error;
    if (lastError !== undefined) {
      throw new UnavailableError(`Could not acquire lock "${req.key}" before the wait ran out`, { cause: lastError });
    }
    return null;
  }

  /** One blocking GET_LOCK on `conn`, interrupted on abort; a grant (or null). */
  private async waitOn(conn: Conn, req: AcquireRequest, names: KeyNames, remainingMs: number, signal: AbortSignal): Promise<Grant | null> {
    if (signal.aborted) return null;
    this.waiting.add(conn);
    let settled = false;
    let killing: Promise<void> | undefined;
    const onAbort = (): void => {
      // At the deadline the server's own GET_LOCK timeout ends the wait: nothing to interrupt.
      if (signal.reason === DEADLINE) return;
      killing = (async () => {
        // A KILL QUERY that reaches the server before the statement starts is lost (it does not
        // carry over to the next statement): repeat it until the statement has ended.
        for (let i = 0; i < KILL_REPEATS && !settled && conn.alive; i++) {
          await this.interrupt(conn);
          await sleep(KILL_REPEAT_MS);
        }
        if (!settled) conn.destroy();
      })();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // Should the server stop answering, do not wait far past the deadline.
    const watchdog = setTimeout(() => conn.destroy(), remainingMs + WAIT_GRACE_MS);
    // Once the wait's statement has ended: stop interrupting, and let a KILL QUERY still on its
    // way land before the next statement on this connection (clean-up or confirmation).
    const afterWait = async (): Promise<void> => {
      settled = true;
      clearTimeout(watchdog);
      signal.removeEventListener('abort', onAbort);
      if (killing) await killing;
    };
    try {
      return await this.grantOn(conn, req, names, remainingMs / 1000, afterWait);
    } finally {
      await afterWait();
      this.waiting.delete(conn);
    }
  }

  /**
   * The grant, in one round trip on `conn`: take the user lock (never twice on one connection:
   * MariaDB and MySQL count nested GET_LOCKs), unless a lease-table holder of the same key is
   * live; then bump the key's fencing counter and record owner, connection and lease deadline.
   */
  private async grantOn(
    conn: Conn,
    req: AcquireRequest,
    n: KeyNames,
    waitSeconds: number,
    afterWait?: () => Promise<void>,
  ): Promise<Grant | null> {
    const us = Math.ceil(req.ttlMs) * 1000;
    const idleSeconds = this.idleLimit(conn, req.ttlMs);
    let sentAt = this.now();
    let rows: Array<{ got: number | null; token: string | null }>;
    try {
      const r = await conn.query<unknown[]>(
        `SET @dlock_got = IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), 0, GET_LOCK(?, ?));
         SET @dlock_got = IF(@dlock_got = 1 AND EXISTS (
             SELECT 1 FROM ${this.locks} WHERE id = ? AND owner IS NOT NULL AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6)),
           RELEASE_LOCK(?) - 1, @dlock_got);
         INSERT INTO ${this.locks} (id, name, owner, token, expires_at, session_id)
           SELECT ?, ?, ?, 1, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, CONNECTION_ID() FROM DUAL WHERE @dlock_got = 1
           ON DUPLICATE KEY UPDATE token = token + 1, owner = ?,
             expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, session_id = CONNECTION_ID();
         SET SESSION wait_timeout = IF(@dlock_got = 1, ?, @@SESSION.wait_timeout);
         SELECT @dlock_got AS got, (SELECT token FROM ${this.locks} WHERE id = ?) AS token`,
        [n.lock, n.lock, waitSeconds, n.id, n.lock, n.id, req.key, req.owner, us, req.owner, us, idleSeconds, n.id],
      );
      rows = r[r.length - 1] as typeof rows;
      await afterWait?.();
    } catch (e) {
      await afterWait?.();
      // The lock may be ours without its row (an error or a KILL after GET_LOCK): give it back.
      if ((e as MysqlError).fatal !== true && conn.alive && !this.holdsOn(conn, req.key)) {
        await conn
          .query(`DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), 0)`, [n.lock, n.lock])
          .catch(() => undefined);
      }
      throw e;
    }
    const row = rows[0];
    if (Number(row?.got) !== 1 || row?.token == null) return null;
    const held: Held = { key: req.key, owner: req.owner, names: n, conn, ttlMs: req.ttlMs, session: new AbortController() };
    this.held.set(req.owner, held);
    let set = this.byConn.get(conn);
    if (!set) {
      set = new Set();
      this.byConn.set(conn, set);
    }
    set.add(held);
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
        await this.dropHeld(held).catch(() => false);
        throw e;
      }
      sentAt = confirmAt;
    }
    return {
      token: BigInt(row.token),
      sentAt,
      session: held.session.signal,
      validUntil: () => this.sessionDeadline(conn),
    };
  }

  /**
   * The engine frees the locks of a connection that stays silent for `wait_timeout` seconds (the
   * driver sets it to the largest TTL held on the connection, rounded up): a paused or cut-off
   * holder loses its locks about one TTL after its last renewal, as with a lease. So the session's
   * local deadline is the last confirmed statement plus that timeout.
   */
  private sessionDeadline(conn: Conn): number {
    if (!conn.alive) return Number.NEGATIVE_INFINITY;
    const ms = this.idleLimit(conn, 0) * 1000;
    return conn.confirmedAt + ms - driftFor(ms);
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

  /** Release the user lock on the connection that holds it; `true` if the row was still ours. */
  private async dropHeld(h: Held): Promise<boolean> {
    this.forget(h);
    const conn = h.conn;
    if (!conn.alive) return false;
    const left = this.byConn.get(conn)?.size ?? 0;
    const r = await conn.query<unknown[]>(
      // No write: a session row counts only while its connection holds the user lock (LIVE), so
      // the row may keep the last owner; one InnoDB write per grant (the token) is enough.
      `SET @dlock_mine = (SELECT owner = ? AND session_id = CONNECTION_ID() FROM ${this.locks} WHERE id = ?);
       SET SESSION wait_timeout = IF(? = 0, @@GLOBAL.wait_timeout, ?);
       SELECT @dlock_mine AS mine, IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), 0) AS released`,
      [h.owner, h.names.id, left, this.idleLimit(conn, 0), h.names.lock, h.names.lock],
    );
    const row = (r[r.length - 1] as Array<{ mine: string | number; released: number | null }>)[0];
    if (left === 0 && !this.isHome(conn)) this.giveBack(conn);
    return Number(row?.mine) > 0 && Number(row?.released) === 1;
  }

  private forget(h: Held): void {
    if (this.held.get(h.owner) === h) this.held.delete(h.owner);
    const set = this.byConn.get(h.conn);
    set?.delete(h);
    if (set?.size === 0) this.byConn.delete(h.conn);
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
    conn.onClose((error) => this.sessionEnded(conn, error));
  }

  /** A connection ended: every lock it held is gone (the server released them). */
  private sessionEnded(conn: Conn, error: MysqlError | undefined): void {
    const set = this.byConn.get(conn);
    this.byConn.delete(conn);
    if (!set || set.size === 0 || this.closed) return;
    const now = this.now();
    for (const h of set) {
      if (this.held.get(h.owner) === h) this.held.delete(h.owner);
      const expired = now >= conn.confirmedAt + this.idleLimit(conn, h.ttlMs) * 1000;
      h.session.abort(new LockLostError(h.key, expired ? 'expired' : 'session-lost', { cause: error }));
    }
    this.setState('lost');
  }

  private setState(next: SessionState): void {
    if (this.state === next) return;
    this.state = next;
    this.listeners.emit(next);
  }

  /** Interrupt waits, release what is held (best effort), close every connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    // Waits aborted by the client's close interrupt their server wait and clean up first.
    await settleWithin(Promise.allSettled([...this.busy]), 2000);
    await Promise.allSettled([...this.held.values()].map((h) => this.dropHeld(h)));
    this.setState('lost');
    await this.closeConnections();
  }
}
