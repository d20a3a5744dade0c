import { InvalidArgumentError, StaleTokenError } from '../../errors.js';
import { fenceTokenArg } from '../fenced-token.js';

/** What {@link FencedMysqlTable} needs: a mysql2 promise Pool, Connection or PoolConnection. */
export interface MysqlQueryable {
  /** Run one parameterized statement (a `mysql2/promise` Pool or Connection has it). */
  query(sql: string, values?: unknown): Promise<[unknown, unknown]>;
}

/** Where the protected row lives. */
export interface FencedRowOptions {
  /** The table (plain identifier: letters, digits, `_`, `$`). */
  table: string;
  /** Column values that identify the row, e.g. `{ sku: 'A-42' }`. */
  where: Readonly<Record<string, string | number | bigint>>;
  /** The BIGINT column that keeps the highest token accepted so far. Default `fence`. */
  fenceColumn?: string;
}

const IDENT = /^[A-Za-z0-9_$]{1,64}$/;

function ident(name: string, what: string): string {
  if (!IDENT.test(name)) throw new InvalidArgumentError(`${what} must be a plain MySQL identifier, got ${JSON.stringify(name)}.`);
  return `\`${name}\``;
}

/**
 * Fencing in practice for a row in MySQL/MariaDB: the row's fence column holds the highest fencing
 * token that has read or written it, and both steps of a read-modify-write are fenced:
 * - {@link FencedMysqlTable.read}`(token)` raises the fence to `token` (`UPDATE ... SET fence = ?
 *   WHERE ... AND fence < ?`), then reads the row, and throws {@link StaleTokenError} if a newer
 *   token has read or written it (read-and-advance);
 * - {@link FencedMysqlTable.write}`(token, fields)` is ONE conditional statement:
 *   `UPDATE stock SET count = ?, fence = ? WHERE sku = ? AND fence <= ?` (0 rows: stale).
 *
 * Why the read is fenced too: a holder paused while it holds the lock can come back after its lease
 * is gone and write what it computed before the pause. If the next holder has only read by then,
 * the fence is still at the old token and the stale write is accepted; the next holder then writes
 * the same value again, and one update is lost although every write was fenced. Once the next
 * holder's read has raised the fence, the stale write is refused. The raise and the read are two
 * statements, and that is enough: once the fence is at `token` no lower token can write, and a
 * higher one that slips in between makes the read refuse. (`fence <= ?` lets one holder write
 * several times with its token.) Pass your own pool or transaction's connection, so the fenced
 * statements join your transaction.
 *
 * @example
 * ```ts
 * // CREATE TABLE stock (sku VARCHAR(32) PRIMARY KEY, count INT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)
 * const row = new FencedMysqlTable(pool, { table: 'stock', where: { sku: 'A-42' } });
 * await locks.using('stock:A-42', async (lease) => {
 *   const { count } = await row.read(lease.token);               // raises the fence to lease.token
 *   await row.write(lease.token, { count: Number(count) - 1 }); // StaleTokenError if a newer holder read or wrote
 * });
 * ```
 */
export class FencedMysqlTable {
  private readonly table: string;
  private readonly fence: string;
  private readonly whereSql: string;
  private readonly whereValues: unknown[];

  constructor(
    private readonly db: MysqlQueryable,
    private readonly options: FencedRowOptions,
  ) {
    this.table = ident(options.table, 'table');
    this.fence = ident(options.fenceColumn ?? 'fence', 'fenceColumn');
    const cols = Object.keys(options.where);
    if (cols.length === 0) throw new InvalidArgumentError('where must name at least one column.');
    this.whereSql = cols.map((c) => `${ident(c, 'where column')} = ?`).join(' AND ');
    this.whereValues = cols.map((c) => String(options.where[c]));
  }

  /** Write `fields` with `token`; throws {@link StaleTokenError} if a higher token has read or written. */
  async write(token: bigint, fields: Readonly<Record<string, string | number | bigint | null>>): Promise<void> {
    const names = Object.keys(fields).filter((f) => f !== (this.options.fenceColumn ?? 'fence'));
    const set = [...names.map((f) => `${ident(f, 'column')} = ?`), `${this.fence} = CAST(? AS SIGNED)`].join(', ');
    const values = names.map((f) => {
      const v = fields[f];
      return typeof v === 'bigint' ? v.toString() : v;
    });
    const t = fenceTokenArg('FencedMysqlTable', 'write', token, 'peek()');
    const [result] = await this.db.query(
      `UPDATE ${this.table} SET ${set} WHERE ${this.whereSql} AND ${this.fence} <= CAST(? AS SIGNED)`,
      [...values, t, ...this.whereValues, t],
    );
    if ((result as { affectedRows?: number }).affectedRows === 0) {
      const highest = await this.highest();
      throw new StaleTokenError(this.describe(), token, highest);
    }
  }

  /**
   * The row (every column, including the fence), read with `token` (the lease's `lease.token`):
   * the fence is raised to `token` first, so no write with a lower token is accepted after this
   * read. Throws {@link StaleTokenError} (`operation: 'read'`) if a higher token has already read
   * or written the row (the lock was lost: re-acquire), and {@link InvalidArgumentError} when the
   * row does not exist.
   */
  async read(token: bigint): Promise<Record<string, unknown>> {
    const t = fenceTokenArg('FencedMysqlTable', 'read', token, 'peek()');
    await this.db.query(`UPDATE ${this.table} SET ${this.fence} = CAST(? AS SIGNED) WHERE ${this.whereSql} AND ${this.fence} < CAST(? AS SIGNED)`, [
      t,
      ...this.whereValues,
      t,
    ]);
    const [rows] = await this.db.query(`SELECT *, CAST(${this.fence} AS CHAR) AS dlock_fence_text FROM ${this.table} WHERE ${this.whereSql}`, this.whereValues);
    const row = (rows as Array<Record<string, unknown>>)[0];
    if (!row) throw this.missing();
    const fence = BigInt(String(row.dlock_fence_text));
    delete row.dlock_fence_text;
    if (fence > token) throw new StaleTokenError(this.describe(), token, fence, 'read');
    return row;
  }

  /**
   * The row (every column, including the fence), read WITHOUT a token: the fence does not move.
   * For observers that never write (dashboards, audits, tests). Never compute a write from it: a
   * stale holder could then slip its write in between (see the class comment); use {@link read}.
   * Throws {@link InvalidArgumentError} when the row does not exist.
   */
  async peek(): Promise<Record<string, unknown>> {
    const [rows] = await this.db.query(`SELECT * FROM ${this.table} WHERE ${this.whereSql}`, this.whereValues);
    const row = (rows as Array<Record<string, unknown>>)[0];
    if (!row) throw this.missing();
    return row;
  }

  /** The highest token that has read or written the row so far. */
  async highest(): Promise<bigint> {
    const [rows] = await this.db.query(`SELECT CAST(${this.fence} AS CHAR) AS f FROM ${this.table} WHERE ${this.whereSql}`, this.whereValues);
    const row = (rows as Array<{ f: string }>)[0];
    if (!row) throw this.missing();
    return BigInt(row.f);
  }

  private missing(): InvalidArgumentError {
    return new InvalidArgumentError(`No row in ${this.options.table} where ${this.whereSql} (${this.whereValues.join(', ')}): insert it first.`);
  }

  private describe(): string {
    return `${this.options.table} (${this.whereValues.join(', ')})`;
  }
}

