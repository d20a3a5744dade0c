/**
 * PostgreSQL session mode: session-level advisory locks, held by dedicated connections.
 *
 * - Key mapping: `<prefix>session_locks` gives each key text a unique id (an identity column);
 *   the advisory lock is `pg_advisory_lock(advisoryBase + id)`. Two different keys never share an
 *   advisory key, and every statement re-checks that the id still belongs to the key.
 * - Connections: `main` runs the non-blocking work (try-locks, registry, renewals, inspect) and
 *   holds what a try-lock granted. A wait runs a blocking `pg_advisory_lock` on a connection of
 *   its own, which holds nothing else: when granted, that connection carries the lock until it is
 *   released (then it serves the next wait). At most `maxConnections` connections; waits beyond
 *   that queue locally. In one driver, waiters for one key queue locally (FIFO) and only the first
 *   one waits on the server, so 10,000 local waiters cost one connection.
 * - Waiting is server-side: the lock manager queues waiters (FIFO) and wakes the first one when the
 *   holder releases or its session ends (kill -9, pg_terminate_backend, network loss detected by
 *   TCP keepalive). `lock_timeout` bounds the wait; an abort cancels it (pg_cancel_backend).
 * - A connection that dies aborts `Grant.session` of every lease it carried (the server released
 *   them). Renewal (`extend`) confirms in one statement, through `pg_locks`, that the holder's
 *   backend still holds each key, and records a lease expiry that `inspect` reports.
 */
import type pg from 'pg';
import { settleWithin, backoffMs, WaitScope } from '../../core/abort.js';
import { driftFor, monotonicNow, sleep } from '../../core/clock.js';
import { KeyGates } from '../../core/key-gates.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError, LockLostError, UnavailableError } from '../../errors.js';
import { SessionListeners } from '../driver.js';
import type {
  AcquireRequest,
  DriverInfo,
  ExtendItem,
  Grant,
  LockState,
  NativeWaitDriver,
  SessionSource,
  SessionState,
  TryResult,
  WaitContext,
} from '../driver.js';
import { backendPid, clientConfig, int8, openClient, pgModule, sqlState, timed, type ConnectionSettings } from './connection.js';
import { allocateRange, raiseMark, readMark, schemaSql, type Names, type Run } from './schema.js';

export interface SessionModeOptions {
  readonly connection: ConnectionSettings;
  readonly names: Names;
  readonly advisoryBase: bigint;
  readonly maxConnections: number;
  readonly createTables: boolean;
  readonly opTimeoutMs: number;
  readonly logger: Logger | undefined;
}

/** One dedicated connection. */
interface Conn {
  readonly client: pg.Client;
  readonly pid: number;
  /** Keys whose advisory lock this connection holds. */
  readonly holds: Map<string, Hold>;
  dead: boolean;
  /** In a blocking wait, or cleaning up after one: not available. */
  busy: boolean;
  /** Monotonic time the last reply on this connection arrived (the server had our session then). */
  confirmedAt: number;
}

interface Hold {
  readonly key: string;
  readonly owner: string;
  readonly id: bigint;
  readonly conn: Conn;
  readonly controller: AbortController;
  lostAt: number;
}

/** Local FIFO of waiters for one key. */
/**
 * Server-side options of every session connection: the server drops a silent (dead) client after
 * 30-35 s of silence and frees its locks (TCP keepalive: 5 s idle, then 6 probes 5 s apart), and
 * notices a waiter that went away while it waits.
 */
const SESSION_SERVER_OPTIONS =
  '-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=6 -c client_connection_check_interval=2000';
/**
 * How long after we last heard from the server it surely still keeps our session: our kernel ACKs
 * every reply on receipt, and the server drops a connection only after `interval x count` (30 s)
 * of silence from us (admin termination aside: that is what fencing is for).
 */
export const SESSION_GUARANTEE_MS = 30_000;

const ID_CACHE_MAX = 10_000;
const IDLE_SPARES = 2;

/** See the file header. Created through `PostgresDriver` / `createPostgresDriver`. */
export class PostgresSessionDriver implements NativeWaitDriver, SessionSource {
  /** Transitional: this driver still waits by itself (being ported to its kind). */
  readonly kind = 'native' as const;
  readonly info: DriverInfo = { name: 'postgres', liveness: 'session', fair: true, scope: 'distributed' };
  private readonly n: Names;
  private readonly config: pg.ClientConfig;
  private main: Promise<Conn> | undefined;
  private readonly conns = new Set<Conn>();
  private opening = 0;
  private readonly spares: Conn[] = [];
  private readonly connQueue: Array<(c: Conn | undefined) => void> = [];
  private readonly holds = new Map<string, Hold>();
  private readonly trying = new Set<string>();
  private readonly gates = new KeyGates();
  private readonly ids = new Map<string, bigint>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly listeners = new SessionListeners();
  private schema: Promise<void> | undefined;
  private lastState: SessionState = 'lost';
  private suspended = false;
  private closed = false;
  private readonly sql: Record<'tryLock' | 'waitLock' | 'release' | 'extend' | 'inspect' | 'held' | 'register', string>;

  /** @internal Create it with {@link createPostgresDriver} or `connect()`. */
  constructor(private readonly o: SessionModeOptions) {
    pgModule(); // MissingPeerError (npm install pg) here rather than at the first lock
    this.n = o.names;
    // Pipelined: concurrent statements (tries, releases, renewals of many leases) share the wire
    // instead of queueing one round trip each. A blocking wait runs alone on its own connection.
    this.config = clientConfig(o.connection, {
      options: SESSION_SERVER_OPTIONS,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      pipeline: true,
    });
    const { sessionLocks: sl, tokensRegclass } = this.n;
    const base = `${o.advisoryBase}::bigint`;
    // The pg_locks row of the advisory lock of `s` (bigint keys: objsubid 1, high and low halves).
    const heldBy = (s: string): string => `l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = ((${base} + ${s}.id) >> 32) AND l.objid::bigint = ((${base} + ${s}.id) & 4294967295)
        AND l.pid = ${s}.holder_pid`;
    const grant = `token = nextval(${tokensRegclass}), owner = $4, holder_pid = pg_backend_pid(),
        expires_at = clock_timestamp() + $5::int * interval '1 millisecond'`;
    this.sql = {
      register: `
        WITH added AS (INSERT INTO ${sl} (key) VALUES ($1) ON CONFLICT (key) DO NOTHING RETURNING id)
        SELECT id FROM added UNION ALL SELECT id FROM ${sl} WHERE key = $1`,
      // MATERIALIZED: the lock function runs exactly once, even if the row is re-checked.
      tryLock: `
        WITH got AS MATERIALIZED (SELECT pg_try_advisory_lock($2::bigint) AS ok),
        upd AS (UPDATE ${sl} AS s SET ${grant} FROM got WHERE got.ok AND s.id = $1 AND s.key = $3 RETURNING s.token)
        SELECT got.ok, (SELECT token FROM upd) AS token FROM got`,
      // Blocks in the server's lock queue, bounded by lock_timeout ($6), then records the grant.
      waitLock: `
        WITH cfg AS MATERIALIZED (SELECT set_config('lock_timeout', $6, true) AS v),
        got AS MATERIALIZED (SELECT pg_advisory_lock($2::bigint) AS v FROM cfg)
        UPDATE ${sl} AS s SET ${grant} FROM got WHERE s.id = $1 AND s.key = $3 RETURNING s.token`,
      // Run on the holding connection: clear the record if it is still ours, THEN unlock (we know
      // locally that this connection holds the lock). The order matters: once unlocked, the next
      // holder's grant may update the row, and our clearing must not race with it.
      release: `
        WITH mine AS (
          UPDATE ${sl} SET owner = NULL, holder_pid = NULL, expires_at = NULL
          WHERE id = $1 AND owner = $3 AND holder_pid = pg_backend_pid() RETURNING 1
        ),
        cleared AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM mine) AS owned)
        SELECT cleared.owned, pg_advisory_unlock($2::bigint) AS unlocked FROM cleared`,
      extend: `
        UPDATE ${sl} AS s SET expires_at = clock_timestamp() + i.ttl * interval '1 millisecond'
        FROM unnest($1::text[], $2::text[], $3::int[]) AS i(key, owner, ttl), pg_locks AS l
        WHERE s.key = i.key AND s.owner = i.owner AND ${heldBy('s')}
        RETURNING s.key, s.owner`,
      inspect: `
        SELECT s.owner, s.token, floor(extract(epoch FROM s.expires_at - clock_timestamp()) * 1000) AS remaining_ms
        FROM ${sl} AS s JOIN pg_locks AS l ON ${heldBy('s')}
        WHERE s.key = $1 AND s.owner IS NOT NULL`,
      held: `SELECT 1 FROM ${sl} AS s JOIN pg_locks AS l ON ${heldBy('s')}
        WHERE s.key = $1 AND s.owner = $2 FOR SHARE OF s`,
    };
  }

  // ------------------------------------------------------------------ session state

  get sessionState(): SessionState {
    if (this.closed || !this.main) return 'lost';
    return this.lastState;
  }

  onSessionState(listener: (state: SessionState) => void): () => void {
    return this.listeners.add(listener);
  }

  private setState(state: SessionState): void {
    if (state === this.lastState) return;
    this.lastState = state;
    this.listeners.emit(state);
  }

  // ------------------------------------------------------------------ lock operations

  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    this.assertOpen();
    // A session lock is reentrant on its own connection: another owner of this driver must not
    // take a key this driver holds (or is taking) through it.
    if (this.holds.has(req.key) || this.trying.has(req.key)) return { ok: false, retryAfterMs: -1 };
    this.trying.add(req.key);
    try {
      const conn = await this.mainConn();
      for (let attempt = 0; ; attempt++) {
        const id = await this.keyId(conn, req.key);
        // Taken once connected and registered: opening a connection does not eat into the TTL.
        const sentAt = monotonicNow();
        let row: Record<string, unknown> | undefined;
        try {
          [row] = await this.query(conn, this.sql.tryLock, [id.toString(), this.advisory(id), req.key, req.owner, Math.ceil(req.ttlMs)]);
        } catch (e) {
          // The lock may have been taken before the statement failed: give it back.
          await this.unlockQuietly(conn, id);
          throw e;
        }
        if (row?.ok !== true) return { ok: false, retryAfterMs: -1 };
        if (row.token !== null && row.token !== undefined) return { ok: true, grant: this.hold(conn, req, id, int8(row.token), sentAt) };
        // The id no longer belongs to the key (its row was deleted and re-created): re-resolve.
        await this.unlockQuietly(conn, id);
        this.ids.delete(req.key);
        if (attempt > 0) throw new UnavailableError(`The key registry row of lock "${req.key}" keeps changing`);
      }
    } finally {
      this.trying.delete(req.key);
    }
  }

  /** Wait until granted (the grant) or the deadline (`null`); rejects with the wait signal's reason when it aborts. */
  async acquire(req: AcquireRequest, wait: WaitContext): Promise<Grant | null> {
    this.assertOpen();
    if (!this.gates.has(req.key) && !wait.signal.aborted) {
      try {
        const first = await this.tryAcquire(req);
        if (first.ok) return first.grant;
      } catch {
        // the slow path retries and reports unavailability
      }
      if (monotonicNow() >= wait.deadline) return null;
    }
    const scope = new WaitScope([wait.signal], wait.deadline, monotonicNow());
    try {
      try {
        await this.gates.take(req.key, scope.signal);
      } catch (e) {
        if (scope.timedOut) return null;
        throw e;
      }
      try {
        return await this.waitLoop(req, scope);
      } finally {
        this.gates.leave(req.key);
      }
    } finally {
      scope.dispose();
    }
  }

  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (items.length === 0) return [];
    const conn = await this.mainConn();
    // Holders other than `main` hear from the server too (same round trip), so that their
    // connection's confirmation (Grant.validUntil) stays fresh.
    const others = new Set<Conn>();
    for (const it of items) {
      const c = this.holds.get(it.key)?.conn;
      if (c && c !== conn && !c.dead) others.add(c);
    }
    for (const c of others) this.query(c, 'SELECT 1').catch(() => undefined);
    let rows: Array<Record<string, unknown>>;
    try {
      rows = await this.query(conn, this.sql.extend, [items.map((i) => i.key), items.map((i) => i.owner), items.map((i) => Math.ceil(i.ttlMs))]);
    } catch (e) {
      // The socket is open but the check failed or timed out: validity is in doubt.
      if (!conn.dead) {
        this.suspended = true;
        this.setState('suspended');
      }
      throw e;
    }
    const confirmed = new Set(rows.map((r) => `${String(r.owner)}\u0000${String(r.key)}`));
    const out = items.map((i) => {
      const local = this.holds.get(i.key);
      if (local && local.owner === i.owner && local.conn.dead) return false;
      return confirmed.has(`${i.owner}\u0000${i.key}`);
    });
    // Held here but no longer recorded as ours (revoked behind our back): the connection still has
    // the advisory lock, and the core will not release a lease it lost as 'not-held'. Unlock it.
    await Promise.all(
      items.map(async (it, i) => {
        const local = this.holds.get(it.key);
        if (out[i] || !local || local.owner !== it.owner || local.conn.dead) return;
        this.forget(local);
        await this.unlockQuietly(local.conn, local.id);
        this.connFreed(local.conn);
      }),
    );
    return out;
  }

  async release(key: string, owner: string): Promise<boolean> {
    const hold = this.holds.get(key);
    // Only the session that holds an advisory lock can release it: a foreign release is a no-op.
    if (!hold || hold.owner !== owner) return false;
    this.forget(hold);
    if (hold.conn.dead) return false;
    try {
      const [row] = await this.query(hold.conn, this.sql.release, [hold.id.toString(), this.advisory(hold.id), owner]);
      return row?.unlocked === true && row.owned === true;
    } catch (e) {
      // Unknown whether it unlocked: end the session, so that the server surely frees the lock
      // (and the connection never serves a later wait while still holding it).
      this.abandon(hold.conn, e);
      throw e;
    } finally {
      this.connFreed(hold.conn);
    }
  }

  async inspect(key: string): Promise<LockState | null> {
    const [row] = await this.query(await this.mainConn(), this.sql.inspect, [key]);
    if (!row) return null;
    const remaining = Number(row.remaining_ms);
    // A holder whose lease lapsed still holds the lock for as long as its session lives.
    return { owner: String(row.owner), token: int8(row.token), remainingMs: remaining > 0 ? remaining : -1 };
  }

  /** The durable high-water mark of `key` (worker-id leases); 0n when none was written. */
  async readMark(key: string): Promise<bigint> {
    return readMark(await this.runner(), this.n, key);
  }

  /** Raise the mark of `key` to `mark` while `owner` holds it; false when it no longer holds it. */
  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    return raiseMark(await this.runner(), this.n, this.sql.held, key, owner, mark);
  }

  /** Take `count` ids from the counter `name`; resolves the first of the range (segment ids). */
  async allocateRange(name: string, count: bigint): Promise<bigint> {
    return allocateRange(await this.runner(), this.n, name, count);
  }

  /** Number of open connections (main, holders, waiters, spares). */
  get connectionCount(): number {
    return this.conns.size;
  }

  /** Keys with local waiters (for tests: 0 once no wait is in progress). */
  get waitingKeys(): number {
    return this.gates.size;
  }

  /** The backend pid of the connection that holds `key` for this driver (tests, diagnostics). */
  holderPid(key: string): number | undefined {
    return this.holds.get(key)?.conn.pid;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const give of this.connQueue.splice(0)) give(undefined);
    await settleWithin(Promise.allSettled([...this.background]), 2000);
    for (const hold of [...this.holds.values()]) {
      this.forget(hold);
      hold.controller.abort(new LockLostError(hold.key, 'closed'));
    }
    const ends = [...this.conns].map((c) => {
      c.dead = true;
      return settleWithin(c.client.end(), 2000);
    });
    this.conns.clear();
    this.spares.length = 0;
    this.main = undefined;
    await Promise.all(ends);
    this.setState('lost');
  }

  // ------------------------------------------------------------------ waiting

  private async waitLoop(req: AcquireRequest, scope: WaitScope): Promise<Grant | null> {
    let lastError: unknown;
    for (let attempt = 0; ; attempt++) {
      if (scope.signal.aborted) break;
      try {
        // A local holder may have released while we queued: a try costs one round trip and no connection.
        if (attempt === 0 || lastError !== undefined) {
          const r = await this.tryAcquire(req);
          if (r.ok) return this.lateCheck(req, r.grant, scope);
        }
        return await this.waitOnServer(req, scope);
      } catch (e) {
        if (scope.signal.aborted) break;
        lastError = e;
      }
      try {
        await sleep(Math.min(backoffMs(attempt), Math.max(0, scope.deadline - monotonicNow())), scope.signal);
      } catch {
        break;
      }
    }
    if (!scope.timedOut) throw scope.signal.reason as Error;
    if (lastError !== undefined) throw new UnavailableError(`Could not acquire lock "${req.key}" before the wait ran out`, { cause: lastError });
    return null;
  }

  /** A grant that raced with the end of the wait is given back. */
  private lateCheck(req: AcquireRequest, grant: Grant, scope: WaitScope): Grant | null {
    if (!scope.signal.aborted) return grant;
    this.release(req.key, req.owner).catch(() => undefined);
    if (scope.timedOut) return null;
    throw scope.signal.reason as Error;
  }

  /** One blocking wait on a connection of its own; null when lock_timeout ran out. */
  private async waitOnServer(req: AcquireRequest, scope: WaitScope): Promise<Grant | null> {
    const conn = await this.takeConn(scope.signal);
    let handedOff = false;
    try {
      const id = await this.keyId(conn, req.key);
      const remaining = Math.ceil(scope.deadline - monotonicNow());
      if (remaining <= 0) return null;
      // The server bounds the wait too (a little later than ours, which normally ends it first).
      const waiting = conn.client.query(this.sql.waitLock, [
        id.toString(),
        this.advisory(id),
        req.key,
        req.owner,
        Math.ceil(req.ttlMs),
        `${remaining + 100}ms`,
      ]);
      const outcome = await new Promise<{ rows: Array<Record<string, unknown>> } | { error: unknown } | 'aborted'>((resolve) => {
        const onAbort = (): void => resolve('aborted');
        scope.signal.addEventListener('abort', onAbort, { once: true });
        waiting.then(
          (r) => {
            scope.signal.removeEventListener('abort', onAbort);
            resolve({ rows: r.rows as Array<Record<string, unknown>> });
          },
          (error: unknown) => {
            scope.signal.removeEventListener('abort', onAbort);
            resolve({ error });
          },
        );
      });
      if (outcome === 'aborted') {
        // Cancel the server-side wait in the background; the connection comes back once clean.
        handedOff = true;
        this.track(this.cancelWait(conn, waiting));
        if (scope.timedOut) return null;
        throw scope.signal.reason as Error;
      }
      if ('error' in outcome) {
        // The lock may have been granted before the statement failed (lock_timeout on the row).
        if (!conn.dead) {
          handedOff = true;
          this.track(this.cleanUp(conn));
        }
        if (sqlState(outcome.error) === '55P03') return null; // lock_timeout
        throw outcome.error;
      }
      const token = outcome.rows[0]?.token;
      if (token === null || token === undefined) {
        handedOff = true;
        this.ids.delete(req.key);
        this.track(this.cleanUp(conn));
        throw new UnavailableError(`The key registry row of lock "${req.key}" changed during the wait`);
      }
      handedOff = true;
      conn.busy = false;
      // The lock is ours from its grant until the session ends (no server TTL), and the wait may
      // have lasted long: the lease's local TTL counts from the reply, when the server surely
      // still had our session (see SESSION_GUARANTEE_MS).
      conn.confirmedAt = monotonicNow();
      return this.hold(conn, req, id, int8(token), conn.confirmedAt);
    } finally {
      if (!handedOff) {
        conn.busy = false;
        this.connFreed(conn);
      }
    }
  }

  /** Cancel a blocking wait (pg_cancel_backend from `main`), then make sure it holds nothing. */
  private async cancelWait(conn: Conn, waiting: Promise<unknown>): Promise<void> {
    try {
      const main = await this.mainConn();
      // Awaited before anything else runs on `conn`: a cancel that arrives while it is idle is ignored.
      await this.query(main, 'SELECT pg_cancel_backend($1)', [conn.pid]);
    } catch {
      // main unreachable: the wait ends by lock_timeout, or with the connection
    }
    await waiting.catch(() => undefined);
    await this.cleanUp(conn);
  }

  /** Release whatever a failed or abandoned wait may hold on `conn`, then hand the connection on. */
  private async cleanUp(conn: Conn): Promise<void> {
    for (let i = 0; i < 3 && !conn.dead; i++) {
      try {
        // Safe: a waiting connection holds nothing but what this wait may have obtained.
        await this.query(conn, 'SELECT pg_advisory_unlock_all()');
        break;
      } catch (e) {
        // Retry only when a stray cancel hit it; otherwise end the session (it frees everything).
        if (sqlState(e) !== '57014' || i === 2) this.abandon(conn, e);
      }
    }
    conn.busy = false;
    this.connFreed(conn);
  }

  private track(p: Promise<unknown>): void {
    const q = p.catch(() => undefined);
    this.background.add(q);
    void q.finally(() => this.background.delete(q));
  }

  // ------------------------------------------------------------------ connections

  /** A connection for one wait: a spare, a new one (below the limit), or the next one freed. */
  private async takeConn(signal: AbortSignal): Promise<Conn> {
    for (;;) {
      this.assertOpen();
      const spare = this.spares.pop();
      if (spare && !spare.dead) {
        spare.busy = true;
        return spare;
      }
      if (spare) continue;
      if (this.conns.size + this.opening < this.o.maxConnections) {
        this.opening++;
        let conn: Conn;
        try {
          conn = await this.open();
        } finally {
          this.opening--;
        }
        conn.busy = true;
        return conn;
      }
      const conn = await new Promise<Conn | undefined>((resolve, reject) => {
        const give = (c: Conn | undefined): void => {
          signal.removeEventListener('abort', onAbort);
          resolve(c);
        };
        const onAbort = (): void => {
          const i = this.connQueue.indexOf(give);
          if (i >= 0) this.connQueue.splice(i, 1);
          reject(signal.reason as Error);
        };
        this.connQueue.push(give);
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (conn && !conn.dead) {
        conn.busy = true;
        return conn;
      }
    }
  }

  /** A non-main connection may serve the next wait once it holds nothing and is not busy. */
  private connFreed(conn: Conn): void {
    if (conn.dead || conn.busy || conn.holds.size > 0 || this.closed) return;
    void this.main?.then(
      (m) => {
        if (m !== conn) this.offer(conn);
      },
      () => this.offer(conn),
    );
  }

  private offer(conn: Conn): void {
    if (conn.dead || conn.busy || conn.holds.size > 0 || this.spares.includes(conn)) return;
    const next = this.connQueue.shift();
    if (next) {
      next(conn);
      return;
    }
    if (this.spares.length < IDLE_SPARES) this.spares.push(conn);
    else this.retire(conn);
  }

  private retire(conn: Conn): void {
    conn.dead = true;
    this.conns.delete(conn);
    this.track(conn.client.end());
    // A slot is free: let a queued wait open a connection.
    this.connQueue.shift()?.(undefined);
  }

  private mainConn(): Promise<Conn> {
    this.assertOpen();
    if (this.main) return this.main;
    const opening = this.open().then(
      (c) => {
        this.suspended = false;
        this.setState('connected');
        return c;
      },
      (e: unknown) => {
        if (this.main === opening) this.main = undefined;
        throw e;
      },
    );
    this.main = opening;
    return opening;
  }

  private async open(): Promise<Conn> {
    if (this.o.createTables && !this.schema) {
      const creating = (async () => {
        const c = new (pgModule().Client)(clientConfig(this.o.connection));
        c.on('error', () => undefined);
        try {
          await c.connect();
          await c.query(schemaSql(this.n));
        } finally {
          await c.end().catch(() => undefined);
        }
      })();
      this.schema = creating;
      creating.catch(() => {
        if (this.schema === creating) this.schema = undefined;
      });
    }
    await this.schema;
    const ref: { conn?: Conn } = {};
    const client = await openClient(this.config, (cause) => {
      if (ref.conn) this.died(ref.conn, cause);
    });
    const conn: Conn = (ref.conn = { client, pid: backendPid(client), holds: new Map(), dead: false, busy: false, confirmedAt: monotonicNow() });
    if (this.closed) {
      conn.dead = true;
      await client.end().catch(() => undefined);
      throw new ClosedError('PostgreSQL lock driver');
    }
    this.conns.add(conn);
    return conn;
  }

  /** A connection ended: the server released every lock it held. */
  private died(conn: Conn, cause: unknown): void {
    if (conn.dead && !this.conns.has(conn)) return;
    conn.dead = true;
    this.conns.delete(conn);
    const i = this.spares.indexOf(conn);
    if (i >= 0) this.spares.splice(i, 1);
    conn.client.end().catch(() => undefined);
    const lost = [...conn.holds.values()];
    const now = monotonicNow();
    for (const hold of lost) {
      this.forget(hold);
      hold.lostAt = now;
      hold.controller.abort(new LockLostError(hold.key, 'session-lost', { cause }));
    }
    void this.main?.then(
      (m) => {
        if (m === conn && !this.closed) {
          this.main = undefined;
          this.setState('lost');
        } else if (lost.length > 0 && !this.closed) {
          this.setState('lost');
          this.setState(this.suspended ? 'suspended' : 'connected');
        }
      },
      () => undefined,
    );
    this.connQueue.shift()?.(undefined);
  }

  private hold(conn: Conn, req: AcquireRequest, id: bigint, token: bigint, sentAt: number): Grant {
    const controller = new AbortController();
    const hold: Hold = { key: req.key, owner: req.owner, id, conn, controller, lostAt: Number.POSITIVE_INFINITY };
    if (conn.dead || this.closed) {
      hold.lostAt = monotonicNow();
      controller.abort(new LockLostError(req.key, this.closed ? 'closed' : 'session-lost'));
    } else {
      this.holds.set(req.key, hold);
      conn.holds.set(req.key, hold);
    }
    // No server TTL: valid while the connection lives, and at most SESSION_GUARANTEE_MS after the
    // server last answered on it (renewal refreshes that), so that a silently dead connection
    // loses the lease before the server can have dropped the session and granted the lock again.
    const guarantee = SESSION_GUARANTEE_MS - driftFor(SESSION_GUARANTEE_MS);
    return {
      token,
      sentAt,
      session: controller.signal,
      validUntil: () => (hold.lostAt !== Number.POSITIVE_INFINITY ? hold.lostAt : conn.confirmedAt + guarantee),
    };
  }

  private forget(hold: Hold): void {
    if (this.holds.get(hold.key) === hold) this.holds.delete(hold.key);
    hold.conn.holds.delete(hold.key);
  }

  private async keyId(conn: Conn, key: string): Promise<bigint> {
    const cached = this.ids.get(key);
    if (cached !== undefined) return cached;
    for (let i = 0; i < 2; i++) {
      // Empty when a concurrent insert committed after this statement's snapshot: ask again.
      const [row] = await this.query(conn, this.sql.register, [key]);
      if (row) {
        const id = int8(row.id);
        if (this.ids.size >= ID_CACHE_MAX) this.ids.delete(this.ids.keys().next().value as string);
        this.ids.set(key, id);
        return id;
      }
    }
    throw new UnavailableError(`Could not register lock "${key}" in ${this.n.sessionLocks}`);
  }

  private advisory(id: bigint): string {
    return (this.o.advisoryBase + id).toString();
  }

  private async unlockQuietly(conn: Conn, id: bigint): Promise<void> {
    if (conn.dead) return;
    await this.query(conn, 'SELECT pg_advisory_unlock($1::bigint)', [this.advisory(id)]).catch((e: unknown) => this.abandon(conn, e));
  }

  /** End a connection whose lock state is unknown: the server then frees whatever it held. */
  private abandon(conn: Conn, cause: unknown): void {
    if (conn.dead) return;
    this.died(conn, cause);
  }

  private async query(conn: Conn, text: string, values?: readonly unknown[]): Promise<Array<Record<string, unknown>>> {
    const r = await conn.client.query(timed(text, values, this.o.opTimeoutMs));
    conn.confirmedAt = monotonicNow();
    if (this.suspended) {
      void this.main?.then((m) => {
        if (m === conn && this.suspended) {
          this.suspended = false;
          this.setState('connected');
        }
      });
    }
    return r.rows as Array<Record<string, unknown>>;
  }

  private async runner(): Promise<Run> {
    const conn = await this.mainConn();
    return (text, values) => this.query(conn, text, values);
  }

  private assertOpen(): void {
    if (this.closed) throw new ClosedError('PostgreSQL lock driver');
  }
}
