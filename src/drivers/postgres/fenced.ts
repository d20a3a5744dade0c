import { pgModule } from './connection.js';
import { InvalidArgumentError, StaleTokenError } from '../../errors.js';

/** Anything that runs a parameterised statement: a pg `Client`, `Pool` or `PoolClient`. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** One fenced UPDATE, see {@link fencedUpdate}. */
export interface FencedUpdate {
  /** The protected table (quoted as an identifier; use `schema.table` as `['schema', 'table']`). */
  readonly table: string | readonly [string, string];
  /** Equality conditions that pick the row(s): `{ id: 42 }`. */
  readonly where: Readonly<Record<string, unknown>>;
  /** Columns to write. */
  readonly set: Readonly<Record<string, unknown>>;
  /** The lease's fencing token (`lease.token`). */
  readonly token: bigint;
  /** The bigint column that keeps the highest token written so far. Default `fence`. */
  readonly fenceColumn?: string;
}

/**
 * Fencing in practice for data kept in PostgreSQL: an UPDATE that only applies while the row's
 * fence column is not above the lease's token, and records the token, in one statement:
 *
 * ```sql
 * UPDATE stock SET count = $1, fence = $token WHERE id = $2 AND fence <= $token
 * ```
 *
 * A holder that was paused past its TTL (or whose session was terminated), and whose lock went to
 * someone else who has written since, gets {@link StaleTokenError} instead of overwriting newer
 * data. `<=` lets one holder write several times with its token; any newer holder's token is
 * strictly higher, so a stale write always fails. Resolves the number of rows written (0 when no
 * row matches `where`).
 *
 * @example
 * ```ts
 * // CREATE TABLE stock (id int PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0);
 * await locks.using('stock:42', async (lease) => {
 *   const { rows } = await pool.query('SELECT count FROM stock WHERE id = 42');
 *   await fencedUpdate(pool, { table: 'stock', where: { id: 42 }, set: { count: rows[0].count - 1 }, token: lease.token });
 * });
 * ```
 */
export async function fencedUpdate(db: PgQueryable, u: FencedUpdate): Promise<number> {
  const table = typeof u.table === 'string' ? pgModule().escapeIdentifier(u.table) : u.table.map((p) => pgModule().escapeIdentifier(p)).join('.');
  const fence = pgModule().escapeIdentifier(u.fenceColumn ?? 'fence');
  const values: unknown[] = [u.token.toString()];
  const param = (v: unknown): string => {
    values.push(typeof v === 'bigint' ? v.toString() : v);
    return `$${values.length}`;
  };
  const sets = Object.entries(u.set).map(([c, v]) => `${pgModule().escapeIdentifier(c)} = ${param(v)}`);
  const conds = Object.entries(u.where).map(([c, v]) => `${pgModule().escapeIdentifier(c)} = ${param(v)}`);
  if (sets.length === 0 || conds.length === 0) throw new InvalidArgumentError('fencedUpdate needs at least one column in `set` and one in `where`.');
  const where = conds.join(' AND ');
  // One statement: the write, and (when refused) the highest token the rows have seen.
  const { rows } = await db.query(
    `WITH written AS (
       UPDATE ${table} SET ${sets.join(', ')}, ${fence} = $1::bigint
       WHERE ${where} AND ${fence} <= $1::bigint RETURNING 1
     )
     SELECT (SELECT count(*) FROM written)::int AS written,
            (SELECT max(${fence}) FROM ${table} WHERE ${where})::text AS highest`,
    values,
  );
  const row = rows[0] as { written: number; highest: string | null } | undefined;
  const written = row?.written ?? 0;
  if (written === 0 && row?.highest !== null && row?.highest !== undefined && BigInt(row.highest) > u.token) {
    throw new StaleTokenError(typeof u.table === 'string' ? u.table : u.table.join('.'), u.token, BigInt(row.highest));
  }
  return written;
}
