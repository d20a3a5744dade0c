/**
 * The tables both PostgreSQL modes use, and the SQL shared by them (marks, id ranges).
 *
 * - `<prefix>tokens`: ONE sequence for every fencing token (both modes). `nextval` never goes
 *   back and survives deleted rows, so tokens strictly increase per key (and across keys).
 * - `<prefix>locks` (lease-table mode): a row per held key: owner, token, expiry by the server's
 *   clock; deleted on release when nobody waits, else handed to the first live waiter.
 * - `<prefix>waiters` (lease-table mode): the queue of waiters per key, served in `seq` order
 *   (an identity column); each entry keeps the waiter's TTL (for a handoff) and an expiry of its
 *   own, refreshed by each of its tries, so that the entry of a waiter that died goes.
 *   `mode`/`permits` are unused (room for shared admission).
 * - `<prefix>acquire(...)`, `<prefix>release(...)` (lease-table mode): a try and a release, each
 *   one function call (PL/pgSQL caches its plans per connection: the statements are planned once,
 *   not at every call), so a transaction pooler needs no prepared statements.
 * - `<prefix>session_locks` (session mode): the key registry: key text -> a unique `id`; the
 *   advisory lock of a key is `advisoryBase + id`, so two different keys can never share one
 *   (no hashing, no collisions). The row also records the current holder (owner, token, backend
 *   pid, lease expiry) for `inspect`; rows are never deleted (the id must stay stable).
 * - `<prefix>marks`, `<prefix>sequences`: durable high-water marks and id counters.
 */
import { IdsExhaustedError, InvalidArgumentError } from '../../errors.js';
import { int8 } from './connection.js';

/** What runs one statement: a pg Client, a Pool, or a wrapper. */
export type Run = (text: string, values?: readonly unknown[]) => Promise<Array<Record<string, unknown>>>;

/** Quoted names of every object dlock creates, for one prefix. */
export interface Names {
  readonly prefix: string;
  readonly tokens: string;
  /** `nextval(...)` argument: the sequence name as a quoted literal. */
  readonly tokensRegclass: string;
  readonly locks: string;
  /** The waiters' queue of the lease-table mode. */
  readonly waiters: string;
  readonly sessionLocks: string;
  readonly marks: string;
  readonly sequences: string;
  /** LISTEN/NOTIFY channel of releases (lease-table mode), quoted. */
  readonly channel: string;
  /** The channel name as pg_notify() takes it (unquoted). */
  readonly channelName: string;
  /** Lease-table mode's functions (one call per try / release: plans cached per connection), quoted. */
  readonly acquireFn: string;
  readonly releaseFn: string;
  /** LISTEN/NOTIFY channel of direct handoffs (lease-table mode), quoted. */
  readonly grantChannel: string;
  /** The handoff channel's name as pg_notify() takes it. */
  readonly grantChannelName: string;
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
    waiters: q('waiters'),
    acquireFn: q('acquire'),
    releaseFn: q('release'),
    sessionLocks: q('session_locks'),
    marks: q('marks'),
    sequences: q('sequences'),
    channel: q('release'),
    channelName: `${prefix}release`,
    grantChannel: q('grant'),
    grantChannelName: `${prefix}grant`,
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
CREATE TABLE IF NOT EXISTS ${n.waiters} (
  key        text NOT NULL,
  owner      text NOT NULL,
  seq        bigint GENERATED ALWAYS AS IDENTITY,
  ttl_ms     integer NOT NULL,
  expires_at timestamptz NOT NULL,
  mode       text,
  permits    integer,
  PRIMARY KEY (key, owner)
);
CREATE INDEX IF NOT EXISTS "${n.prefix}waiters_queue" ON ${n.waiters} (key, seq);
-- A try (lease-table mode). The key's row is locked first (a placeholder when absent), so the
-- tries, releases and handoffs of a key run one at a time, and each later statement reads the
-- state as committed then. Ours already (handed to us, or a retried request): confirm, extend.
-- Busy: with p_queue, enqueue us or refresh our entry (the holder's expiry + 2 s: our next try
-- comes within the holder's TTL). Free or expired: to the first live waiter if one queues
-- (FIFO, no barging; NOTIFY p_grant tells it), else to us.
CREATE OR REPLACE FUNCTION ${n.acquireFn}(p_key text, p_owner text, p_ttl integer, p_queue boolean, p_grant text, p_payload text,
                                          OUT token bigint, OUT remaining_ms bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  cur record;
  h record;
  queued boolean;
  t bigint;
BEGIN
  SELECT l.owner, l.token, l.expires_at INTO cur FROM ${n.locks} AS l WHERE l.key = p_key FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO ${n.locks} (key, owner, token, expires_at) VALUES (p_key, '', 0, '-infinity') ON CONFLICT (key) DO NOTHING;
    SELECT l.owner, l.token, l.expires_at INTO cur FROM ${n.locks} AS l WHERE l.key = p_key FOR UPDATE;
  END IF;
  IF cur.owner = p_owner THEN
    UPDATE ${n.locks} SET expires_at = clock_timestamp() + p_ttl * interval '1 millisecond' WHERE key = p_key;
    DELETE FROM ${n.waiters} WHERE key = p_key AND owner = p_owner;
    token := cur.token;
    RETURN;
  END IF;
  IF cur.expires_at > clock_timestamp() THEN
    remaining_ms := floor(extract(epoch FROM cur.expires_at - clock_timestamp()) * 1000);
  ELSE
    SELECT w.owner, w.ttl_ms INTO h FROM ${n.waiters} AS w
     WHERE w.key = p_key AND w.expires_at > clock_timestamp() ORDER BY w.seq LIMIT 1 FOR UPDATE;
    queued := FOUND;
    t := nextval(${n.tokensRegclass});
    IF queued AND h.owner <> p_owner THEN
      UPDATE ${n.locks} SET owner = h.owner, token = t, expires_at = clock_timestamp() + h.ttl_ms * interval '1 millisecond'
       WHERE key = p_key;
      DELETE FROM ${n.waiters} WHERE key = p_key AND owner = h.owner;
      PERFORM pg_notify(p_grant, json_build_array(t::text, h.owner, p_payload)::text);
      remaining_ms := h.ttl_ms;
    ELSE
      UPDATE ${n.locks} SET owner = p_owner, token = t, expires_at = clock_timestamp() + p_ttl * interval '1 millisecond'
       WHERE key = p_key;
      DELETE FROM ${n.waiters} WHERE key = p_key AND owner = p_owner;
      token := t;
      RETURN;
    END IF;
  END IF;
  IF p_queue THEN
    INSERT INTO ${n.waiters} (key, owner, ttl_ms, expires_at)
    VALUES (p_key, p_owner, p_ttl, clock_timestamp() + (greatest(remaining_ms, 0) + 2000) * interval '1 millisecond')
    ON CONFLICT (key, owner) DO UPDATE SET ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at;
  END IF;
END
$fn$;
-- A release (lease-table mode): if p_owner holds the row (even expired: tidy), hand it to the
-- first live waiter with a fresh token and that waiter's TTL and NOTIFY p_grant (token, owner,
-- key); nobody queues: delete the row and NOTIFY p_release (the key). Sweeps expired entries.
-- Answers whether the hold was still live.
CREATE OR REPLACE FUNCTION ${n.releaseFn}(p_key text, p_owner text, p_grant text, p_payload text, p_release text,
                                          OUT live boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
  held timestamptz;
  h record;
  t bigint;
BEGIN
  SELECT l.expires_at INTO held FROM ${n.locks} AS l WHERE l.key = p_key AND l.owner = p_owner FOR UPDATE;
  IF NOT FOUND THEN
    live := false;
    RETURN;
  END IF;
  live := held > clock_timestamp();
  DELETE FROM ${n.waiters} WHERE key = p_key AND expires_at <= clock_timestamp();
  SELECT w.owner, w.ttl_ms INTO h FROM ${n.waiters} AS w
   WHERE w.key = p_key AND w.owner <> p_owner ORDER BY w.seq LIMIT 1 FOR UPDATE;
  IF FOUND THEN
    t := nextval(${n.tokensRegclass});
    UPDATE ${n.locks} SET owner = h.owner, token = t, expires_at = clock_timestamp() + h.ttl_ms * interval '1 millisecond'
     WHERE key = p_key;
    DELETE FROM ${n.waiters} WHERE key = p_key AND owner = h.owner;
    PERFORM pg_notify(p_grant, json_build_array(t::text, h.owner, p_payload)::text);
  ELSE
    DELETE FROM ${n.locks} WHERE key = p_key;
    PERFORM pg_notify(p_release, p_payload);
  END IF;
END
$fn$;
CREATE TABLE IF NOT EXISTS ${n.sessionLocks} (
  key        text PRIMARY KEY,
  id         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  owner      text,
  token      bigint,
  holder_pid integer,
  expires_at timestamptz
);
CREATE TABLE IF NOT EXISTS ${n.marks} (key text PRIMARY KEY, mark bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ${n.sequences} (name text PRIMARY KEY, seq bigint NOT NULL);`;
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
