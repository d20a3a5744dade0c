/**
 * SQLite driver: the embedded default backend (no server), through one database file per host.
 *
 * Guarantees:
 * - exclusion between every process on ONE host that opens the same file: each change (grant,
 *   renewal batch, release) is one `BEGIN IMMEDIATE` transaction (WAL mode, busy timeout), so
 *   SQLite's file lock serialises them; a try that finds the key held answers from a plain read;
 * - fencing: the token comes from a per-key counter in the file that only ever grows (the row is
 *   never deleted; each grant is fsynced, so not even a power loss rolls it back), across holders,
 *   processes and restarts;
 * - TTLs by the host's shared monotonic clock (CLOCK_MONOTONIC): wall-clock steps change nothing;
 * - a release wakes waiters in every process through a watched notify file, without polling.
 *
 * Does not:
 * - coordinate several hosts, or work on network filesystems (NFS, SMB...) where SQLite's file
 *   locking is unreliable: use a server-backed driver there;
 * - keep locks across a reboot: the monotonic clock restarts, so every lock of an earlier boot is
 *   expired (fencing tokens do survive);
 * - order waiters fairly.
 *
 * better-sqlite3 is synchronous: a transaction that finds the file locked blocks the event loop
 * for at most `busyTimeoutMs`, then fails with SQLITE_BUSY and the core retries with backoff.
 */
import type Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { monotonicNow } from '../../core/clock.js';
import { classifyPeerError, lazyPeer } from '../../core/peer.js';
import { validateMs } from '../../core/validate.js';
import { ClosedError, IdsExhaustedError, InvalidArgumentError, NoSuchDatabaseError, UnavailableError } from '../../errors.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  ForceReleased,
  KeyPage,
  TrySetDriver,
  LockState,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import { hostBootId, hostNow, type HostNow } from './host-clock.js';
import { ReleaseNotifier } from './notify.js';

/** Options of {@link SqliteDriver}. */
export interface SqliteDriverOptions {
  /** The database file, created if missing. Every process that shares locks opens the same file. */
  path: string;
  /**
   * How long one operation waits for another process's transaction, in ms, before it fails with
   * SQLITE_BUSY (and the core retries). It blocks this process's event loop meanwhile. Default 1000.
   */
  busyTimeoutMs?: number;
  /** Prefix of the tables (`<prefix>locks`, `<prefix>fences`, ...): letters, digits, `_`. Default `dlock_`. */
  tablePrefix?: string;
  /**
   * Default true: create the file and the tables when missing. `false` (read-only tools such as
   * `dlock inspect`): create nothing; a missing file throws {@link NoSuchDatabaseError}, and missing
   * tables read as no locks (they are shadowed by empty temporary tables of this connection only).
   */
  create?: boolean;
}

interface LockRow {
  owner: string;
  token: bigint;
  expires_at: bigint;
  boot: string;
}

interface Statements {
  readonly select: Database.Statement<[string], LockRow>;
  readonly nextToken: Database.Statement<[string, bigint], { token: bigint }>;
  readonly upsert: Database.Statement<[string, string, bigint, bigint, string]>;
  readonly extend: Database.Statement<[bigint, string, string, string, bigint]>;
  readonly remove: Database.Statement<[string, string]>;
  readonly removeAny: Database.Statement<[string]>;
  readonly fence: Database.Statement<[string], { token: bigint }>;
  readonly page: Database.Statement<[string, string, string, string, bigint, string, number], { key: string }>;
  readonly readMark: Database.Statement<[string], { mark: bigint }>;
  readonly raiseMark: Database.Statement<[string, bigint]>;
}

const DEFAULT_BUSY_TIMEOUT_MS = 1000;
const DEFAULT_PREFIX = 'dlock_';

/** See the file header. */
export class SqliteDriver implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = { name: 'sqlite', liveness: 'lease', fair: false, scope: 'host' };
  /** The database file. */
  readonly path: string;
  /** The file a release writes to so that waiters in other processes wake up. */
  readonly notifyPath: string;
  private readonly db: Database.Database;
  private readonly stmts: Statements;
  private readonly boot = hostBootId();
  private readonly notifier: ReleaseNotifier;
  private closed = false;
  private syncMode: 'FULL' | 'NORMAL' | undefined;

  private readonly acquireTx: (req: AcquireRequest, sentAt: number) => TryResult;
  private readonly extendTx: (items: readonly ExtendItem[]) => boolean[];
  private readonly releaseTx: (key: string, owner: string) => boolean;
  private readonly raiseMarkTx: (key: string, owner: string, mark: bigint) => boolean;
  private readonly forceTx: (key: string) => ForceReleased;
  private readonly allocateTx: (name: string, count: bigint) => bigint | undefined;

  constructor(options: SqliteDriverOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('SqliteDriver options must be an object such as { path: "/var/tmp/locks.db" }.');
    }
    betterSqlite3(); // MissingPeerError (npm install better-sqlite3), not a file error
    const { path } = options;
    if (typeof path !== 'string' || path.trim().length === 0) {
      throw new InvalidArgumentError('SqliteDriver path must be a non-empty string naming the database file.');
    }
    if (path === ':memory:') {
      throw new InvalidArgumentError(
        'SqliteDriver needs a file that processes can share, not ":memory:"; use MemoryDriver for in-process locks.',
      );
    }
    const busyTimeoutMs = validateMs('busyTimeoutMs', options.busyTimeoutMs, 0, DEFAULT_BUSY_TIMEOUT_MS);
    const prefix = options.tablePrefix ?? DEFAULT_PREFIX;
    if (typeof prefix !== 'string' || !/^[A-Za-z0-9_]{0,64}$/.test(prefix)) {
      throw new InvalidArgumentError(
        `tablePrefix must be at most 64 letters, digits or underscores, got ${JSON.stringify(prefix)}.`,
      );
    }
    this.path = path;
    this.notifyPath = `${path}-dlock-notify`;
    this.db = openDatabase(path, busyTimeoutMs, prefix, options.create ?? true);
    const locks = `"${prefix}locks"`;
    const fences = `"${prefix}fences"`;
    this.stmts = {
      select: this.db.prepare(`SELECT owner, token, expires_at, boot FROM ${locks} WHERE key = ?`),
      // max(): even if a fence row were lost, never hand out a token at or below the lock row's.
      nextToken: this.db.prepare(
        `INSERT INTO ${fences} (key, token) VALUES (?, ?)
         ON CONFLICT (key) DO UPDATE SET token = max(token + 1, excluded.token) RETURNING token`,
      ),
      upsert: this.db.prepare(
        `INSERT INTO ${locks} (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token,
           expires_at = excluded.expires_at, boot = excluded.boot`,
      ),
      extend: this.db.prepare(
        `UPDATE ${locks} SET expires_at = ? WHERE key = ? AND owner = ? AND boot = ? AND expires_at > ?`,
      ),
      remove: this.db.prepare(`DELETE FROM ${locks} WHERE key = ? AND owner = ?`),
      removeAny: this.db.prepare(`DELETE FROM ${locks} WHERE key = ?`),
      fence: this.db.prepare(`SELECT token FROM ${fences} WHERE key = ?`),
      // Live rows under a prefix, after the cursor, in key order (the primary key's index).
      page: this.db.prepare(
        `SELECT key FROM ${locks} WHERE key >= ? AND key > ? AND substr(key, 1, length(?)) = ?
           AND expires_at > ? AND boot = ? ORDER BY key LIMIT ?`,
      ),
      readMark: this.db.prepare(`SELECT mark FROM "${prefix}marks" WHERE key = ?`),
      raiseMark: this.db.prepare(
        `INSERT INTO "${prefix}marks" (key, mark) VALUES (?, ?)
         ON CONFLICT (key) DO UPDATE SET mark = max(mark, excluded.mark)`,
      ),
    };
    this.notifier = new ReleaseNotifier(this.notifyPath);

    const acquire = this.db.transaction((req: AcquireRequest, sentAt: number): TryResult => {
      const now = hostNow();
      const row = this.stmts.select.get(req.key);
      if (row && this.isLive(row, now)) return { ok: false, retryAfterMs: remainingMs(row, now) };
      const floorToken = (row?.token ?? 0n) + 1n;
      const token = this.stmts.nextToken.get(req.key, floorToken)?.token ?? floorToken;
      this.stmts.upsert.run(req.key, req.owner, token, now.ceil + ms(req.ttlMs), this.boot);
      return { ok: true, grant: { token, sentAt } };
    });
    this.acquireTx = (req, sentAt) => {
      // A busy key needs no write lock: in WAL mode this read sees the last commit without waiting
      // for (or delaying) any writer. Every release in the file wakes every waiter, so most tries
      // end here. A key that looks free is decided again inside the write transaction.
      const row = this.stmts.select.get(req.key);
      const now = hostNow();
      if (row && this.isLive(row, now)) return { ok: false, retryAfterMs: remainingMs(row, now) };
      this.synchronous('FULL');
      return acquire.immediate(req, sentAt);
    };

    const extend = this.db.transaction((items: readonly ExtendItem[]): boolean[] => {
      const now = hostNow();
      return items.map(
        (it) => this.stmts.extend.run(now.ceil + ms(it.ttlMs), it.key, it.owner, this.boot, now.floor).changes > 0,
      );
    });
    this.extendTx = (items) => {
      if (items.length === 0) return [];
      this.synchronous('NORMAL');
      return extend.immediate(items);
    };

    const release = this.db.transaction((key: string, owner: string): boolean => {
      const row = this.stmts.select.get(key);
      if (!row || row.owner !== owner) return false;
      // Our own row goes even when expired (tidy), but only a live one counts as released.
      this.stmts.remove.run(key, owner);
      return this.isLive(row, hostNow());
    });
    const raiseMark = this.db.transaction((key: string, owner: string, mark: bigint): boolean => {
      const row = this.stmts.select.get(key);
      if (!row || row.owner !== owner || !this.isLive(row, hostNow())) return false;
      this.stmts.raiseMark.run(key, mark);
      return true;
    });
    this.raiseMarkTx = (key, owner, mark) => {
      // A mark promises a time the next holder must stay above: it goes to disk like a token.
      this.synchronous('FULL');
      return raiseMark.immediate(key, owner, mark);
    };

    // One transaction: the row goes (whoever owns it); the fence row is never touched, so the
    // next grant's token is above every token the key carried.
    const force = this.db.transaction((key: string): ForceReleased => {
      const row = this.stmts.select.get(key);
      const released = row && this.isLive(row, hostNow()) ? 1 : 0;
      if (row) this.stmts.removeAny.run(key);
      const counted = this.stmts.fence.get(key)?.token ?? 0n;
      const fence = row && row.token > counted ? row.token : counted;
      return { released, fence };
    });
    this.forceTx = (key) => {
      this.synchronous('NORMAL');
      return force.immediate(key);
    };

    this.releaseTx = (key, owner) => {
      this.synchronous('NORMAL');
      return release.immediate(key, owner);
    };

    // Id ranges (segment ids). The WHERE refuses to pass 2^63 - 1 (SQLite would silently turn the
    // sum into a REAL): no row comes back then. Fsynced like a grant: a power loss must not roll
    // the counter back and hand a range out twice.
    const allocate = this.db.prepare<[string, bigint], { seq: bigint }>(
      `INSERT INTO "${prefix}sequences" (name, seq) VALUES (?, ?)
       ON CONFLICT (name) DO UPDATE SET seq = seq + excluded.seq WHERE seq <= 9223372036854775807 - excluded.seq
       RETURNING seq`,
    );
    const allocateTx = this.db.transaction((name: string, count: bigint) => allocate.get(name, count)?.seq);
    this.allocateTx = (name, count) => {
      this.synchronous('FULL');
      return allocateTx.immediate(name, count);
    };
  }

  tryAcquire(req: AcquireRequest): Promise<TryResult> {
    // Taken before the transaction: the engine's TTL never starts earlier than this.
    const sentAt = monotonicNow();
    return this.run(() => this.acquireTx(req, sentAt));
  }


  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    return this.run(() => this.extendTx(items));
  }

  release(key: string, owner: string): Promise<boolean> {
    return this.run(() => {
      const released = this.releaseTx(key, owner);
      if (released) this.notifier.publish();
      return released;
    });
  }

  inspect(key: string): Promise<LockState | null> {
    return this.run(() => {
      // One SELECT is one (read) transaction; in WAL mode it never waits for writers.
      const row = this.stmts.select.get(key);
      const now = hostNow();
      if (!row || !this.isLive(row, now)) return null;
      return { owner: row.owner, token: row.token, remainingMs: remainingMs(row, now) };
    });
  }

  /** Live rows whose key starts with `prefix`, in key order; the cursor is the page's last key. */
  list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    return this.run(() => {
      const now = hostNow();
      const rows = this.stmts.page.all(prefix, page.cursor ?? '', prefix, prefix, now.floor, this.boot, page.limit + 1);
      const keys = rows.slice(0, page.limit).map((r) => r.key);
      return rows.length > page.limit ? { keys, cursor: keys[keys.length - 1]! } : { keys };
    });
  }

  /**
   * Delete `key`'s row whoever holds it, in one transaction, and wake every waiter of the file.
   * The fence row stays: the next grant's token is greater than the evicted holder's.
   */
  forceRelease(key: string): Promise<ForceReleased> {
    return this.run(() => {
      const result = this.forceTx(key);
      if (result.released > 0) this.notifier.publish();
      return result;
    });
  }

  readMark(key: string): Promise<bigint> {
    return this.run(() => this.stmts.readMark.get(key)?.mark ?? 0n);
  }

  raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    return this.run(() => this.raiseMarkTx(key, owner, mark));
  }

  allocateRange(name: string, count: bigint): Promise<bigint> {
    return this.run(() => {
      const end = this.allocateTx(name, count);
      if (end === undefined) throw new IdsExhaustedError(name, 'the SQLite counter would pass 2^63 - 1');
      return end;
    });
  }

  /** Notifications of releases by any process sharing the file (the key is not told apart). */
  watch(_key: string): Promise<ChangeWatch> {
    return this.run(() => this.notifier.open());
  }

  /** Number of open change watches (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.notifier.openWatches;
  }

  /** Close the database and the file watch. Idempotent; later calls reject with {@link ClosedError}. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
    await this.notifier.close();
  }

  /**
   * How hard a commit goes to disk. A grant mints a fencing token, so it is fsynced (FULL): a power
   * loss must not roll the counter back and hand the token out twice. An extension or a release
   * may skip the fsync (NORMAL, still safe against a process crash in WAL mode): losing one to a
   * power loss changes nothing, since a reboot expires every lock anyway.
   */
  private synchronous(mode: 'FULL' | 'NORMAL'): void {
    if (this.syncMode === mode) return;
    this.db.pragma(`synchronous = ${mode}`);
    this.syncMode = mode;
  }

  /** Same boot (the monotonic clock is comparable) and not yet expired. */
  private isLive(row: LockRow, now: HostNow): boolean {
    return row.boot === this.boot && row.expires_at > now.floor;
  }

  /** Run one synchronous step as a promise: errors (SQLITE_BUSY...) become rejections. */
  // eslint-disable-next-line @typescript-eslint/require-await -- async turns throws into rejections
  private async run<T>(step: () => T): Promise<T> {
    if (this.closed) throw this.closedError();
    return step();
  }

  private closedError(): ClosedError {
    return new ClosedError(`SQLite lock driver for "${this.path}"`);
  }
}

/** Remaining TTL, rounded down (never more than the TTL that was granted). */
function remainingMs(row: LockRow, now: HostNow): number {
  return Math.max(0, Number(row.expires_at - now.ceil));
}

/** Whole milliseconds as a bigint (the core passes integers; round up anything else). */
function ms(value: number): bigint {
  return BigInt(Math.ceil(value));
}

/** The `better-sqlite3` module, loaded at the first driver construction (MissingPeerError when absent). */
const betterSqlite3 = lazyPeer<typeof Database>('better-sqlite3');

/** Open the file, switch it to WAL and create the tables; every failure names the path. */
function openDatabase(path: string, busyTimeoutMs: number, prefix: string, create: boolean): Database.Database {
  // Many processes starting at once race to create the file, switch it to WAL and create the
  // tables; switching the journal mode does not wait on the busy handler. Opening is not a lock
  // operation (the core's wait loop is not involved), so a busy file is retried here, briefly.
  const deadline = monotonicNow() + Math.max(5000, busyTimeoutMs * 5);
  for (let attempt = 0; ; attempt++) {
    try {
      return setUpDatabase(path, busyTimeoutMs, prefix, create);
    } catch (e) {
      const busy = e instanceof UnavailableError && (e.cause as { code?: string } | undefined)?.code?.startsWith('SQLITE_BUSY');
      if (!busy || monotonicNow() >= deadline) throw e;
      // A synchronous constructor can only block: sleep 5-40 ms without spinning.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5 + Math.random() * 5 * Math.min(attempt + 1, 7));
    }
  }
}

/** The tables, created in `schema` (`main`, or `temp` to shadow missing ones without creating anything). */
function tablesSql(prefix: string, schema: 'main' | 'temp'): string {
  return `CREATE TABLE IF NOT EXISTS ${schema}."${prefix}locks" (
         key TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL,
         expires_at INTEGER NOT NULL, boot TEXT NOT NULL);
       CREATE TABLE IF NOT EXISTS ${schema}."${prefix}fences" (key TEXT PRIMARY KEY, token INTEGER NOT NULL);
       CREATE TABLE IF NOT EXISTS ${schema}."${prefix}marks" (key TEXT PRIMARY KEY, mark INTEGER NOT NULL);
       CREATE TABLE IF NOT EXISTS ${schema}."${prefix}sequences" (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);`;
}

function setUpDatabase(path: string, busyTimeoutMs: number, prefix: string, create: boolean): Database.Database {
  let db: Database.Database | undefined;
  if (!create && !existsSync(path)) throw new NoSuchDatabaseError(`sqlite:${path}`, `no such database file "${path}": check the path (nothing was created)`);
  try {
    db = new (betterSqlite3())(path, { timeout: busyTimeoutMs, fileMustExist: !create });
    db.defaultSafeIntegers(true);
    if (create) {
      // Only switch when needed: changing the journal mode needs the file to ourselves.
      if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL');
      db.exec(tablesSql(prefix, 'main'));
    } else {
      // Create nothing in the file: a table it lacks is read as an empty one of this connection.
      const present = db.prepare<[string], { n: bigint }>(`SELECT count(*) AS n FROM main.sqlite_master WHERE type = 'table' AND name = ?`);
      if (present.get(`${prefix}locks`)?.n !== 1n) db.exec(tablesSql(prefix, 'temp'));
    }
    return db;
  } catch (e) {
    try {
      db?.close();
    } catch {
      // already failing; the original error is the one to report
    }
    // Not about the file: better-sqlite3 missing, or its native module built for another Node.
    const packaging = classifyPeerError('better-sqlite3', e);
    if (packaging) throw packaging;
    const reason = e instanceof Error ? e.message : String(e);
    throw new UnavailableError(
      `Cannot open the SQLite lock database "${path}" (${reason}). Create its directory, or pass a path to a ` +
        `file this process can read and write (the driver also creates "-wal", "-shm" and "-dlock-notify" files beside it)`,
      { cause: e },
    );
  }
}
