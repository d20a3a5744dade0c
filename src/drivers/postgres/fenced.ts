import { pgModule } from './connection.js';
import { InvalidArgumentError, StaleTokenError } from '../../errors.js';
import { fenceTokenArg } from '../fenced-token.js';

/** Anything that runs a parameterised statement: a pg `Client`, `Pool` or `PoolClient`. */
export interface PgQueryable {
  /** Run one parameterized statement (a `pg` Pool, Client or PoolClient has it). */
  query(text: string, values?: unknown[]): Promise<{
    /** The rows returned. */
    rows: unknown[];
  }>;
}

/** Which row(s) a fenced statement touches, see {@link fencedRead} and {@link fencedUpdate}. */
export interface FencedRow {
  /** The protected table (quoted as an identifier; use `schema.table` as `['schema', 'table']`). */
  readonly table: string | readonly [string, string];
  /** Equality conditions that pick the row(s): `{ id: 42 }`. */
  readonly where: Readonly<Record<string, unknown>>;
  /** The lease's fencing token (`lease.token`). */
  readonly token: bigint;
  /** The bigint column that keeps the highest token that has read or written so far. Default `fence`. */
  readonly fenceColumn?: string;
}

/** One fenced UPDATE, see {@link fencedUpdate}. */
export interface FencedUpdate extends FencedRow {
  /**
   * Columns to write. A function of the current row (the default way: a read-modify-write) reads
   * the row with {@link fencedRead} first, so the read is fenced too; `where` must then pick one
   * row. An object writes those values as they are: use it for blind writes, or when you have
   * read the row yourself with {@link fencedRead} and the same token.
   */
  readonly set: Readonly<Record<string, unknown>> | ((row: Record<string, unknown>) => Readonly<Record<string, unknown>>);
}

/**
 * Fencing in practice for data kept in PostgreSQL, read side: read the row(s) picked by `where`
 * with the lease's token, raising their fence column to it in the same statement
 * (read-and-advance), so that no write with a lower token is accepted after this read:
 *
 * ```sql
 * UPDATE stock SET fence = greatest(fence, $token) WHERE id = $2 RETURNING *  -- refused if fence > $token
 * ```
 *
 * Throws {@link StaleTokenError} (`operation: 'read'`) when a higher token has already read or
 * written one of the rows (the lock was lost: re-acquire); the fence is never lowered.
 * Resolves the rows, fence column included (none when no row matches). The read takes the rows'
 * lock and writes them, like any UPDATE: it is meant for the holder of a lock, not for observers
 * (they use a plain SELECT, which never computes a write).
 *
 * Why reading alone is not enough: a holder paused while it holds the lock can come back after its
 * lease is gone and write what it computed before the pause. If the next holder has only read (a
 * plain SELECT) by then, the fence is still at the old token and the stale write is accepted; the
 * next holder then writes the same value again, and one update is lost although every write was
 * fenced. Once the next holder's read has raised the fence, the stale write is refused.
 */
export async function fencedRead(db: PgQueryable, r: FencedRow): Promise<Array<Record<string, unknown>>> {
  const { table, fence, values, where } = statement(r, 'read');
  // One statement, so it sees the rows' newest versions: greatest() never lowers a fence.
  const { rows } = await db.query(
    `UPDATE ${table} SET ${fence} = greatest(${fence}, $1::bigint) WHERE ${where} RETURNING *, ${fence}::text AS dlock_fence_text`,
    values,
  );
  let highest = r.token;
  const out = (rows as Array<Record<string, unknown>>).map(({ dlock_fence_text, ...row }) => {
    const f = BigInt(String(dlock_fence_text));
    if (f > highest) highest = f;
    return row;
  });
  if (highest > r.token) throw new StaleTokenError(name(r.table), r.token, highest, 'read');
  return out;
}

/**
 * Fencing in practice for data kept in PostgreSQL, write side: an UPDATE that only applies while
 * the row's fence column is not above the lease's token, and records the token, in one statement:
 *
 * ```sql
 * UPDATE stock SET count = $1, fence = $token WHERE id = $2 AND fence <= $token
 * ```
 *
 * By default (`set` is a function of the row) the row is first read with {@link fencedRead}, so
 * the whole read-modify-write is fenced: once a newer holder has read the row, a holder paused
 * past its lease gets {@link StaleTokenError} for its read or its write instead of overwriting or
 * repeating the newer holder's update. `<=` lets one holder write several times with its token;
 * any newer holder's token is strictly higher. Resolves the number of rows written (0 when no row
 * matches `where`).
 *
 * @example
 * ```ts
 * // CREATE TABLE stock (id int PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0);
 * await locks.using('stock:42', async (lease) => {
 *   await fencedUpdate(pool, { table: 'stock', where: { id: 42 }, token: lease.token, set: (row) => ({ count: Number(row.count) - 1 }) });
 * });
 * ```
 */
export async function fencedUpdate(db: PgQueryable, u: FencedUpdate): Promise<number> {
  let set = u.set;
  if (typeof set === 'function') {
    const rows = await fencedRead(db, u);
    if (rows.length === 0) return 0;
    if (rows.length > 1) throw new InvalidArgumentError(`fencedUpdate with a function \`set\` needs a \`where\` that picks one row of ${name(u.table)}; it picked ${rows.length}.`);
    set = set(rows[0]!);
  }
  const { table, fence, values, where, param } = statement(u, 'write');
  const sets = Object.entries(set).map(([c, v]) => `${pgModule().escapeIdentifier(c)} = ${param(v)}`);
  if (sets.length === 0) throw new InvalidArgumentError('fencedUpdate needs at least one column in `set`.');
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
    throw new StaleTokenError(name(u.table), u.token, BigInt(row.highest));
  }
  return written;
}

function name(table: FencedRow['table']): string {
  return typeof table === 'string' ? table : table.join('.');
}

/** The quoted names and the `where` clause of a fenced statement; `$1` is the token. */
function statement(r: FencedRow, op: 'read' | 'write') {
  const table = typeof r.table === 'string' ? pgModule().escapeIdentifier(r.table) : r.table.map((p) => pgModule().escapeIdentifier(p)).join('.');
  const fence = pgModule().escapeIdentifier(r.fenceColumn ?? 'fence');
  const values: unknown[] = [fenceTokenArg(op === 'read' ? 'fencedRead' : 'fencedUpdate', op, r.token, 'a plain SELECT')];
  const param = (v: unknown): string => {
    values.push(typeof v === 'bigint' ? v.toString() : v);
    return `$${values.length}`;
  };
  const conds = Object.entries(r.where).map(([c, v]) => `${pgModule().escapeIdentifier(c)} = ${param(v)}`);
  if (conds.length === 0) throw new InvalidArgumentError(`${op === 'read' ? 'fencedRead' : 'fencedUpdate'} needs at least one column in \`where\`.`);
  return { table, fence, values, param, where: conds.join(' AND ') };
}
