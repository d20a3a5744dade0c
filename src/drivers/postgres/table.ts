/**
 * PostgreSQL lease-table mode: a row per held key (owner, fencing token, expiry by the server's
 * clock), for users behind transaction poolers (PgBouncer `pool_mode=transaction`, RDS Proxy...)
 * where session-level advisory locks do not work. A try-set driver: each operation is one
 * autocommit statement (no prepared statement names, no session state), so any pooled
 * connection may run it; the core's wait loop (src/core/wait-loop.ts) waits.
 *
 * Guarantees:
 * - exclusion by one upsert that grants only a free or expired row (the row is locked while it
 *   decides); tokens from one sequence, strictly increasing per key;
 * - FIFO with direct handoff: a waiter (its watch open) queues in `<prefix>waiters` with its busy
 *   try, in the same statement; a release hands the lock to the first live waiter in the same
 *   statement (fresh token, that waiter's TTL) and NOTIFYs `<prefix>grant` with the token and the
 *   owner, so the waiter holds the lock one hop after the release, and no other waiter wakes. A
 *   free (or expired) lock with live queued waiters goes to the head only, also when an arrival's
 *   try finds it: arrivals never barge past the queue (`info.fair`);
 * - a release that finds nobody queued NOTIFYs `<prefix>release` with the key; each driver keeps
 *   one dedicated LISTEN connection (`listen` option: a direct connection when the pool cannot
 *   carry LISTEN), opened before the waiter's decisive try, so a release after it cannot go
 *   unseen; a lost notification (the LISTEN connection dropped) costs at most the holder's
 *   remaining TTL: the waiter's next try then confirms a lock handed to it;
 * - a queue entry expires 2 s after the holder's expiry as its last try saw it (each try
 *   refreshes it), so the entry of a waiter that died goes, and handoffs skip expired entries.
 * Does not:
 * - free a crashed holder's lock before its TTL runs out (no session to end);
 * - skip a waiter that died while its entry is still live: the lock handed to it idles until that
 *   waiter's TTL runs out (the next waiter is served then);
 * - order waiters that enqueue within the same instant as a release exactly (the release may not
 *   see an entry committed after it began: that waiter is woken by the release's NOTIFY and takes
 *   the lock with its own try, one more round trip).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { LatchWatch } from '../../core/change-watch.js';
import { monotonicNow } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError } from '../../errors.js';
import type { AcquireRequest, ChangeWatch, DriverInfo, ExtendItem, TrySetDriver, LockState, TryResult } from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import { clientConfig, int8, openClient, pgModule, timed, type ConnectionSettings } from './connection.js';
import { allocateRange, raiseMark, readMark, schemaSql, type Names, type Run } from './schema.js';

/** NOTIFY payloads are limited to 8000 bytes: long keys are sent as a digest. */
export function notifyPayload(key: string): string {
  return Buffer.byteLength(key) <= 200 ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
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
  readonly info: DriverInfo = { name: 'postgres', liveness: 'lease', fair: true, scope: 'distributed' };
  private readonly pool: pg.Pool;
  private readonly n: Names;
  private readonly watches = new Map<string, Set<LatchWatch>>();
  /** Open waits by owner id: a handoff names the owner it granted. */
  private readonly grantees = new Map<string, LatchWatch>();
  /** The queued try in flight per waiting owner (see cancel). */
  private readonly trying = new Map<string, Promise<unknown>>();
  private listener: Promise<pg.Client> | undefined;
  private schema: Promise<void> | undefined;
  private closed = false;
  private readonly sql: Record<'acquire' | 'extend' | 'release' | 'leave' | 'inspect' | 'held', string>;

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
    const { locks, waiters } = this.n;
    this.sql = {
      // One call (see schema.ts): grant (to the head of the queue first), confirm, or enqueue.
      acquire: `SELECT token, remaining_ms FROM ${this.n.acquireFn}($1, $2, $3, $4, $5, $6)`,
      extend: `
        UPDATE ${locks} AS l SET expires_at = clock_timestamp() + i.ttl * interval '1 millisecond'
        FROM unnest($1::text[], $2::text[], $3::int[]) AS i(key, owner, ttl)
        WHERE l.key = i.key AND l.owner = i.owner AND l.expires_at > clock_timestamp()
        RETURNING l.key, l.owner`,
      // One call (see schema.ts): hand the lock to the head of the queue, or free it.
      release: `SELECT live FROM ${this.n.releaseFn}($1, $2, $3, $4, $5)`,
      leave: `DELETE FROM ${waiters} WHERE key = $1 AND owner = $2 RETURNING 1`,
      inspect: `
        SELECT owner, token, floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000) AS remaining_ms
        FROM ${locks} WHERE key = $1 AND expires_at > clock_timestamp()`,
      held: `SELECT 1 FROM ${locks} WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp() FOR SHARE`,
    };
  }

  async tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    let sentAt = 0;
    const running = this.run(
      this.sql.acquire,
      [req.key, req.owner, Math.ceil(req.ttlMs), queue, this.n.grantChannelName, notifyPayload(req.key)],
      () => (sentAt = monotonicNow()),
    );
    if (queue) {
      // A cancel must come after this try (pooled connections do not keep their order): an
      // abandoned try that enqueues after the cancel would leave an entry the lock is handed to.
      this.trying.set(req.owner, running);
      const forget = (): void => {
        if (this.trying.get(req.owner) === running) this.trying.delete(req.owner);
      };
      running.then(forget, forget);
    }
    const [row] = await running;
    if (row?.token !== null && row?.token !== undefined) return { ok: true, grant: { token: int8(row.token), sentAt } };
    const remaining = row?.remaining_ms;
    return { ok: false, retryAfterMs: remaining === null || remaining === undefined ? -1 : Math.max(0, Number(remaining)) };
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
    const [row] = await this.run(this.sql.release, [key, owner, this.n.grantChannelName, notifyPayload(key), this.n.channelName]);
    return row?.live === true;
  }

  /**
   * The waiter `owner` gives up: leave the queue. Every grant to a waiter deletes its entry in
   * the same statement, so an entry still there means no grant; else a lock handed to it
   * meanwhile (committed before our DELETE ended: it waits for a handoff claiming the entry) is
   * released onward, by a statement that sees it.
   */
  async cancel(key: string, owner: string): Promise<void> {
    await this.trying.get(owner)?.catch(() => undefined);
    if ((await this.run(this.sql.leave, [key, owner])).length > 0) return;
    await this.release(key, owner);
  }

  async inspect(key: string): Promise<LockState | null> {
    const [row] = await this.run(this.sql.inspect, [key]);
    if (!row) return null;
    return { owner: String(row.owner), token: int8(row.token), remainingMs: Math.max(0, Number(row.remaining_ms)) };
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
   * Wake-ups for `key` and handoffs to `owner`: the LISTEN is in place before this resolves, so a
   * release committed after it (the waiter's decisive try comes next) cannot go unseen.
   */
  async watch(key: string, owner: string): Promise<ChangeWatch> {
    if (this.closed) throw new ClosedError('PostgreSQL lock driver');
    await this.listening();
    const payload = notifyPayload(key);
    let set = this.watches.get(payload);
    if (!set) this.watches.set(payload, (set = new Set()));
    const s = set;
    const latch: LatchWatch = new LatchWatch((w) => {
      s.delete(w);
      if (s.size === 0 && this.watches.get(payload) === s) this.watches.delete(payload);
      if (this.grantees.get(owner) === latch) this.grantees.delete(owner);
    });
    s.add(latch);
    this.grantees.set(owner, latch);
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
        if (m.channel === this.n.grantChannelName) this.handedOver(m.payload);
        else if (m.channel === this.n.channelName) for (const w of this.watches.get(m.payload) ?? []) w.changed();
      });
      await client.query(`LISTEN ${this.n.channel}; LISTEN ${this.n.grantChannel}`);
      return client;
    })();
    this.listener = opening;
    opening.catch(() => {
      if (this.listener === opening) this.listener = undefined;
    });
    return opening;
  }

  /** A handoff's NOTIFY: `[token, owner, key payload]`; only that owner's wait hears it. */
  private handedOver(payload: string): void {
    let token: bigint;
    let owner: unknown;
    try {
      const parsed = JSON.parse(payload) as unknown[];
      owner = parsed[1];
      token = BigInt(String(parsed[0]));
    } catch {
      return; // not ours (someone else NOTIFYing on the channel)
    }
    if (typeof owner === 'string') this.grantees.get(owner)?.granted(token);
  }

  private wakeAll(): void {
    for (const s of this.watches.values()) for (const w of s) w.changed();
  }
}
