/**
 * SQLite driver: the embedded default backend (no server), through one database file per host.
 *
 * Guarantees:
 * - exclusion between every process on ONE host that opens the same file: each change (grant,
 *   renewal batch, release, handoff) is one `BEGIN IMMEDIATE` transaction (WAL mode, busy
 *   timeout), so SQLite's file lock serialises them; a try that finds the key held answers from
 *   plain reads;
 * - every admission mode (exclusive, shared, k permits of a limit: src/core/admission.ts) over a
 *   holders table and a FIFO queue of waiters per key (see holds.ts): read-write locks (a queued
 *   writer stops new readers), semaphores up to 2^40 permits at the cost of a mutex;
 * - fairness as a choice: `fair: true` is strict FIFO across processes (a release hands the key to
 *   the queue's head in its own transaction, also after a holder's TTL ran out); otherwise bounded
 *   barging: a free key goes to whoever asks first while the queue's head has waited less than
 *   `HEAD_BOUND_MS` (50 ms: a handoff here is a cross-process wake-up, see holds.ts) as the head,
 *   after which it is handed to the head;
 * - fencing: the token comes from a per-key counter in the file that only ever grows (the row is
 *   never deleted; each grant is fsynced, so not even a power loss rolls it back), across modes,
 *   holders, processes and restarts;
 * - TTLs by the host's shared monotonic clock (CLOCK_MONOTONIC): wall-clock steps change nothing;
 * - a release wakes waiters in every process through a watched notify file, without polling;
 * - files of earlier versions keep working (new tables are added beside the old ones); an earlier
 *   version's exclusive locks exclude every mode, and its processes see shared holds as busy.
 *
 * Does not:
 * - coordinate several hosts, or work on network filesystems (NFS, SMB...) where SQLite's file
 *   locking is unreliable: use a server-backed driver there;
 * - keep locks across a reboot: the monotonic clock restarts, so every lock of an earlier boot is
 *   expired (fencing tokens do survive);
 * - wake only the waiter a release concerns: the notify file wakes every waiter of the file, and
 *   each answers itself with a plain read; a crashed waiter keeps its place in the queue until its
 *   entry expires (its next try was due within the holder's TTL, plus 2 s), and a key handed to it
 *   meanwhile stays held until the TTL of that grant.
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
  KeyState,
  TrySetDriver,
  LockState,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import { hostBootId, hostNow, type HostNow } from './host-clock.js';
import { holdTablesSql, Holds, ms, remainingMs, type Outcome } from './holds.js';
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

interface Statements {
  readonly extend: Database.Statement<[bigint, string, string, string, bigint]>;
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
  readonly info: DriverInfo = {
    name: 'sqlite',
    liveness: 'lease',
    fair: false,
    scope: 'host',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'choice',
  };
  /** The database file. */
  readonly path: string;
  /** The file a release writes to so that waiters in other processes wake up. */
  readonly notifyPath: string;
  private readonly db: Database.Database;
  private readonly stmts: Statements;
  private readonly holds: Holds;
  private readonly boot = hostBootId();
  private readonly notifier: ReleaseNotifier;
  private closed = false;
  private syncMode: 'FULL' | 'NORMAL' | undefined;

  private readonly acquireTx: (req: AcquireRequest, sentAt: number, queue: boolean) => TryResult;
  private readonly extendTx: (items: readonly ExtendItem[]) => boolean[];
  private readonly releaseTx: (key: string, owner: string) => boolean;
  private readonly cancelTx: (key: string, owner: string) => void;
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
      extend: this.db.prepare(
        `UPDATE ${locks} SET expires_at = ? WHERE key = ? AND owner = ? AND boot = ? AND expires_at > ?`,
      ),
      fence: this.db.prepare(`SELECT token FROM ${fences} WHERE key = ?`),
      // Live rows under a prefix, after the cursor, in key order (the primary key's index). A key
      // held only by readers or permit holders has its marker row here (owner '').
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
    const holds = (this.holds = new Holds(this.db, prefix, this.boot));
    this.notifier = new ReleaseNotifier(this.notifyPath);

    const acquire = this.db.transaction((req: AcquireRequest, queue: boolean, canGrant: boolean) => holds.acquire(req, hostNow(), queue, canGrant));
    this.acquireTx = (req, sentAt, queue) => {
      // Plain reads first: in WAL mode they see the last commit without waiting for (or delaying)
      // any writer. Every release in the file wakes every waiter, so most tries end here. A key
      // that looks free is decided again inside the write transaction.
      const now = hostNow();
      let outcome = holds.peek(req, now, queue);
      if (outcome.kind === 'write' && !outcome.grant) {
        // Only a queue entry to write: no token is minted, so the commit needs no fsync. Should
        // the key have become free meanwhile, the grant follows in a second, fsynced transaction.
        this.synchronous('NORMAL');
        const r = acquire.immediate(req, queue, false);
        if (r.handed) this.notifier.publish();
        outcome = r.outcome;
      }
      if (outcome.kind === 'write') {
        this.synchronous('FULL');
        const r = acquire.immediate(req, queue, true);
        if (r.handed) this.notifier.publish();
        outcome = r.outcome;
      }
      return answer(outcome, req, sentAt, now);
    };

    const extend = this.db.transaction((items: readonly ExtendItem[]): boolean[] => {
      const now = hostNow();
      return items.map((it) => {
        const expiresAt = now.ceil + ms(it.ttlMs);
        if (this.stmts.extend.run(expiresAt, it.key, it.owner, this.boot, now.floor).changes > 0) return true;
        return holds.extendHolder(it.key, it.owner, expiresAt, now);
      });
    });
    this.extendTx = (items) => {
      if (items.length === 0) return [];
      this.synchronous('NORMAL');
      return extend.immediate(items);
    };

    const release = this.db.transaction((key: string, owner: string, canGrant: boolean) => holds.release(key, owner, hostNow(), canGrant));
    this.releaseTx = (key, owner) => {
      // A release that hands the key over mints tokens: fsynced then, like a grant. Whether a
      // head is due is read first; one that becomes due in between takes the key by its own try.
      const canGrant = holds.mayHandOver(key, hostNow());
      this.synchronous(canGrant ? 'FULL' : 'NORMAL');
      const r = release.immediate(key, owner, canGrant);
      if (r.released || r.handed) this.notifier.publish();
      return r.released;
    };

    const cancel = this.db.transaction((key: string, owner: string, canGrant: boolean) => holds.cancel(key, owner, hostNow(), canGrant));
    this.cancelTx = (key, owner) => {
      if (!holds.hasAnything(key, owner)) return;
      const canGrant = holds.mayHandOver(key, hostNow());
      this.synchronous(canGrant ? 'FULL' : 'NORMAL');
      const r = cancel.immediate(key, owner, canGrant);
      if (r.released || r.handed) this.notifier.publish();
    };

    const raiseMark = this.db.transaction((key: string, owner: string, mark: bigint): boolean => {
      const row = holds.lockRow(key);
      if (!row || row.owner !== owner || !holds.isLive(row, hostNow())) return false;
      this.stmts.raiseMark.run(key, mark);
      return true;
    });
    this.raiseMarkTx = (key, owner, mark) => {
      // A mark promises a time the next holder must stay above: it goes to disk like a token.
      this.synchronous('FULL');
      return raiseMark.immediate(key, owner, mark);
    };

    // One transaction: every hold goes (whoever owns it); the fence row is never touched, so the
    // next grant's token is above every token the key carried.
    const force = this.db.transaction((key: string, canGrant: boolean) =>
      holds.force(key, hostNow(), canGrant, this.stmts.fence.get(key)?.token ?? 0n),
    );
    this.forceTx = (key) => {
      const canGrant = holds.mayHandOver(key, hostNow());
      this.synchronous(canGrant ? 'FULL' : 'NORMAL');
      const { released, fence, handed } = force.immediate(key, canGrant);
      if (released > 0 || handed) this.notifier.publish();
      return { released, fence };
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

  /**
   * One try in any admission mode. With `queue` (a waiter whose watch is open), a busy try keeps
   * the waiter's place in the key's queue, so that fairness and handoff can serve it.
   */
  tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    // Taken before the transaction: the engine's TTL never starts earlier than this.
    const sentAt = monotonicNow();
    return this.run(() => this.acquireTx(req, sentAt, queue));
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    return this.run(() => this.extendTx(items));
  }

  release(key: string, owner: string): Promise<boolean> {
    return this.run(() => this.releaseTx(key, owner));
  }

  /** The waiter `owner` gives up: it leaves the queue, and a hold handed to it meanwhile is passed on. */
  cancel(key: string, owner: string): Promise<void> {
    return this.run(() => this.cancelTx(key, owner));
  }

  inspect(key: string): Promise<LockState | null> {
    return this.run(() => this.holds.state(key, hostNow()).holders[0] ?? null);
  }

  /** Every holder of `key` (exclusive, readers, permit holders with their permits) and the waiters queued. */
  keyState(key: string): Promise<KeyState> {
    // Plain reads: in WAL mode they never wait for writers.
    return this.run(() => this.holds.state(key, hostNow()));
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
   * Remove every hold of `key` whoever owns it, in one transaction, hand the key to the queue's
   * heads where due, and wake every waiter of the file. The fence row stays: the next grant's
   * token is greater than the evicted holders'.
   */
  forceRelease(key: string): Promise<ForceReleased> {
    return this.run(() => this.forceTx(key));
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

/**
 * The try's answer. A hold already ours was handed over to us after an earlier try: its TTL
 * started before this one, so `sentAt` is moved back by the time it has already run.
 */
function answer(outcome: Outcome, req: AcquireRequest, sentAt: number, now: HostNow): TryResult {
  switch (outcome.kind) {
    case 'granted':
      return { ok: true, grant: { token: outcome.token, sentAt } };
    case 'mine': {
      const left = remainingMs({ expires_at: outcome.expiresAt }, now);
      return { ok: true, grant: { token: outcome.token, sentAt: sentAt + Math.min(0, left - req.ttlMs) } };
    }
    case 'busy':
      return { ok: false, retryAfterMs: outcome.retryAfterMs };
    case 'write':
      throw new Error('unreachable: a write step answers');
  }
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
       CREATE TABLE IF NOT EXISTS ${schema}."${prefix}sequences" (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
       ${holdTablesSql(prefix, schema)}`;
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
      // A file of an earlier version has the lock tables but not those of the admission modes.
      else if (present.get(`${prefix}queue`)?.n !== 1n) db.exec(holdTablesSql(prefix, 'temp'));
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
