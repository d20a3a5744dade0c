/**
 * What both MySQL modes share: the schema, the driver's private connections (home connections
 * chosen by key, spare connections for blocking statements), interrupting a blocked statement,
 * and the statements that do not depend on the mode (inspect, marks, id ranges).
 */
import { monotonicNow } from '../../core/clock.js';
import { ClosedError, IdsExhaustedError, PermissionDeniedError, UnavailableError } from '../../errors.js';
import type { ForceReleased, KeyPage, LockState } from '../driver.js';
import { Conn, mysql2, openConn, type MysqlError } from './connection.js';
import { keyNames, resolveOptions, slotOf, type KeyNames, type MysqlDriverOptions, type ResolvedOptions } from './options.js';

/** ER_NO_SUCH_TABLE: the tables were not created (`create: false`). */
const ER_NO_SUCH_TABLE = 1146;
/** The error number MySQL/MariaDB answer when BIGINT arithmetic overflows (ER_DATA_OUT_OF_RANGE). */
const ER_DATA_OUT_OF_RANGE = 1690;
/** ER_DUP_FIELDNAME: the column exists already (another client added it first). */
const ER_DUP_FIELDNAME = 1060;
/** How long an interrupt (KILL QUERY) may take before the connection is dropped instead. */
const KILL_TIMEOUT_MS = 2000;

/**
 * SQL for "the row's holder still holds the key" (`?` = the key's session lock name): a lease row
 * (no session) until its expiry by the server's clock, a session row while that connection
 * still holds the session lock.
 */
export const LIVE = `(owner IS NOT NULL AND IF(session_id IS NULL, expires_at > UTC_TIMESTAMP(6), IS_USED_LOCK(?) <=> session_id))`;

/** The shared half of both MySQL drivers. */
export abstract class MysqlEngine {
  protected readonly o: ResolvedOptions;
  /** `<prefix>locks`, quoted. */
  protected readonly locks: string;
  protected readonly sequences: string;
  /** `<prefix>holders`, quoted: the shared and permit holders of lease-table mode. */
  protected readonly holders: string;
  /** `<prefix>waiters`, quoted: lease-table mode's queue of waiters, in `seq` order. */
  protected readonly waiters: string;
  /** Connections for non-blocking statements, chosen by key. */
  private readonly homes: Array<Promise<Conn> | undefined>;
  /** Connections that hold nothing and wait for nothing, kept for the next wait. */
  private readonly spares: Conn[] = [];
  /** Every connection this driver opened and has not closed. */
  protected readonly open = new Set<Conn>();
  private schema: Promise<void> | undefined;
  protected closed = false;

  protected constructor(options: MysqlDriverOptions) {
    this.o = resolveOptions(options);
    mysql2(); // MissingPeerError (npm install mysql2) here rather than at the first lock
    this.locks = `\`${this.o.prefix}locks\``;
    this.sequences = `\`${this.o.prefix}sequences\``;
    this.holders = `\`${this.o.prefix}holders\``;
    this.waiters = `\`${this.o.prefix}waiters\``;
    this.homes = Array.from({ length: this.o.connections }, () => undefined);
  }

  /** The MySQL names of `key` (row id, session lock name). */
  namesOf(key: string): KeyNames {
    return keyNames(this.o.database, this.o.prefix, key);
  }

  /** Who holds `key`, by the same rule for both modes. */
  async inspect(key: string): Promise<LockState | null> {
    const n = this.namesOf(key);
    const rows = await orNone(
      this.onHome<Array<{ owner: Buffer; token: string; remaining_us: string | null; session: number }>>(
        n.id,
        `SELECT owner, token, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS remaining_us,
                session_id IS NOT NULL AS session
           FROM ${this.locks} WHERE id = ? AND ${LIVE}`,
        [n.id, n.lock],
      ),
      [],
    );
    const row = rows[0];
    if (!row) return null;
    const remainingMs = Math.max(0, Math.floor(Number(row.remaining_us ?? 0) / 1000));
    return { owner: row.owner.toString('utf8'), token: BigInt(row.token), remainingMs };
  }

  /**
   * One page of held keys, both modes: `limit` rows of the table in primary-key order (the
   * SHA-256 ids: a bounded index range, `id > cursor ORDER BY id LIMIT n`), of which those under
   * `prefix` with a live holder are kept (a lease row until its expiry; a session row while its
   * connection holds the user lock, checked for the page in one more statement). The cursor is
   * the last id read, in hex. Missing tables read as no keys.
   */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    const conn = await this.home(0);
    const rows = await orNone(
      conn.query<Array<{ hid: string; name: string | Buffer; leased: number; session_id: string | number | null; owned: number }>>(
        `SELECT HEX(id) AS hid, name, owner IS NOT NULL AS owned, session_id,
                owner IS NOT NULL AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6) AS leased
           FROM ${this.locks} WHERE id > UNHEX(?) ORDER BY id LIMIT ?`,
        [page.cursor ?? '', page.limit],
      ),
      [],
    );
    const cursor = rows.length === page.limit ? rows[rows.length - 1]?.hid : undefined;
    const named = rows.map((r) => ({ ...r, key: Buffer.isBuffer(r.name) ? r.name.toString('utf8') : String(r.name) })).filter((r) => Number(r.owned) === 1 && r.key.startsWith(prefix));
    const sessions = named.filter((r) => Number(r.leased) !== 1 && r.session_id !== null);
    const live = new Set(named.filter((r) => Number(r.leased) === 1).map((r) => r.key));
    if (sessions.length > 0) {
      const [answer] = await conn.query<Array<Record<string, number | null>>>(
        `SELECT ${sessions.map((_, i) => `IS_USED_LOCK(?) <=> CAST(? AS UNSIGNED) AS h${i}`).join(', ')}`,
        sessions.flatMap((r) => [this.namesOf(r.key).lock, String(r.session_id)]),
      );
      sessions.forEach((r, i) => {
        if (Number(answer?.[`h${i}`]) === 1) live.add(r.key);
      });
    }
    const keys = named.filter((r) => live.has(r.key)).map((r) => r.key);
    return cursor === undefined ? { keys } : { keys, cursor };
  }

  /**
   * Remove every holder of `key`, both modes: a live lease row is cleared (one UPDATE; the row
   * stays, and with it the fencing counter), and a connection that holds the key's user lock is
   * ended with `KILL CONNECTION <id>` (found with `IS_USED_LOCK`): MySQL cannot release another
   * connection's user lock, so EVERY lock that connection holds goes with it, and its driver aborts
   * their leases at once. Waiters blocked in GET_LOCK get the lock; lease-table waiters are woken
   * (the row's `changes` moves on, their watches' sleep is ended, see ./table.ts). Killing another
   * user's connection needs `CONNECTION_ADMIN` (or `SUPER`). `fence`: the row's counter.
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    const n = this.namesOf(key);
    const conn = await this.home(slotOf(n.id, this.o.connections));
    const r = await orNone(
      conn.query<unknown[]>(
        // The live exclusive lease and the live holders rows (table mode's shared and permit
        // holders, valid while the row is held) are counted, then the row is cleared (the
        // holders rows stop counting at once) and they are deleted.
        `SET @dlock_x = (SELECT COUNT(*) FROM ${this.locks} WHERE id = ? AND owner IS NOT NULL AND owner <> '' AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6)),
             @dlock_h = (SELECT COUNT(*) FROM ${this.holders} WHERE id = ? AND expires_at > UTC_TIMESTAMP(6)
                           AND EXISTS (SELECT 1 FROM ${this.locks} WHERE id = ? AND owner IS NOT NULL));
         UPDATE ${this.locks} SET owner = NULL, expires_at = NULL, changes = changes + 1
           WHERE id = ? AND owner IS NOT NULL AND session_id IS NULL AND (expires_at > UTC_TIMESTAMP(6) OR owner = '');
         DELETE FROM ${this.holders} WHERE id = ?;
         SELECT @dlock_x + @dlock_h AS leased, IS_USED_LOCK(?) AS holder, CONNECTION_ID() AS me,
                (SELECT token FROM ${this.locks} WHERE id = ?) AS token,
                (SELECT GROUP_CONCAT(watch_id) FROM ${this.waiters} WHERE id = ? AND watch_id IS NOT NULL AND expires_at > UTC_TIMESTAMP(6)) AS watches`,
        [n.id, n.id, n.id, n.id, n.id, n.lock, n.id, n.id],
      ).catch((e: unknown) => {
        // ER_TABLEACCESS_DENIED_ERROR: this user may not change dlock's tables.
        if ((e as MysqlError).errno === 1142) {
          throw new PermissionDeniedError('mysql', `to clear lock "${key}" (${(e as Error).message})`, `GRANT SELECT, INSERT, UPDATE, DELETE on dlock's tables to this user`, { cause: e });
        }
        throw e;
      }),
      [],
    );
    const row = (r[3] as Array<{ leased: string | number; holder: string | number | null; me: string | number; token: string | null; watches: string | Buffer | null }> | undefined)?.[0];
    if (!row) return { released: 0, fence: 0n };
    // Wake the table's waiters (ids read from the table: digits only); a watch gone meanwhile is no matter.
    for (const id of String(row.watches ?? '').split(',').filter((w) => /^\d+$/.test(w))) await conn.query(`KILL QUERY ${id}`).catch(() => undefined);
    let released = Math.max(0, Number(row.leased));
    if (row.holder !== null) {
      const id = Math.trunc(Number(row.holder));
      // Not on the connection that would die of it.
      const killer = String(row.holder) === String(row.me) ? await this.takeSpare() : conn;
      try {
        await killer.query(`KILL CONNECTION ${id}`);
        released++;
      } catch (e) {
        // Gone already (ER_NO_SUCH_THREAD): its locks are free.
        if ((e as MysqlError).errno === 1094) return { released, fence: row.token === null ? 0n : BigInt(row.token) };
        // ER_KILL_DENIED_ERROR: another user's connection.
        if ((e as MysqlError).errno === 1095) {
          throw new PermissionDeniedError('mysql', `to end connection ${id}, which holds lock "${key}"`, 'connect as its user, or GRANT CONNECTION_ADMIN (MySQL 8) / SUPER (MariaDB) to this user', { cause: e });
        }
        throw e;
      } finally {
        if (killer !== conn) this.giveBack(killer);
      }
    }
    return { released, fence: row.token === null ? 0n : BigInt(row.token) };
  }

  /** The durable high-water mark of `key` (worker-id leases); 0n when none was written. */
  async readMark(key: string): Promise<bigint> {
    const n = this.namesOf(key);
    const rows = await orNone(this.onHome<Array<{ mark: string }>>(n.id, `SELECT mark FROM ${this.locks} WHERE id = ?`, [n.id]), []);
    return rows[0] ? BigInt(rows[0].mark) : 0n;
  }

  /** Raise the mark of `key` to `mark` while `owner` holds it; false when it no longer holds it. */
  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    const n = this.namesOf(key);
    const r = await this.onHome<{ affectedRows: number }>(
      n.id,
      `UPDATE ${this.locks} SET mark = GREATEST(mark, CAST(? AS SIGNED)) WHERE id = ? AND owner = ? AND ${LIVE}`,
      [mark.toString(), n.id, owner, n.lock],
    );
    return r.affectedRows > 0;
  }

  /** One statement: LAST_INSERT_ID(expr) carries the counter's new value back in the OK packet. */
  async allocateRange(name: string, count: bigint): Promise<bigint> {
    const id = keyNames(this.o.database, this.o.prefix, `ids\u0000${name}`).id;
    try {
      const r = await this.onHome<{ insertId: number | string }>(
        id,
        `INSERT INTO ${this.sequences} (id, name, seq) VALUES (?, ?, LAST_INSERT_ID(CAST(? AS SIGNED)))
           ON DUPLICATE KEY UPDATE seq = LAST_INSERT_ID(seq + CAST(? AS SIGNED))`,
        [id, name, count.toString(), count.toString()],
      );
      return BigInt(r.insertId);
    } catch (e) {
      if ((e as MysqlError).errno === ER_DATA_OUT_OF_RANGE) {
        throw new IdsExhaustedError(name, 'the MySQL counter would pass 2^63 - 1');
      }
      throw e;
    }
  }

  /** Run a non-blocking statement on the key's home connection (opened on first use). */
  protected async onHome<T>(id: Buffer, sql: string, params: readonly unknown[]): Promise<T> {
    const conn = await this.home(slotOf(id, this.homes.length));
    return conn.query<T>(sql, params);
  }

  /** The home connection of `slot`, (re)opened when needed, with the schema in place. */
  protected async home(slot: number): Promise<Conn> {
    if (this.closed) throw this.closedError();
    let p = this.homes[slot];
    if (p) {
      const c = await p.catch(() => undefined);
      if (c?.alive) return c;
      if (this.homes[slot] === p) this.homes[slot] = undefined;
    }
    p = this.homes[slot];
    if (!p) {
      p = this.connect();
      this.homes[slot] = p;
      p.catch(() => {
        if (this.homes[slot] === p) this.homes[slot] = undefined;
      });
    }
    return p;
  }

  /** A connection for a blocking wait: a spare one, or a new one. */
  protected async takeSpare(): Promise<Conn> {
    for (;;) {
      const c = this.spares.pop();
      if (!c) break;
      if (c.alive) return c;
    }
    return this.connect();
  }

  /** A connection that holds and waits for nothing again: keep a few, close the rest. */
  protected giveBack(conn: Conn): void {
    if (!conn.alive || this.spares.includes(conn)) return;
    if (this.closed || this.spares.length >= 2) {
      this.open.delete(conn);
      void conn.close();
      return;
    }
    this.spares.push(conn);
  }

  /**
   * Interrupt the statement running on `conn` (`QUERY`: a blocked GET_LOCK returns NULL; a KILL
   * that lands before the statement started is lost), or end the connection (`CONNECTION`: lands
   * whatever it is doing; the server frees its locks).
   */
  protected async interrupt(conn: Conn, what: 'QUERY' | 'CONNECTION' = 'QUERY'): Promise<void> {
    if (!conn.alive) return;
    // Own connections (same user) need no privilege. Integer, not a parameter.
    const kill = this.home(0).then((home) => home.query(`KILL ${what} ${Math.trunc(conn.threadId)}`));
    let timer: NodeJS.Timeout | undefined;
    const landed = await Promise.race([
      kill.then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), KILL_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    // Cannot reach the server: drop the socket (the server ends the wait when it notices).
    if (!landed) conn.destroy();
  }

  /** Open a connection and make sure the tables exist (once per driver). */
  protected async connect(): Promise<Conn> {
    if (this.closed) throw this.closedError();
    let conn: Conn;
    try {
      conn = await openConn(this.o.connection, this.o.logger);
    } catch (e) {
      throw new UnavailableError(`Connecting to MySQL at ${this.o.display}`, { cause: e });
    }
    if (this.closed) {
      void conn.close();
      throw this.closedError();
    }
    this.open.add(conn);
    conn.onClose(() => this.open.delete(conn));
    this.onOpen(conn);
    this.schema ??= this.o.create ? this.createSchema(conn) : Promise.resolve();
    try {
      await this.schema;
    } catch (e) {
      this.schema = undefined;
      this.open.delete(conn);
      void conn.close();
      throw e;
    }
    return conn;
  }

  /** Hook: a connection opened. */
  protected onOpen(_conn: Conn): void {
    // nothing by default
  }

  private async createSchema(conn: Conn): Promise<void> {
    // Rows are never deleted: a key's row keeps its fencing counter (`token`) and mark for good.
    // Lease-table mode: the row's owner is the exclusive holder, or '' while only `holders` rows
    // hold the key (its expiry then the latest of theirs), so that every check of the row alone
    // (session mode's, the exclusive fast path's, list()) sees the key busy.
    await conn.query(
      `CREATE TABLE IF NOT EXISTS ${this.locks} (
         id         BINARY(32)      NOT NULL PRIMARY KEY COMMENT 'SHA-256 of the key',
         name       TEXT            NOT NULL COMMENT 'the key',
         owner      VARBINARY(255)  NULL     COMMENT 'holder (or last session holder), NULL when free',
         token      BIGINT          NOT NULL COMMENT 'fencing counter: the last token handed out',
         expires_at DATETIME(6)     NULL     COMMENT 'server UTC time the lease ends',
         session_id BIGINT UNSIGNED NULL     COMMENT 'session mode: CONNECTION_ID() holding the lock',
         mark       BIGINT          NOT NULL DEFAULT 0 COMMENT 'high-water mark (worker-id leases)',
         crowded    TINYINT         NOT NULL DEFAULT 0 COMMENT '1 while holders or waiters rows may exist: steps take the full rule',
         changes    BIGINT          NOT NULL DEFAULT 0 COMMENT 'bumped by each release that wakes waiters: their watches sleep on it'
       ) ENGINE = InnoDB;
       CREATE TABLE IF NOT EXISTS ${this.sequences} (
         id   BINARY(32) NOT NULL PRIMARY KEY COMMENT 'SHA-256 of the counter name',
         name TEXT       NOT NULL,
         seq  BIGINT     NOT NULL COMMENT 'the last id handed out'
       ) ENGINE = InnoDB;
       CREATE TABLE IF NOT EXISTS ${this.holders} (
         id         BINARY(32)     NOT NULL COMMENT 'the key row (locks.id)',
         owner      VARBINARY(255) NOT NULL,
         token      BIGINT         NOT NULL COMMENT 'fencing token of this grant',
         mode       CHAR(1)        NOT NULL COMMENT 's = shared (read), p = permits',
         permits    BIGINT         NOT NULL,
         lim        BIGINT         NOT NULL COMMENT 'the semaphore limit the holder asked for',
         expires_at DATETIME(6)    NOT NULL COMMENT 'server UTC time the lease ends',
         PRIMARY KEY (id, owner)
       ) ENGINE = InnoDB;
       CREATE TABLE IF NOT EXISTS ${this.waiters} (
         seq        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY COMMENT 'arrival order',
         id         BINARY(32)      NOT NULL COMMENT 'the key row (locks.id)',
         owner      VARBINARY(255)  NOT NULL,
         mode       CHAR(1)         NOT NULL COMMENT 'x = exclusive, s = shared, p = permits',
         permits    BIGINT          NOT NULL,
         lim        BIGINT          NOT NULL,
         ttl_ms     BIGINT          NOT NULL COMMENT 'TTL of the grant a handoff gives it',
         fair       TINYINT         NOT NULL,
         alongside  VARBINARY(255)  NULL,
         since      DATETIME(6)     NOT NULL COMMENT 'server UTC time it queued',
         expires_at DATETIME(6)     NOT NULL COMMENT 'dropped unless it tries again before',
         watch_id   BIGINT UNSIGNED NULL     COMMENT 'CONNECTION_ID() of its wake-up watch (a release ends its sleep)',
         UNIQUE KEY key_owner (id, owner),
         KEY key_seq (id, seq)
       ) ENGINE = InnoDB`,
    );
    // Tables of older versions lack these columns: add them (guarded; a concurrent add is fine).
    const columns: ReadonlyArray<[table: string, quoted: string, column: string, definition: string]> = [
      ['locks', this.locks, 'crowded', `TINYINT NOT NULL DEFAULT 0 COMMENT '1 while holders or waiters rows may exist: steps take the full rule'`],
      ['locks', this.locks, 'changes', `BIGINT NOT NULL DEFAULT 0 COMMENT 'bumped by each release that wakes waiters: their watches sleep on it'`],
      ['waiters', this.waiters, 'watch_id', `BIGINT UNSIGNED NULL COMMENT 'CONNECTION_ID() of its wake-up watch (a release ends its sleep)'`],
    ];
    const present = await conn.query<Array<{ t: string; c: string }>>(
      `SELECT TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?)`,
      [`${this.o.prefix}locks`, `${this.o.prefix}waiters`],
    );
    const has = new Set(present.map((r) => `${String(r.t)}.${String(r.c)}`));
    for (const [table, quoted, column, definition] of columns) {
      if (has.has(`${this.o.prefix}${table}.${column}`)) continue;
      await conn.query(`ALTER TABLE ${quoted} ADD COLUMN ${column} ${definition}`).catch((e: MysqlError) => {
        if (e.errno !== ER_DUP_FIELDNAME) throw e;
      });
    }
  }

  /** Close every connection (bounded). */
  protected async closeConnections(): Promise<void> {
    this.closed = true;
    this.spares.length = 0;
    for (let i = 0; i < this.homes.length; i++) this.homes[i] = undefined;
    await Promise.all([...this.open].map((c) => c.close()));
    this.open.clear();
  }

  protected closedError(): ClosedError {
    return new ClosedError(`MySQL lock driver for ${this.o.display}`);
  }

  /** Monotonic now (one place, for tests that read the code). */
  protected now(): number {
    return monotonicNow();
  }
}

/** A read that finds no locks where the tables are missing (`create: false`). */
export async function orNone<T>(read: Promise<T>, none: T): Promise<T> {
  try {
    return await read;
  } catch (e) {
    if ((e as MysqlError).errno === ER_NO_SUCH_TABLE) return none;
    throw e;
  }
}
