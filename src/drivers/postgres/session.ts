/**
 * PostgreSQL session mode: session-level advisory locks, held by dedicated connections.
 * A server-blocking driver ({@link BlockingDriver}): one try on the main connection, or one
 * blocking wait in the server's lock queue on a connection of its own. The core's wait loop
 * (src/core/wait-loop.ts) does the rest: deadline, aborts, retries with backoff, the local FIFO
 * gate per key, giving back a grant that lands too late.
 *
 * Guarantees:
 * - exclusion by the server's lock manager; the lock of key text `k` is
 *   `pg_advisory_lock(advisoryBase + id)`, where `<prefix>session_locks` gives each key text a
 *   unique id (identity column): two keys never share an advisory key, and every statement
 *   re-checks that the id still belongs to the key;
 * - the `shared` mode (read side of a ReadWriteLock) through `pg_advisory_lock_shared`: the
 *   server refuses a new shared request while an exclusive one waits (no writer starvation);
 *   where a connection already holds the key shared (the server would only count up), the try
 *   looks for a waiting exclusive request in `pg_locks` itself; the write holder's read side is
 *   taken on its own connection (downgrade); shared holders are recorded in
 *   `<prefix>session_holders` and reported while their backend holds the lock;
 * - a lock lives exactly as long as the connection that took it (its session): the server frees
 *   it when that connection ends (release, kill -9, pg_terminate_backend, a dropped connection
 *   seen by TCP keepalive), and the driver then aborts `Grant.session` of every lease that
 *   connection carried (one {@link EngineSession} per connection that holds locks);
 * - waiting is server-side (no polling): FIFO among the waiters that reach the server; a blocking
 *   wait runs alone on its connection, bounded by `lock_timeout`, and an abort cancels it
 *   (`pg_cancel_backend`) and leaves nothing waiting or held, also when it comes while the wait
 *   is still opening its connection or resolving the key's id;
 * - a lease's local validity stops SESSION_GUARANTEE_MS after the server last answered on its
 *   connection (the server drops a silent client after 30-35 s), so a silently dead connection
 *   loses the lease before the server can give the lock to someone else;
 * - renewal (`extend`) confirms in one statement, through `pg_locks`, that the holder's backend
 *   still holds each key, and records a lease expiry that `inspect` reports;
 * - at most `maxConnections` connections (main, holders, waiters, spares): a wait that finds
 *   none free waits for one (abortably); a connection that won a lock by waiting carries it
 *   until it is released, then serves the next wait.
 * Does not:
 * - work through transaction poolers (PgBouncer transaction mode, RDS Proxy): use table mode;
 * - grant semaphore permits (`info.modes` lacks `permits`: the lock manager keeps no count of
 *   holders to admit against): a k-permit Semaphore is refused, pointing to table mode;
 * - free the lock of a holder that is paused but still connected (its own lease expires locally;
 *   use fencing tokens);
 * - notice a silently dead connection before TCP keepalive or the local deadline does.
 */
import type pg from 'pg';
import { raceAbort, settleWithin } from '../../core/abort.js';
import { monotonicNow } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { EngineSession } from '../../core/session.js';
import { ClosedError, LockLostError, PermissionDeniedError, UnavailableError } from '../../errors.js';
import { SessionListeners } from '../driver.js';
import type {
  AcquireRequest,
  BlockingDriver,
  DriverInfo,
  ExtendItem,
  ForceReleased,
  Grant,
  KeyPage,
  KeyState,
  LockState,
  SessionSource,
  SessionState,
  TryResult,
} from '../driver.js';
import { backendPid, clientConfig, int8, openClient, pgModule, sqlState, timed, type ConnectionSettings } from './connection.js';
import { allocateRange, fenceSql, listPage, orNone, raiseMark, readMark, schemaSql, type Names, type Run } from './schema.js';

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
  /** The holds (advisory locks, exclusive or shared) this connection carries. */
  readonly holds: Set<Hold>;
  /** The session of the locks it holds; present while it holds any. */
  session: EngineSession | undefined;
  dead: boolean;
  /** In a blocking wait, or cleaning up after one: not available. */
  busy: boolean;
  /** Monotonic time the last reply on this connection arrived (the server had our session then). */
  repliedAt: number;
  /** A cancel of this connection's wait on its way (see `cancelWait`). */
  cancelling?: Promise<void>;
}

interface Hold {
  readonly key: string;
  readonly owner: string;
  readonly id: bigint;
  readonly conn: Conn;
  /** `x`: pg_advisory_lock; `s`: pg_advisory_lock_shared. */
  readonly mode: 'x' | 's';
}

/** The holds of this driver by key, then owner (a key may have several shared holders). */
class Holds {
  private readonly byKey = new Map<string, Map<string, Hold>>();

  get(key: string, owner: string): Hold | undefined {
    return this.byKey.get(key)?.get(owner);
  }

  of(key: string): Hold[] {
    const m = this.byKey.get(key);
    return m ? [...m.values()] : [];
  }

  add(hold: Hold): void {
    let m = this.byKey.get(hold.key);
    if (!m) this.byKey.set(hold.key, (m = new Map<string, Hold>()));
    m.set(hold.owner, hold);
  }

  /** Remove `hold` if it is still the one recorded for its key and owner. */
  delete(hold: Hold): void {
    const m = this.byKey.get(hold.key);
    if (m?.get(hold.owner) !== hold) return;
    m.delete(hold.owner);
    if (m.size === 0) this.byKey.delete(hold.key);
  }

  all(): Hold[] {
    return [...this.byKey.values()].flatMap((m) => [...m.values()]);
  }
}

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
 * of silence from us (admin termination aside: that is what fencing is for). So a session counts
 * from the arrival of each reply (passed to {@link EngineSession.confirmed}).
 */
export const SESSION_GUARANTEE_MS = 30_000;

const ID_CACHE_MAX = 10_000;
const IDLE_SPARES = 2;
const BUSY: TryResult = { ok: false, retryAfterMs: -1 };

/** A row of the `inspect` statement as the contract reports it. */
function stateOf(row: Record<string, unknown>): LockState {
  const remaining = Number(row.remaining_ms);
  // A holder whose lease lapsed still holds the lock for as long as its session lives.
  return { owner: String(row.owner), token: int8(row.token), remainingMs: remaining > 0 ? remaining : -1, ...(row.mode === 's' ? { admission: { mode: 'shared' } as const } : {}) };
}

/** See the file header. Created through `PostgresDriver` / `createPostgresDriver`. */
export class PostgresSessionDriver implements BlockingDriver, SessionSource {
  readonly kind = 'server-blocking' as const;
  readonly info: DriverInfo = {
    name: 'postgres',
    liveness: 'session',
    fair: true,
    scope: 'distributed',
    // Semaphore permits would need a count of holders the server's lock manager does not keep.
    modes: ['exclusive', 'shared'],
    modeAdvice: {
      why: 'PostgreSQL advisory locks have no counted mode (the lock manager keeps no count of holders to admit against)',
      instead: 'For a Semaphore with several permits per acquisition, use the lease-table mode (createPostgresDriver({ mode: \'table\' }) or ?mode=table), which grants permits; or take permits one by one.',
    },
    fairness: 'fifo',
  };
  private readonly n: Names;
  private readonly config: pg.ClientConfig;
  private main: Promise<Conn> | undefined;
  private readonly conns = new Set<Conn>();
  private opening = 0;
  private readonly spares: Conn[] = [];
  /** Waits for a connection when all `maxConnections` are taken (abortable; see {@link takeConn}). */
  private readonly connQueue: Array<(c: Conn | undefined) => void> = [];
  private readonly holds = new Holds();
  /** Tries in flight on the main connection per key: `x` (one exclusive) or a count of shared ones. */
  private readonly trying = new Map<string, 'x' | number>();
  /** Connections in a server wait or cleaning up after one. */
  private readonly waits = new Set<Conn>();
  private readonly ids = new Map<string, bigint>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly listeners = new SessionListeners();
  private schema: Promise<void> | undefined;
  private lastState: SessionState = 'lost';
  private suspended = false;
  private closed = false;
  private readonly sql: Record<
    'tryLock' | 'waitLock' | 'trySharedLock' | 'waitSharedLock' | 'release' | 'releaseShared' | 'extend' | 'inspect' | 'waiters' | 'held' | 'register' | 'list' | 'forceRelease' | 'fence',
    string
  >;

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
    const { sessionLocks: sl, sessionHolders: sh, tokensRegclass } = this.n;
    const base = `${o.advisoryBase}::bigint`;
    // The pg_locks rows of the advisory lock `adv` (bigint keys: objsubid 1, high and low halves).
    const lockAt = (adv: string, granted = true): string => `l.locktype = 'advisory' AND ${granted ? '' : 'NOT '}l.granted AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = ((${adv}) >> 32) AND l.objid::bigint = ((${adv}) & 4294967295)`;
    // The pg_locks row of whoever holds the advisory lock of `s`, in any mode, recorded or not.
    const lockOf = (s: string): string => lockAt(`${base} + ${s}.id`);
    // The pg_locks row of the recorded exclusive holder of `s`.
    const heldBy = (s: string): string => `${lockOf(s)}
        AND l.mode = 'ExclusiveLock' AND l.pid = ${s}.holder_pid`;
    // The pg_locks row of the shared holder `h` of `s`.
    const sharedBy = (h: string, s: string): string => `${lockOf(s)}
        AND l.mode = 'ShareLock' AND l.pid = ${h}.holder_pid`;
    const ttl = `clock_timestamp() + $5::int * interval '1 millisecond'`;
    const grant = `token = nextval(${tokensRegclass}), owner = $4, holder_pid = pg_backend_pid(), expires_at = ${ttl}`;
    // Record a shared grant (got: the lock was taken), and drop the rows of shared holders of the
    // key whose backend no longer holds it (a connection that died without releasing).
    const recordShared = `
        stale AS (
          DELETE FROM ${sh} AS h WHERE h.id = $1 AND h.owner <> $4 AND (SELECT ok FROM got)
            AND NOT EXISTS (SELECT 1 FROM pg_locks AS l WHERE ${lockAt('$2::bigint')} AND l.mode = 'ShareLock' AND l.pid = h.holder_pid)
        ),
        ins AS (
          INSERT INTO ${sh} (id, owner, token, holder_pid, expires_at)
          SELECT s.id, $4, nextval(${tokensRegclass}), pg_backend_pid(), ${ttl} FROM got, ${sl} AS s WHERE got.ok AND s.id = $1 AND s.key = $3
          ON CONFLICT (id, owner) DO UPDATE SET token = excluded.token, holder_pid = excluded.holder_pid, expires_at = excluded.expires_at
          RETURNING token
        )
        SELECT got.ok, (SELECT token FROM ins) AS token FROM got`;
    const remaining = (col: string): string => `floor(extract(epoch FROM ${col} - clock_timestamp()) * 1000)`;
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
      // The server refuses a shared try while an exclusive request waits (no writer starvation),
      // except on a connection that already holds the key shared (it only counts up): there, with
      // $6, the statement looks for a waiting exclusive request itself.
      trySharedLock: `
        WITH got AS MATERIALIZED (
          SELECT CASE WHEN $6::boolean AND EXISTS (SELECT 1 FROM pg_locks AS l WHERE ${lockAt('$2::bigint', false)} AND l.mode = 'ExclusiveLock')
            THEN false ELSE pg_try_advisory_lock_shared($2::bigint) END AS ok
        ),${recordShared}`,
      // Blocks in the server's lock queue (behind a queued exclusive request), bounded by
      // lock_timeout ($6). On the connection that holds the key exclusively (downgrade) the server
      // grants it at once, ahead of the waiters that wait for that connection anyway.
      waitSharedLock: `
        WITH cfg AS MATERIALIZED (SELECT set_config('lock_timeout', $6, true) AS v),
        got AS MATERIALIZED (SELECT pg_advisory_lock_shared($2::bigint) IS NOT NULL AS ok FROM cfg),${recordShared}`,
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
      releaseShared: `
        WITH mine AS (DELETE FROM ${sh} WHERE id = $1 AND owner = $3 AND holder_pid = pg_backend_pid() RETURNING 1),
        cleared AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM mine) AS owned)
        SELECT cleared.owned, pg_advisory_unlock_shared($2::bigint) AS unlocked FROM cleared`,
      extend: `
        WITH i AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]) AS i(key, owner, ttl)),
        x AS (
          UPDATE ${sl} AS s SET expires_at = clock_timestamp() + i.ttl * interval '1 millisecond'
          FROM i, pg_locks AS l
          WHERE s.key = i.key AND s.owner = i.owner AND ${heldBy('s')}
          RETURNING s.key, s.owner
        ),
        h AS (
          UPDATE ${sh} AS h SET expires_at = clock_timestamp() + i.ttl * interval '1 millisecond'
          FROM i, ${sl} AS s, pg_locks AS l
          WHERE s.key = i.key AND h.id = s.id AND h.owner = i.owner AND ${sharedBy('h', 's')}
          RETURNING s.key, h.owner
        )
        SELECT key, owner FROM x UNION ALL SELECT key, owner FROM h`,
      // Every holder, the exclusive one first, then the shared ones in grant order ($2: how many).
      inspect: `
        SELECT * FROM (
          SELECT s.owner, s.token, ${remaining('s.expires_at')} AS remaining_ms, 'x' AS mode
          FROM ${sl} AS s JOIN pg_locks AS l ON ${heldBy('s')}
          WHERE s.key = $1 AND s.owner IS NOT NULL
          UNION ALL
          (SELECT h.owner, h.token, ${remaining('h.expires_at')}, 's'
           FROM ${sl} AS s JOIN ${sh} AS h ON h.id = s.id JOIN pg_locks AS l ON ${sharedBy('h', 's')}
           WHERE s.key = $1 ORDER BY h.token)
        ) AS t LIMIT $2`,
      // Requests waiting in the server's lock queue for the key.
      waiters: `SELECT count(*)::int AS n FROM ${sl} AS s JOIN pg_locks AS l ON ${lockAt(`${base} + s.id`, false)} WHERE s.key = $1`,
      held: `SELECT 1 FROM ${sl} AS s JOIN pg_locks AS l ON ${heldBy('s')}
        WHERE s.key = $1 AND s.owner = $2 FOR SHARE OF s`,
      // The keys whose advisory lock is held right now by a recorded holder (pg_locks joined with
      // the key registry and the shared holders).
      list: `
        SELECT DISTINCT s.key FROM ${sl} AS s JOIN pg_locks AS l ON ${lockOf('s')}
        LEFT JOIN ${sh} AS h ON h.id = s.id AND h.holder_pid = l.pid
        WHERE ((l.mode = 'ExclusiveLock' AND l.pid = s.holder_pid AND s.owner IS NOT NULL) OR (l.mode = 'ShareLock' AND h.owner IS NOT NULL))
          AND starts_with(s.key, $1) AND ($2::text IS NULL OR s.key > $2)
        ORDER BY s.key LIMIT $3`,
      // Another session's advisory lock cannot be unlocked: end that session (it waits up to 5 s
      // for the backend to exit, so the lock is free when this answers). Never our own backend.
      // Every holder, exclusive or shared.
      forceRelease: `
        SELECT p.pid, pg_terminate_backend(p.pid, 5000) AS ended, ${fenceSql(this.n)} AS fence
        FROM (SELECT DISTINCT l.pid FROM ${sl} AS s JOIN pg_locks AS l ON ${lockOf('s')}
              WHERE s.key = $1 AND l.pid <> pg_backend_pid()) AS p`,
      fence: `SELECT ${fenceSql(this.n)} AS fence`,
    };
  }

  // ------------------------------------------------------------------ session state

  /** `connected` while the main connection is up and answers, `suspended` while it fails, `lost` without it. */
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
    const shared = req.admission?.mode === 'shared';
    const beside = req.alongside === undefined ? undefined : this.holds.get(req.key, req.alongside);
    if (shared && beside?.mode === 'x') return this.besideWrite(req, beside);
    // A session lock is reentrant on its own connection: another owner of this driver must not
    // take a key this driver holds (or is taking) in a conflicting mode through it.
    const held = this.holds.of(req.key);
    const trying = this.trying.get(req.key);
    if (shared ? trying === 'x' || held.some((h) => h.mode === 'x') : trying !== undefined || held.length > 0) return BUSY;
    this.trying.set(req.key, shared ? (typeof trying === 'number' ? trying : 0) + 1 : 'x');
    try {
      const conn = await this.mainConn();
      for (let attempt = 0; ; attempt++) {
        const id = await this.keyId(conn, req.key);
        // Taken once connected and registered: opening a connection does not eat into the TTL.
        const sentAt = monotonicNow();
        const args = [id.toString(), this.advisory(id), req.key, req.owner, Math.ceil(req.ttlMs)];
        // Main holds (or is about to hold: pipelined tries run in order) the key shared: the
        // server would just count up, so the statement checks for a queued writer itself.
        const counts = shared && (this.holds.of(req.key).some((h) => h.conn === conn) || (this.trying.get(req.key) as number) > 1);
        let row: Record<string, unknown> | undefined;
        try {
          [row] = await this.query(conn, shared ? this.sql.trySharedLock : this.sql.tryLock, shared ? [...args, counts] : args);
        } catch (e) {
          // The lock may have been taken before the statement failed: give it back. Where it would
          // only have counted up, an unlock might take another holder's count instead: end the
          // session (the server frees everything it held; its leases are told).
          if (counts) this.abandon(conn, e);
          else await this.unlockQuietly(conn, id, shared ? 's' : 'x');
          throw e;
        }
        if (row?.ok !== true) return BUSY;
        if (row.token !== null && row.token !== undefined) return { ok: true, grant: this.hold(conn, req, id, int8(row.token), sentAt, shared ? 's' : 'x') };
        // The id no longer belongs to the key (its row was deleted and re-created): re-resolve.
        await this.unlockQuietly(conn, id, shared ? 's' : 'x');
        this.ids.delete(req.key);
        if (attempt > 0) throw new UnavailableError(`The key registry row of lock "${req.key}" keeps changing`);
      }
    } finally {
      const left = this.trying.get(req.key);
      if (typeof left === 'number' && left > 1) this.trying.set(req.key, left - 1);
      else this.trying.delete(req.key);
    }
  }

  /**
   * The write holder takes the read side (downgrade): a shared lock on the connection that holds
   * the key exclusively. A try would be refused while a writer waits behind us; a blocking request
   * is granted at once (the waiters wait for this very connection), bounded by `lock_timeout`.
   */
  private async besideWrite(req: AcquireRequest, write: Hold): Promise<TryResult> {
    const conn = write.conn;
    if (conn.dead) return BUSY;
    const sentAt = monotonicNow();
    let row: Record<string, unknown> | undefined;
    try {
      [row] = await this.query(conn, this.sql.waitSharedLock, [write.id.toString(), this.advisory(write.id), req.key, req.owner, Math.ceil(req.ttlMs), '1000ms']);
    } catch (e) {
      // It may have been granted before the statement failed: give it back (unlocks one shared count).
      await this.unlockQuietly(conn, write.id, 's');
      if (sqlState(e) === '55P03') return BUSY;
      throw e;
    }
    if (row?.token !== null && row?.token !== undefined) return { ok: true, grant: this.hold(conn, req, write.id, int8(row.token), sentAt, 's') };
    await this.unlockQuietly(conn, write.id, 's');
    throw new UnavailableError(`The key registry row of lock "${req.key}" changed`);
  }

  /**
   * One blocking wait in the server's lock queue, on a connection of its own, for at most `maxMs`
   * (`lock_timeout`). Every step before the wait reaches the server (main connection, key id, a
   * wait connection) races `signal`, so an abort there stops it before anything waits.
   */
  async block(req: AcquireRequest, maxMs: number, signal: AbortSignal): Promise<TryResult> {
    this.assertOpen();
    const shared = req.admission?.mode === 'shared';
    // Beside our own write hold: never a wait of its own (it would wait for itself).
    if (shared && req.alongside !== undefined && this.holds.get(req.key, req.alongside)?.mode === 'x') return this.tryAcquire(req);
    const startedAt = monotonicNow();
    const main = await raceAbort(this.mainConn(), signal);
    const id = await raceAbort(this.keyId(main, req.key), signal);
    const conn = await this.takeConn(signal);
    const left = Math.ceil(maxMs - (monotonicNow() - startedAt));
    if (signal.aborted || left <= 0) {
      this.free(conn);
      if (signal.aborted) throw signal.reason as Error;
      return BUSY;
    }
    this.waits.add(conn);
    // The server bounds the wait too (a little later than the core's deadline, which normally
    // ends it first and cancels it).
    const waiting = conn.client.query(shared ? this.sql.waitSharedLock : this.sql.waitLock, [id.toString(), this.advisory(id), req.key, req.owner, Math.ceil(req.ttlMs), `${left + 100}ms`]);
    return new Promise<TryResult>((resolve, reject) => {
      // An abort cancels the server's wait (the statement then fails, unless it got the lock first).
      const onAbort = (): void => {
        conn.cancelling = this.cancelWait(conn);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      waiting.then(
        (r) => {
          signal.removeEventListener('abort', onAbort);
          this.waits.delete(conn);
          const token = (r.rows as Array<Record<string, unknown>>)[0]?.token;
          if (token === null || token === undefined) {
            this.ids.delete(req.key);
            this.track(this.cleanUp(conn));
            reject(new UnavailableError(`The key registry row of lock "${req.key}" changed during the wait`));
            return;
          }
          conn.busy = false;
          // The lock is ours from its grant until the session ends (no server TTL), and the wait
          // may have lasted long: the lease's local TTL counts from the reply, when the server
          // surely still had our session (see SESSION_GUARANTEE_MS). Also when it landed as the
          // wait was given up: the core gives it back.
          conn.repliedAt = monotonicNow();
          resolve({ ok: true, grant: this.hold(conn, req, id, int8(token), conn.repliedAt, shared ? 's' : 'x') });
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          this.waits.delete(conn);
          // The lock may have been granted before the statement failed: make sure it holds nothing.
          if (!conn.dead) this.track(this.cleanUp(conn));
          if (signal.aborted) reject(signal.reason as Error);
          else if (sqlState(error) === '55P03') resolve(BUSY); // lock_timeout
          else reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (items.length === 0) return [];
    const conn = await this.mainConn();
    // Holders other than `main` hear from the server too (same round trip), so that their
    // connection's confirmation (Grant.validUntil) stays fresh.
    const others = new Set<Conn>();
    for (const it of items) {
      const c = this.holds.get(it.key, it.owner)?.conn;
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
        conn.session?.suspend();
        this.setState('suspended');
      }
      throw e;
    }
    const confirmed = new Set(rows.map((r) => `${String(r.owner)}\u0000${String(r.key)}`));
    const out = items.map((i) => {
      const local = this.holds.get(i.key, i.owner);
      if (local?.conn.dead) return false;
      return confirmed.has(`${i.owner}\u0000${i.key}`);
    });
    // Held here but no longer recorded as ours (revoked behind our back): the connection still has
    // the advisory lock, and the core will not release a lease it lost as 'not-held'. Unlock it.
    await Promise.all(
      items.map(async (it, i) => {
        const local = this.holds.get(it.key, it.owner);
        if (out[i] || !local || local.conn.dead) return;
        this.forget(local);
        await this.unlockQuietly(local.conn, local.id, local.mode);
        this.connFreed(local.conn);
      }),
    );
    return out;
  }

  async release(key: string, owner: string): Promise<boolean> {
    const hold = this.holds.get(key, owner);
    // Only the session that holds an advisory lock can release it: a foreign release is a no-op.
    if (!hold) return false;
    this.forget(hold);
    if (hold.conn.dead) return false;
    try {
      const [row] = await this.query(hold.conn, hold.mode === 's' ? this.sql.releaseShared : this.sql.release, [hold.id.toString(), this.advisory(hold.id), owner]);
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
    const [row] = await orNone(this.query(await this.mainConn(), this.sql.inspect, [key, 1]), []);
    return row ? stateOf(row) : null;
  }

  /** Every holder of `key` (the writer, or the readers) and the requests waiting in the server's lock queue. */
  async keyState(key: string): Promise<KeyState> {
    const conn = await this.mainConn();
    const [rows, waiting] = await Promise.all([orNone(this.query(conn, this.sql.inspect, [key, null]), []), orNone(this.query(conn, this.sql.waiters, [key]), [])]);
    return { holders: rows.map(stateOf), waiters: Number(waiting[0]?.n ?? 0) };
  }

  /** One page of the keys whose advisory lock is held now: `pg_locks` joined with the key registry, by key. */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    return listPage(await this.runner(), this.sql.list, prefix, page);
  }

  /**
   * End the session that holds `key`'s advisory lock: PostgreSQL cannot unlock another session's
   * advisory lock, so the holder's backend is terminated (`pg_terminate_backend`, found through
   * `pg_locks`), and EVERY lock that connection held goes with it; its driver aborts the leases it
   * carried at once (`session-lost`). A lock held through this very driver ends its connection
   * the same way. Waiters blocked in the server get the lock. Needs the right to signal the
   * holder's backend (same role, or `pg_signal_backend`); PostgreSQL 14+ (it waits up to 5 s for
   * the backend to exit). Tokens come from the sequence: `fence` is its last value.
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    this.assertOpen();
    const conn = await this.mainConn();
    let released = 0;
    const local = this.holds.of(key).filter((h) => !h.conn.dead);
    for (const c of new Set(local.map((h) => h.conn))) {
      // Ours: end that connection (the server frees its locks as the backend exits).
      const ended = c.client.end();
      this.abandon(c, new LockLostError(key, 'session-lost'));
      await settleWithin(ended, 5000);
    }
    released += local.length;
    const main = local.some((h) => h.conn === conn) ? await this.mainConn() : conn;
    const rows = await orNone(
      this.query(main, this.sql.forceRelease, [key]).catch((e: unknown) => {
        // insufficient_privilege: the holder's backend belongs to another role.
        if ((e as { code?: string }).code === '42501') {
          throw new PermissionDeniedError('postgres', `to terminate the backend that holds lock "${key}"`, 'connect as the holder\'s role, or GRANT pg_signal_backend TO this role', { cause: e });
        }
        throw e;
      }),
      [],
    );
    released += rows.filter((r) => r.ended === true).length;
    const fence = rows[0] ? rows[0].fence : (await orNone(this.query(main, this.sql.fence), []))[0]?.fence;
    return { released, fence: fence === undefined || fence === null ? 0n : int8(fence) };
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

  /** Server waits in progress, or cleaning up after one (for tests: 0 once no wait is in progress). */
  get waitingKeys(): number {
    return this.waits.size;
  }

  /** The backend pid of the connection that holds `key` for this driver (tests, diagnostics). */
  holderPid(key: string): number | undefined {
    return this.holds.of(key)[0]?.conn.pid;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const give of this.connQueue.splice(0)) give(undefined);
    await settleWithin(Promise.allSettled([...this.background]), 2000);
    for (const hold of this.holds.all()) this.forget(hold, new LockLostError(hold.key, 'closed'));
    const ends = [...this.conns].map((c) => {
      c.dead = true;
      void c.session?.end('closed');
      return settleWithin(c.client.end(), 2000);
    });
    this.conns.clear();
    this.spares.length = 0;
    this.main = undefined;
    await Promise.all(ends);
    this.setState('lost');
  }

  // ------------------------------------------------------------------ after a wait

  /**
   * Cancel the blocking wait running on `conn` (pg_cancel_backend from `main`). The next
   * statement on `conn` waits for it (see {@link query}): a cancel that arrives while the
   * connection is idle is ignored, but one that arrives during a later statement would fail it.
   */
  private async cancelWait(conn: Conn): Promise<void> {
    try {
      const main = await this.mainConn();
      await this.query(main, 'SELECT pg_cancel_backend($1)', [conn.pid]);
    } catch {
      // main unreachable: the wait ends by lock_timeout, or with the connection
    }
  }

  /** Release whatever a failed or abandoned wait may hold on `conn`, then hand the connection on. */
  private async cleanUp(conn: Conn): Promise<void> {
    // Safe: a waiting connection holds nothing but what this wait may have obtained. If that
    // fails (a stray cancel, the network), end the session: the server then frees everything.
    if (!conn.dead) await this.query(conn, 'SELECT pg_advisory_unlock_all()').catch((e: unknown) => this.abandon(conn, e));
    conn.busy = false;
    this.connFreed(conn);
  }

  private track(p: Promise<unknown>): void {
    const q = p.catch(() => undefined);
    this.background.add(q);
    void q.finally(() => this.background.delete(q));
  }

  // ------------------------------------------------------------------ connections

  /**
   * A connection for one wait: a spare, a new one (below the limit), or the next one freed.
   * Rejects with `signal.reason` when it aborts first; a connection opened after that goes back.
   */
  private takeConn(signal: AbortSignal): Promise<Conn> {
    this.assertOpen();
    let spare = this.spares.pop();
    while (spare?.dead) spare = this.spares.pop();
    if (spare) {
      spare.busy = true;
      return Promise.resolve(spare);
    }
    if (this.conns.size + this.opening < this.o.maxConnections) {
      this.opening++;
      const opened = this.open().finally(() => this.opening--);
      return raceAbort(
        opened.then((c) => {
          c.busy = true;
          return c;
        }),
        signal,
        (late) => this.free(late),
      );
    }
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<Conn>((resolve, reject) => {
      const give = (c: Conn | undefined): void => {
        signal.removeEventListener('abort', onAbort);
        if (c && !c.dead) {
          c.busy = true;
          resolve(c);
        } else {
          // A slot came free (a connection closed): open one, or queue again.
          this.takeConn(signal).then(resolve, reject);
        }
      };
      const onAbort = (): void => {
        const i = this.connQueue.indexOf(give);
        if (i >= 0) this.connQueue.splice(i, 1);
        reject(signal.reason as Error);
      };
      this.connQueue.push(give);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A wait connection that was not used after all (the wait was aborted). */
  private free(conn: Conn): void {
    conn.busy = false;
    this.connFreed(conn);
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
    const conn: Conn = (ref.conn = { client, pid: backendPid(client), holds: new Set(), session: undefined, dead: false, busy: false, repliedAt: monotonicNow() });
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
    const lost = conn.holds.size;
    for (const hold of conn.holds) this.holds.delete(hold);
    conn.holds.clear();
    // The server released every lock of this session: its leases hear it at once.
    const session = conn.session;
    conn.session = undefined;
    void session?.end('lost', cause);
    void this.main?.then(
      (m) => {
        if (m === conn && !this.closed) {
          this.main = undefined;
          this.setState('lost');
        } else if (lost > 0 && !this.closed) {
          this.setState('lost');
          this.setState(this.suspended ? 'suspended' : 'connected');
        }
      },
      () => undefined,
    );
    this.connQueue.shift()?.(undefined);
  }

  private hold(conn: Conn, req: AcquireRequest, id: bigint, token: bigint, sentAt: number, mode: 'x' | 's'): Grant {
    if (conn.dead || this.closed) {
      const lost = new AbortController();
      lost.abort(new LockLostError(req.key, this.closed ? 'closed' : 'session-lost'));
      return { token, sentAt, session: lost.signal, validUntil: () => Number.NEGATIVE_INFINITY };
    }
    const hold: Hold = { key: req.key, owner: req.owner, id, conn, mode };
    this.holds.add(hold);
    conn.holds.add(hold);
    // No server TTL: valid while the connection lives, and at most SESSION_GUARANTEE_MS after the
    // server last answered on it (renewal refreshes that).
    conn.session ??= new EngineSession(`PostgreSQL backend ${conn.pid}`, SESSION_GUARANTEE_MS, conn.repliedAt, {
      // Past its deadline the server may have dropped the session: end the connection, so that
      // it surely frees whatever it still holds.
      ended: (how) => {
        if (how === 'expired') this.abandon(conn, new Error('no reply from PostgreSQL within the session guarantee'));
        return Promise.resolve();
      },
    });
    const session = conn.session;
    return { token, sentAt, session: session.grantSignal(req.key, req.owner), validUntil: () => session.validUntil() };
  }

  /** Stop tracking a hold; a connection that holds nothing any more has no session. */
  private forget(hold: Hold, lost?: LockLostError): void {
    this.holds.delete(hold);
    const conn = hold.conn;
    if (!conn.holds.delete(hold)) return;
    if (lost) conn.session?.loseGrant(hold.owner, lost);
    else conn.session?.forget(hold.owner);
    if (conn.holds.size === 0 && conn.session) {
      const done = conn.session;
      conn.session = undefined;
      void done.end('closed');
    }
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

  private async unlockQuietly(conn: Conn, id: bigint, mode: 'x' | 's'): Promise<void> {
    if (conn.dead) return;
    await this.query(conn, `SELECT pg_advisory_unlock${mode === 's' ? '_shared' : ''}($1::bigint)`, [this.advisory(id)]).catch((e: unknown) => this.abandon(conn, e));
  }

  /** End a connection whose lock state is unknown: the server then frees whatever it held. */
  private abandon(conn: Conn, cause: unknown): void {
    if (conn.dead) return;
    this.died(conn, cause);
  }

  private async query(conn: Conn, text: string, values?: readonly unknown[]): Promise<Array<Record<string, unknown>>> {
    if (conn.cancelling) {
      const cancelling = conn.cancelling;
      await cancelling;
      if (conn.cancelling === cancelling) conn.cancelling = undefined;
    }
    const r = await conn.client.query(timed(text, values, this.o.opTimeoutMs));
    conn.repliedAt = monotonicNow();
    conn.session?.confirmed(conn.repliedAt);
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
