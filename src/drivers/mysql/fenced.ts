import { InvalidArgumentError, StaleTokenError } from '../../errors.js';

/** What {@link FencedMysqlTable} needs: a mysql2 promise Pool, Connection or PoolConnection. */
export interface MysqlQueryable {
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
 * Fencing in practice for a row in MySQL/MariaDB: a write is accepted only with a fencing token at
 * least as high as the highest the row has already accepted, in ONE conditional statement:
 *
 * ```sql
 * UPDATE stock SET count = ?, fence = ? WHERE sku = ? AND fence <= ?   -- 0 rows: stale
 * ```
 *
 * A holder that was paused past its TTL, and whose lock went to someone else meanwhile, gets
 * {@link StaleTokenError} instead of overwriting the newer holder's data. (`fence <= ?` lets one
 * holder write several times with its token; `fence < ?` would make each token write once.)
 * Pass your own pool or transaction's connection, so the fenced write joins your transaction.
 *
 * @example
 * ```ts
 * // CREATE TABLE stock (sku VARCHAR(32) PRIMARY KEY, count INT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)
 * const row = new FencedMysqlTable(pool, { table: 'stock', where: { sku: 'A-42' } });
 * await locks.using('stock:A-42', async (lease) => {
 *   const { count } = await row.read();
 *   await row.write(lease.token, { count: Number(count) - 1 }); // throws if a newer holder wrote
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

  /** Write `fields` with `token`; throws {@link StaleTokenError} if a higher token has written. */
  async write(token: bigint, fields: Readonly<Record<string, string | number | bigint | null>>): Promise<void> {
    const names = Object.keys(fields).filter((f) => f !== (this.options.fenceColumn ?? 'fence'));
    const set = [...names.map((f) => `${ident(f, 'column')} = ?`), `${this.fence} = CAST(? AS SIGNED)`].join(', ');
    const values = names.map((f) => {
      const v = fields[f];
      return typeof v === 'bigint' ? v.toString() : v;
    });
    const [result] = await this.db.query(
      `UPDATE ${this.table} SET ${set} WHERE ${this.whereSql} AND ${this.fence} <= CAST(? AS SIGNED)`,
      [...values, token.toString(), ...this.whereValues, token.toString()],
    );
    if ((result as { affectedRows?: number }).affectedRows === 0) {
      const highest = await this.highest();
      throw new StaleTokenError(`${this.options.table} (${this.whereValues.join(', ')})`, token, highest);
    }
  }

  /** The row (every column, including the fence), or throws when it does not exist. */
  async read(): Promise<Record<string, unknown>> {
    const [rows] = await this.db.query(`SELECT * FROM ${this.table} WHERE ${this.whereSql}`, this.whereValues);
    const row = (rows as Array<Record<string, unknown>>)[0];
    if (!row) throw new InvalidArgumentError(`No row in ${this.options.table} where ${this.whereSql} (${this.whereValues.join(', ')}): insert it first.`);
    return row;
  }

  /** The highest token accepted so far. */
  async highest(): Promise<bigint> {
    const [rows] = await this.db.query(`SELECT CAST(${this.fence} AS CHAR) AS f FROM ${this.table} WHERE ${this.whereSql}`, this.whereValues);
    const row = (rows as Array<{ f: string }>)[0];
    if (!row) throw new InvalidArgumentError(`No row in ${this.options.table} where ${this.whereSql} (${this.whereValues.join(', ')}): insert it first.`);
    return BigInt(row.f);
  }
}
