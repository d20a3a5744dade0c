/**
 * PostgreSQL lease-table mode: a row per held key (owner, fencing token, expiry by the server's
 * clock), for users behind transaction poolers (PgBouncer `pool_mode=transaction`, RDS Proxy...)
 * where session-level advisory locks do not work. A try-set driver: each operation is one
 * autocommit statement (no prepared statement names, no session state), so any pooled
 * connection may run it; the core's wait loop (src/core/wait-loop.ts) waits.
 *
 * Guarantees:
 * - every admission mode (exclusive, shared, permits: src/core/admission.ts), each step ONE call
 *   of a PL/pgSQL function (./table-sql.ts) that locks the key's row first, so the steps of one
 *   key are serialized; an uncontended mutex try is still one upsert;
 * - the fairness choice: `fair` requests are granted in queue order across processes; others may
 *   barge only while the queue's head has waited less than BARGE_BOUND_MS (5 ms); a queued writer
 *   stops new readers; a release hands the key to the queue's heads directly, with a fresh token;
 * - tokens from one sequence, strictly increasing per key across every mode;
 * - a release NOTIFYs `<prefix>release` with the key, a handoff NOTIFYs `<prefix>handoff` with
 *   `<owner> <token>`, and each driver keeps one dedicated LISTEN connection (`listen` option: a
 *   direct connection when the pool cannot carry LISTEN), opened before the waiter's decisive try
 *   and queueing, so a release or handoff after it cannot go unseen; a lost notification (the
 *   LISTEN connection dropped) costs at most the holders' remaining TTL (the waiter's next try
 *   finds the handed-over lock its own);
 * - tables an older dlock created keep working (`ADD COLUMN IF NOT EXISTS`, new tables beside).
 * Does not:
 * - free a crashed holder's lock before its TTL runs out (no session to end); a waiter that
 *   crashes while queued holds up the queue until its entry expires (its holders' TTL + 2 s), and
 *   one handed the lock as it crashed holds it until its TTL;
 * - keep strict FIFO for requests without `fair` (bounded barging, see above).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { LatchWatch } from '../../core/change-watch.js';
import { monotonicNow } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError } from '../../errors.js';
import type { AcquireRequest, Admission, ChangeWatch, DriverInfo, ExtendItem, ForceReleased, KeyPage, KeyState, TrySetDriver, LockState, TryResult } from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import { clientConfig, int8, openClient, pgModule, timed, type ConnectionSettings } from './connection.js';
import { allocateRange, listPage, orNone, raiseMark, readMark, schemaSql, type Names, type Run } from './schema.js';

/** NOTIFY payloads are limited to 8000 bytes: long keys are sent as a digest. */
export function notifyPayload(key: string): string {
  return Buffer.byteLength(key) <= 200 ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

/** A holder row (see `holdersOf` in the constructor) as the contract reports it. */
function stateOf(row: Record<string, unknown>): LockState {
  const mode = String(row.mode);
  const admission: Admission | undefined =
    mode === 's' ? { mode: 'shared' } : mode === 'p' ? { mode: 'permits', permits: Number(row.permits), limit: Number(row.lim) } : undefined;
  return { owner: String(row.owner), token: int8(row.token), remainingMs: Math.max(0, Number(row.remaining_ms)), ...(admission ? { admission } : {}) };
}

export interface TableModeOptions {
  readonly connection: ConnectionSettings;
  /** Where the LISTEN connection goes; default `connection`. */
  readonly listen: ConnectionSettings | undefined;
  readonly names: Names;
  readonly poolSize: number;
  readonly createTables: boolean;
  readonly opTimeoutMs: number;
  readonly logger: Logger | undefined;
}

/** See the file header. Created through `PostgresDriver` / `createPostgresDriver`. */
export class PostgresTableDriver implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = {
    name: 'postgres',
    liveness: 'lease',
    fair: false,
    scope: 'distributed',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'choice',
  };
  private readonly pool: pg.Pool;
  private readonly n: Names;
  private readonly watches = new Map<string, Set<LatchWatch>>();
  /** The queued try in flight of each waiting owner (see `cancel`). */
  private readonly tries = new Map<string, Promise<unknown>>();
  /** The watch of each waiting owner, for direct handoff. */
  private readonly watchOf = new Map<string, LatchWatch>();
  private listener: Promise<pg.Client> | undefined;
  private schema: Promise<void> | undefined;
  private closed = false;
  private readonly sql: Record<'acquire' | 'extend' | 'release' | 'inspect' | 'holders' | 'waiters' | 'held' | 'list' | 'forceRelease', string>;

  /** @internal Create it with {@link createPostgresDriver} or `connect()`. */
  constructor(private readonly o: TableModeOptions) {
    pgModule(); // MissingPeerError (npm install pg) here rather than at the first lock
    this.n = o.names;
    this.pool = new (pgModule().Pool)({ ...clientConfig(o.connection), max: o.poolSize, idleTimeoutMillis: 10_000, allowExitOnIdle: true });
    // An idle pooled connection that dies is replaced on the next query; never an unhandled event.
    this.pool.on('error', (error) => o.logger?.warn?.('dlock postgres: idle connection failed', { error }));
    // pg-pool listens for errors only while a connection is idle: one that is checked out, or
    // being discarded after a failed statement, emits the server's FATAL (a shutdown's 57P01)
    // with no listener, an uncaught exception in the host process. Every pooled connection gets a
    // listener of its own for its whole life; the statement that was running gets the error too.
    this.pool.on('connect', (client) => client.on('error', () => undefined));
    const { locks, holders, waiters, fn } = this.n;
    const remaining = (col: string): string => `floor(extract(epoch FROM ${col} - clock_timestamp()) * 1000)`;
    // Every holder of a key, exclusive first, then shared and permit holders in grant order.
    const holdersOf = `
        SELECT owner, token, ${remaining('expires_at')} AS remaining_ms, 'x' AS mode, 0::bigint AS permits, 0::bigint AS lim
        FROM ${locks} WHERE key = $1 AND owner <> '' AND expires_at > clock_timestamp()
        UNION ALL
        (SELECT owner, token, ${remaining('expires_at')}, mode, permits, lim
         FROM ${holders} WHERE key = $1 AND expires_at > clock_timestamp() ORDER BY token)`;
    this.sql = {
      // One call: the admission rule over the key's holders and queue (see table-sql.ts).
      acquire: `SELECT o_token AS token, o_remaining AS remaining_ms FROM ${fn.acquire}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      extend: `SELECT key, owner FROM ${fn.extend}($1::text[], $2::text[], $3::int[])`,
      // Delete our hold (even expired: tidy), hand the key over, wake waiters; whether it was live.
      release: `SELECT ${fn.release}($1, $2, $3, $4, $5, $6) AS live`,
      inspect: `${holdersOf} LIMIT 1`,
      holders: `${holdersOf}`,
      waiters: `SELECT count(*)::int AS n FROM ${waiters} WHERE key = $1 AND expires_at > clock_timestamp()`,
      held: `SELECT 1 FROM ${locks} WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp() FOR SHARE`,
      // The key's row stays while anything holds it (the marker of shared holders included).
      list: `
        SELECT key FROM ${locks}
        WHERE starts_with(key, $1) AND ($2::text IS NULL OR key > $2) AND expires_at > clock_timestamp()
        ORDER BY key LIMIT $3`,
      // One call: remove every hold whoever owns it, read the token sequence (never reset by a
      // delete), hand the key to its queue's heads, wake the waiters.
      forceRelease: `SELECT o_released AS released, o_fence AS fence FROM ${fn.evict}($1, $2, $3, $4)`,
    };
  }

  async tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    let sentAt = 0;
    const a = req.admission;
    const mode = a === undefined || a.mode === 'exclusive' ? 'x' : a.mode === 'shared' ? 's' : 'p';
    const permits = a?.mode === 'permits' ? a.permits : 0;
    const limit = a?.mode === 'permits' ? a.limit : 0;
    const trying = this.run(
      this.sql.acquire,
      [req.key, req.owner, Math.ceil(req.ttlMs), mode, permits, limit, req.fair === true, req.alongside ?? '', queue, this.n.handoffChannelName],
      () => (sentAt = monotonicNow()),
    );
    // A cancel of this waiter must come after its try (pooled connections do not keep order):
    // else a try still in flight would queue it again after it gave up.
    if (queue) this.tries.set(req.owner, trying);
    let row: Record<string, unknown> | undefined;
    try {
      [row] = await trying;
    } finally {
      if (this.tries.get(req.owner) === trying) this.tries.delete(req.owner);
    }
    if (row?.token !== null && row?.token !== undefined) return { ok: true, grant: { token: int8(row.token), sentAt } };
    const left = row?.remaining_ms;
    return { ok: false, retryAfterMs: left === null || left === undefined ? -1 : Math.max(0, Number(left)) };
  }

  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (items.length === 0) return [];
    const rows = await this.run(this.sql.extend, [
      items.map((i) => i.key),
      items.map((i) => i.owner),
      items.map((i) => Math.ceil(i.ttlMs)),
    ]);
    const renewed = new Set(rows.map((r) => `${String(r.owner)}\u0000${String(r.key)}`));
    return items.map((i) => renewed.has(`${i.owner}\u0000${i.key}`));
  }

  async release(key: string, owner: string): Promise<boolean> {
    return this.leave(key, owner, false);
  }

  /** The waiter `owner` gives up: leave the queue; a hold handed to it meanwhile is released (handed on). */
  async cancel(key: string, owner: string): Promise<void> {
    await this.tries.get(owner)?.catch(() => undefined);
    await this.leave(key, owner, true);
  }

  async inspect(key: string): Promise<LockState | null> {
    const [row] = await orNone(this.run(this.sql.inspect, [key]), []);
    return row ? stateOf(row) : null;
  }

  async keyState(key: string): Promise<KeyState> {
    const [rows, waiting] = await Promise.all([orNone(this.run(this.sql.holders, [key]), []), orNone(this.run(this.sql.waiters, [key]), [])]);
    return { holders: rows.map(stateOf), waiters: Number(waiting[0]?.n ?? 0) };
  }

  /** One page of held keys: a range of the lease table, `key > cursor ORDER BY key LIMIT n`, live rows only. */
  list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    return listPage(this.runner, this.sql.list, prefix, page);
  }

  /**
   * Delete the key's row whoever holds it and NOTIFY its waiters, in one statement. Tokens come
   * from the sequence, which a delete never resets: `fence` is its last value. The evicted
   * holder's next renewal finds no row of its own (its lease signal aborts, `not-held`).
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    const [row] = await orNone(this.run(this.sql.forceRelease, [key, this.n.handoffChannelName, this.n.channelName, notifyPayload(key)]), []);
    return { released: Number(row?.released ?? 0), fence: row ? int8(row.fence) : 0n };
  }

  readMark(key: string): Promise<bigint> {
    return readMark(this.runner, this.n, key);
  }

  raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    return raiseMark(this.runner, this.n, this.sql.held, key, owner, mark);
  }

  allocateRange(name: string, count: bigint): Promise<bigint> {
    return allocateRange(this.runner, this.n, name, count);
  }

  /**
   * Wake-ups for `key`: the LISTEN is in place before this resolves, so a release committed after
   * it (the waiter's decisive try comes next) cannot go unseen.
   */
  async watch(key: string, owner = ''): Promise<ChangeWatch> {
    if (this.closed) throw new ClosedError('PostgreSQL lock driver');
    await this.listening();
    const payload = notifyPayload(key);
    let set = this.watches.get(payload);
    if (!set) this.watches.set(payload, (set = new Set()));
    const s = set;
    const latch = new LatchWatch((w) => {
      s.delete(w);
      if (s.size === 0 && this.watches.get(payload) === s) this.watches.delete(payload);
      if (this.watchOf.get(owner) === w) this.watchOf.delete(owner);
    });
    s.add(latch);
    // A release that hands the key to `owner` says so on the handoff channel.
    if (owner !== '') this.watchOf.set(owner, latch);
    return latch;
  }

  /** Number of open change watches (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    let n = 0;
    for (const s of this.watches.values()) n += s.size;
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wakeAll();
    const listener = this.listener;
    this.listener = undefined;
    await Promise.all([listener?.then((c) => c.end()).catch(() => undefined), this.pool.end().catch(() => undefined)]);
  }

  private readonly runner: Run = (text, values) => this.run(text, values);

  /** Release `owner`'s hold (and with `cancel`, its queue entry first); whether the hold was live. */
  private async leave(key: string, owner: string, cancel: boolean): Promise<boolean> {
    const [row] = await this.run(this.sql.release, [key, owner, cancel, this.n.handoffChannelName, this.n.channelName, notifyPayload(key)]);
    return row?.live === true;
  }

  /** One statement on a pooled connection; `onSend` runs once the connection is ready, just before it goes out. */
  private async run(text: string, values?: readonly unknown[], onSend?: () => void): Promise<Array<Record<string, unknown>>> {
    if (this.closed) throw new ClosedError('PostgreSQL lock driver');
    if (this.o.createTables) {
      this.schema ??= this.pool.query(schemaSql(this.n)).then(() => undefined);
      const schema = this.schema;
      try {
        await schema;
      } catch (e) {
        if (this.schema === schema) this.schema = undefined;
        throw e;
      }
    }
    if (!onSend) return (await this.pool.query(timed(text, values, this.o.opTimeoutMs))).rows as Array<Record<string, unknown>>;
    // Checked out first, so that connecting does not count against the TTL the grant reports.
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      onSend();
      return (await client.query(timed(text, values, this.o.opTimeoutMs))).rows as Array<Record<string, unknown>>;
    } catch (e) {
      broken = e instanceof Error ? e : new Error(String(e));
      throw e;
    } finally {
      // A connection whose statement failed (timeout, network) is discarded, not reused.
      client.release(broken);
    }
  }

  private listening(): Promise<pg.Client> {
    if (this.listener) return this.listener;
    const opening = (async () => {
      const client = await openClient(clientConfig(this.o.listen ?? this.o.connection), (error) => {
        this.o.logger?.warn?.('dlock postgres: LISTEN connection lost; waiters fall back to the holder TTL', { error });
        if (this.listener === opening) this.listener = undefined;
        client.end().catch(() => undefined);
        // Wake everyone: their next try decides, and their next watch reopens the listener.
        this.wakeAll();
      });
      client.on('notification', (m) => {
        if (m.payload === undefined) return;
        if (m.channel === this.n.channelName) {
          for (const w of this.watches.get(m.payload) ?? []) w.changed();
        } else if (m.channel === this.n.handoffChannelName) {
          // "<owner> <token>": the key was handed to that waiter (owners contain no space).
          const at = m.payload.lastIndexOf(' ');
          const w = this.watchOf.get(m.payload.slice(0, at));
          if (w && /^\d+$/.test(m.payload.slice(at + 1))) w.granted(BigInt(m.payload.slice(at + 1)));
        }
      });
      await client.query(`LISTEN ${this.n.channel}; LISTEN ${this.n.handoffChannel}`);
      return client;
    })();
    this.listener = opening;
    opening.catch(() => {
      if (this.listener === opening) this.listener = undefined;
    });
    return opening;
  }

  private wakeAll(): void {
    for (const s of this.watches.values()) for (const w of s) w.changed();
  }
}
