/**
 * The tables both PostgreSQL modes use, and the SQL shared by them (marks, id ranges).
 *
 * - `<prefix>tokens`: ONE sequence for every fencing token (both modes). `nextval` never goes
 *   back and survives deleted rows, so tokens strictly increase per key (and across keys).
 * - `<prefix>locks` (lease-table mode): a row per held key: owner, token, expiry by the server's
 *   clock; deleted once nothing holds or waits. With `<prefix>holders` (shared and permit
 *   holders), `<prefix>waiters` (the queue) and the PL/pgSQL steps over them: ./table-sql.ts.
 * - `<prefix>session_holders` (session mode): shared holders (owner, token, backend pid), valid
 *   while `pg_locks` shows that backend holding the key's advisory lock shared.
 * - `<prefix>session_locks` (session mode): the key registry: key text -> a unique `id`; the
 *   advisory lock of a key is `advisoryBase + id`, so two different keys can never share one
 *   (no hashing, no collisions). The row also records the current holder (owner, token, backend
 *   pid, lease expiry) for `inspect`; rows are never deleted (the id must stay stable).
 * - `<prefix>marks`, `<prefix>sequences`: durable high-water marks and id counters.
 */
import { IdsExhaustedError, InvalidArgumentError } from '../../errors.js';
import type { KeyPage } from '../driver.js';
import { int8, sqlState } from './connection.js';
import { admissionSql } from './table-sql.js';

/** What runs one statement: a pg Client, a Pool, or a wrapper. */
export type Run = (text: string, values?: readonly unknown[]) => Promise<Array<Record<string, unknown>>>;

/** Quoted names of every object dlock creates, for one prefix. */
export interface Names {
  readonly prefix: string;
  readonly tokens: string;
  /** `nextval(...)` argument: the sequence name as a quoted literal. */
  readonly tokensRegclass: string;
  readonly locks: string;
  /** Lease-table mode: shared and permit holders (see table-sql.ts). */
  readonly holders: string;
  /** Lease-table mode: the queue of waiters (see table-sql.ts). */
  readonly waiters: string;
  /** Index of the queue in arrival order. */
  readonly waitersOrder: string;
  /** Lease-table mode's admission functions (see table-sql.ts). */
  readonly fn: Readonly<Record<'admits' | 'grant' | 'handover' | 'tidy' | 'lockRow' | 'acquire' | 'release' | 'evict' | 'extend', string>>;
  readonly sessionLocks: string;
  /** Session mode: shared holders, one row per holder (see session.ts). */
  readonly sessionHolders: string;
  readonly marks: string;
  readonly sequences: string;
  /** LISTEN/NOTIFY channel of releases (lease-table mode), quoted. */
  readonly channel: string;
  /** The channel name as pg_notify() takes it (unquoted). */
  readonly channelName: string;
  /** LISTEN/NOTIFY channel of direct handoffs (lease-table mode): payload `<owner> <token>`, quoted. */
  readonly handoffChannel: string;
  /** The handoff channel name as pg_notify() takes it (unquoted). */
  readonly handoffChannelName: string;
}

export const DEFAULT_PREFIX = 'dlock_';

export function namesFor(prefix: string = DEFAULT_PREFIX): Names {
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_]{0,40}$/.test(prefix)) {
    throw new InvalidArgumentError(`tablePrefix must be at most 40 letters, digits or underscores, got ${JSON.stringify(prefix)}.`);
  }
  const q = (n: string): string => `"${prefix}${n}"`;
  return {
    prefix,
    tokens: q('tokens'),
    tokensRegclass: `'${q('tokens')}'`,
    locks: q('locks'),
    holders: q('holders'),
    waiters: q('waiters'),
    waitersOrder: q('waiters_order'),
    fn: {
      admits: q('admits'),
      grant: q('grant'),
      handover: q('handover'),
      tidy: q('tidy'),
      lockRow: q('lock_row'),
      acquire: q('acquire'),
      release: q('release_hold'),
      evict: q('evict'),
      extend: q('extend'),
    },
    sessionLocks: q('session_locks'),
    sessionHolders: q('session_holders'),
    marks: q('marks'),
    sequences: q('sequences'),
    channel: q('release'),
    channelName: `${prefix}release`,
    handoffChannel: q('handoff'),
    handoffChannelName: `${prefix}handoff`,
  };
}

/**
 * The DDL, idempotent. It runs as one multi-statement query (one implicit transaction) under a
 * transaction-level advisory lock, so drivers starting at once do not race on CREATE ... IF NOT
 * EXISTS (which is not safe against itself). The lock uses the two-int4 advisory key space
 * (objsubid 2), apart from the bigint keys of session locks.
 */
export function schemaSql(n: Names): string {
  return `
SELECT pg_advisory_xact_lock(1684827000, 1);
CREATE SEQUENCE IF NOT EXISTS ${n.tokens};
CREATE TABLE IF NOT EXISTS ${n.locks} (
  key        text PRIMARY KEY,
  owner      text NOT NULL,
  token      bigint NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ${n.sessionLocks} (
  key        text PRIMARY KEY,
  id         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  owner      text,
  token      bigint,
  holder_pid integer,
  expires_at timestamptz
);
CREATE TABLE IF NOT EXISTS ${n.sessionHolders} (
  id         bigint NOT NULL,
  owner      text NOT NULL,
  token      bigint NOT NULL,
  holder_pid integer NOT NULL,
  expires_at timestamptz,
  PRIMARY KEY (id, owner)
);
CREATE TABLE IF NOT EXISTS ${n.marks} (key text PRIMARY KEY, mark bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ${n.sequences} (name text PRIMARY KEY, seq bigint NOT NULL);
${admissionSql(n)}`;
}

const INT64_MAX = 2n ** 63n - 1n;

/** `readMark`, shared by both modes. */
export async function readMark(run: Run, n: Names, key: string): Promise<bigint> {
  const rows = await run(`SELECT mark FROM ${n.marks} WHERE key = $1`, [key]);
  return rows[0] ? int8(rows[0].mark) : 0n;
}

/**
 * `raiseMark`: `held` is a SQL query yielding one row while `$2` (the owner) holds `$1` (the key),
 * locking that row FOR SHARE so that no grant to someone else can commit in between.
 */
export async function raiseMark(run: Run, n: Names, held: string, key: string, owner: string, mark: bigint): Promise<boolean> {
  if (mark < 0n || mark > INT64_MAX) throw new InvalidArgumentError(`mark must be between 0 and 2^63 - 1, got ${mark}.`);
  const rows = await run(
    `INSERT INTO ${n.marks} AS m (key, mark)
       SELECT $1, $3::bigint FROM (${held}) AS h
     ON CONFLICT (key) DO UPDATE SET mark = greatest(m.mark, excluded.mark)
     RETURNING 1 AS ok`,
    [key, owner, mark.toString()],
  );
  return rows.length > 0;
}

/** `allocateRange`: one upsert that refuses to pass 2^63 - 1 (no row comes back then). */
export async function allocateRange(run: Run, n: Names, name: string, count: bigint): Promise<bigint> {
  if (count > INT64_MAX) throw new IdsExhaustedError(name, 'the PostgreSQL counter would pass 2^63 - 1');
  const rows = await run(
    `INSERT INTO ${n.sequences} AS s (name, seq) VALUES ($1, $2::bigint)
     ON CONFLICT (name) DO UPDATE SET seq = s.seq + excluded.seq
       WHERE s.seq <= 9223372036854775807 - excluded.seq
     RETURNING seq`,
    [name, count.toString()],
  );
  const row = rows[0];
  if (!row) throw new IdsExhaustedError(name, 'the PostgreSQL counter would pass 2^63 - 1');
  return int8(row.seq);
}

/**
 * Whether `e` is PostgreSQL's "relation does not exist" or "function does not exist" (dlock's
 * tables and table-mode functions not created: `createTables: false`).
 */
export function isMissingTable(e: unknown): boolean {
  const code = sqlState(e);
  return code === '42P01' || code === '42883';
}

/** A read that finds no locks where dlock's tables are missing (`createTables: false`). */
export async function orNone<T>(read: Promise<T>, none: T): Promise<T> {
  try {
    return await read;
  } catch (e) {
    if (isMissingTable(e)) return none;
    throw e;
  }
}

/**
 * One page of `list()`: `sql` selects `key` with `starts_with(key, $1)`, `key > $2` (null: from
 * the start), ordered by key, `LIMIT $3`; one row more than `limit` is asked to know whether a
 * page follows. Missing tables read as no keys.
 */
export async function listPage(run: Run, sql: string, prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
  const rows = await orNone(run(sql, [prefix, page.cursor ?? null, page.limit + 1]), []);
  const keys = rows.slice(0, page.limit).map((r) => String(r.key));
  return rows.length > page.limit ? { keys, cursor: keys[keys.length - 1]! } : { keys };
}

/** The fencing counter: the last token the sequence handed out (every later one is greater); 0n without it. */
export function fenceSql(n: Names): string {
  return `(SELECT last_value FROM ${n.tokens})`;
}
