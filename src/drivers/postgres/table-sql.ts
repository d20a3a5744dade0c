/**
 * Lease-table mode's admission (src/core/admission.ts, the same rule), as PL/pgSQL functions
 * that `schemaSql` creates: each lock step is ONE call, so one statement, one transaction, one
 * round trip, and any pooled connection (a transaction pooler too) can run it.
 *
 * Tables (see schema.ts):
 * - `<prefix>locks`: the key's row, the one every step of that key locks first (`FOR UPDATE`),
 *   so steps on one key run one after the other. `owner`/`token`/`expires_at` are the exclusive
 *   holder; `owner = ''` means none, and `expires_at` is then the latest shared holder's expiry (so
 *   a listing, and an older dlock that only knows this table, see the key held). `queued`: rows
 *   for this key may be in the two tables below; while it is false, an exclusive try is one
 *   upsert, exactly what it was before admission modes.
 * - `<prefix>holders`: shared and permit holders (owner, token, mode `s`/`p`, permits, limit, expiry).
 * - `<prefix>waiters`: the queue: waiters in arrival order (`seq`), with what they ask, when they
 *   queued (`since`, for the barging bound) and an expiry (refreshed by each of their tries).
 *
 * "Ahead" of a request are the holders, plus the waiters queued before it when it asks for
 * fairness, when the queue's head has waited longer than {@link BARGE_BOUND_MS}, or when a
 * writer heads the queue and the request would share (a queued writer stops new readers). A
 * release (or a cancel, an expiry found, a force-release) hands the key to the queue's heads in
 * order while the rule admits them, each with a fresh token, and NOTIFYs `<owner> <token>` on the
 * handoff channel: the waiter holds the lock one notification after the release. Tokens come
 * from the one sequence: strictly increasing per key across every mode.
 */
import { BARGE_BOUND_MS } from '../../core/admission.js';
import type { Names } from './schema.js';

/** The DDL of the admission functions and their tables (idempotent; run inside `schemaSql`). */
export function admissionSql(n: Names): string {
  const { locks, holders, waiters, tokensRegclass: seq, fn } = n;
  const ms = (v: string): string => `(${v}) * interval '1 millisecond'`;
  return `
ALTER TABLE ${locks} ADD COLUMN IF NOT EXISTS queued boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS ${holders} (
  key        text NOT NULL,
  owner      text NOT NULL,
  token      bigint NOT NULL,
  mode       text NOT NULL,
  permits    bigint NOT NULL,
  lim        bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (key, owner)
);
CREATE TABLE IF NOT EXISTS ${waiters} (
  key        text NOT NULL,
  owner      text NOT NULL,
  seq        bigint GENERATED ALWAYS AS IDENTITY,
  mode       text NOT NULL,
  permits    bigint NOT NULL,
  lim        bigint NOT NULL,
  fair       boolean NOT NULL,
  alongside  text NOT NULL,
  ttl_ms     integer NOT NULL,
  since      timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (key, owner)
);
CREATE INDEX IF NOT EXISTS ${n.waitersOrder} ON ${waiters} (key, seq);

-- The rule: ask (mode x|s|p, permits, limit, alongside) over the holders (x_owner: the exclusive
-- one or null, n: shared/permit holders, used: their permits) and the claims queued ahead (qx: an
-- exclusive one among them, qn: how many, qused: their permits).
CREATE OR REPLACE FUNCTION ${fn.admits}(mode text, permits bigint, lim bigint, alongside text,
  x_owner text, n integer, used bigint, qx boolean, qn integer, qused bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN alongside <> '' AND x_owner IS NOT DISTINCT FROM alongside THEN true
    WHEN mode = 'x' THEN x_owner IS NULL AND n = 0 AND qn = 0
    WHEN x_owner IS NOT NULL OR qx THEN false
    WHEN mode = 's' THEN true
    ELSE used + qused + permits <= lim
  END
$$;

-- Grant (key, owner) in its mode with a fresh token; drop its queue entry.
CREATE OR REPLACE FUNCTION ${fn.grant}(p_key text, p_owner text, p_mode text, p_permits bigint, p_lim bigint,
  p_ttl integer, p_now timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE t bigint := nextval(${seq});
BEGIN
  IF p_mode = 'x' THEN
    UPDATE ${locks} SET owner = p_owner, token = t, expires_at = p_now + ${ms('p_ttl')} WHERE key = p_key;
  ELSE
    INSERT INTO ${holders} (key, owner, token, mode, permits, lim, expires_at)
    VALUES (p_key, p_owner, t, p_mode, p_permits, p_lim, p_now + ${ms('p_ttl')})
    ON CONFLICT (key, owner) DO UPDATE SET token = excluded.token, mode = excluded.mode, permits = excluded.permits,
      lim = excluded.lim, expires_at = excluded.expires_at;
    UPDATE ${locks} SET queued = true WHERE key = p_key AND NOT queued;
  END IF;
  DELETE FROM ${waiters} WHERE key = p_key AND owner = p_owner;
  RETURN t;
END
$$;

-- Hand the key (its row locked by the caller) to the queue's heads while the rule admits them,
-- NOTIFYing each on p_channel ("<owner> <token>"), except p_me, whose token comes back in mine.
CREATE OR REPLACE FUNCTION ${fn.handover}(p_key text, p_me text, p_channel text, p_now timestamptz,
  INOUT x_owner text, INOUT n integer, INOUT used bigint, OUT mine bigint)
LANGUAGE plpgsql AS $$
DECLARE w record; t bigint;
BEGIN
  FOR w IN SELECT * FROM ${waiters} WHERE key = p_key ORDER BY seq LOOP
    EXIT WHEN NOT ${fn.admits}(w.mode, w.permits, w.lim, w.alongside, x_owner, n, used, false, 0, 0::bigint);
    t := ${fn.grant}(p_key, w.owner, w.mode, w.permits, w.lim, w.ttl_ms, p_now);
    IF w.mode = 'x' THEN x_owner := w.owner; ELSE n := n + 1; END IF;
    IF w.mode = 'p' THEN used := used + w.permits; END IF;
    IF w.owner = p_me THEN mine := t; ELSE PERFORM pg_notify(p_channel, w.owner || ' ' || t); END IF;
  END LOOP;
END
$$;

-- After a step that changed the key: drop the row when nothing holds or waits; else keep the
-- marker (no exclusive holder: the latest shared expiry) and the queued flag right.
CREATE OR REPLACE FUNCTION ${fn.tidy}(p_key text, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE latest timestamptz; waiting boolean;
BEGIN
  SELECT max(expires_at) INTO latest FROM ${holders} WHERE key = p_key;
  waiting := EXISTS (SELECT 1 FROM ${waiters} WHERE key = p_key);
  DELETE FROM ${locks} WHERE key = p_key AND (owner = '' OR expires_at <= p_now) AND latest IS NULL AND NOT waiting;
  IF NOT FOUND THEN
    UPDATE ${locks} SET queued = latest IS NOT NULL OR waiting,
      expires_at = CASE WHEN owner = '' THEN coalesce(latest, '-infinity') ELSE expires_at END
    WHERE key = p_key;
  END IF;
END
$$;

-- The key's row, created if missing, locked for this transaction.
CREATE OR REPLACE FUNCTION ${fn.lockRow}(p_key text) RETURNS ${locks}
LANGUAGE plpgsql AS $$
DECLARE l ${locks};
BEGIN
  LOOP
    SELECT * INTO l FROM ${locks} WHERE key = p_key FOR UPDATE;
    IF FOUND THEN RETURN l; END IF;
    INSERT INTO ${locks} (key, owner, token, expires_at) VALUES (p_key, '', 0, '-infinity') ON CONFLICT (key) DO NOTHING;
  END LOOP;
END
$$;

-- One try: granted (o_token) or busy (o_remaining: ms until the soonest holder's expiry, null
-- unknown). p_queue: when busy, queue p_owner (or refresh its entry, keeping its place).
CREATE OR REPLACE FUNCTION ${fn.acquire}(p_key text, p_owner text, p_ttl integer, p_mode text, p_permits bigint,
  p_lim bigint, p_fair boolean, p_alongside text, p_queue boolean, p_channel text,
  OUT o_token bigint, OUT o_remaining bigint)
LANGUAGE plpgsql AS $$
DECLARE
  now_ timestamptz := clock_timestamp();
  l ${locks};
  x_owner text; n integer; used bigint;
  head record; my_seq bigint;
  qx boolean := false; qn integer := 0; qused bigint := 0;
  soonest timestamptz;
BEGIN
  IF p_mode = 'x' AND p_alongside = '' THEN
    -- The mutex's path: one upsert while no shared holder, no waiter and no live holder. The
    -- token is drawn once the key is ours: a VALUES list is computed before the insert meets the
    -- key's row, and may wait there (a release in flight) while later grants come and go. So a
    -- fresh row is inserted with token 0 (never a sequence value) and given its token after.
    INSERT INTO ${locks} AS k (key, owner, token, expires_at) VALUES (p_key, p_owner, 0, now_ + ${ms('p_ttl')})
    ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = nextval(${seq}), expires_at = excluded.expires_at
      WHERE k.expires_at <= now_ AND NOT k.queued
    RETURNING k.token INTO o_token;
    IF o_token = 0 THEN
      UPDATE ${locks} SET token = nextval(${seq}) WHERE key = p_key RETURNING token INTO o_token;
    END IF;
    IF o_token IS NOT NULL THEN RETURN; END IF;
  END IF;
  l := ${fn.lockRow}(p_key);
  IF l.owner <> '' AND l.expires_at > now_ THEN x_owner := l.owner; END IF;
  -- Already ours (a handoff whose notification we have not seen yet): confirm and extend it.
  IF x_owner = p_owner THEN
    UPDATE ${locks} SET expires_at = now_ + ${ms('p_ttl')} WHERE key = p_key;
    DELETE FROM ${waiters} WHERE key = p_key AND owner = p_owner;
    o_token := l.token;
    RETURN;
  END IF;
  IF l.queued THEN
    UPDATE ${holders} SET expires_at = now_ + ${ms('p_ttl')} WHERE key = p_key AND owner = p_owner AND expires_at > now_
    RETURNING token INTO o_token;
    IF o_token IS NOT NULL THEN
      DELETE FROM ${waiters} WHERE key = p_key AND owner = p_owner;
      PERFORM ${fn.tidy}(p_key, now_);
      RETURN;
    END IF;
    DELETE FROM ${holders} WHERE key = p_key AND expires_at <= now_;
    DELETE FROM ${waiters} WHERE key = p_key AND expires_at <= now_;
  END IF;
  SELECT count(*)::integer, coalesce(sum(permits) FILTER (WHERE mode = 'p'), 0)::bigint INTO n, used
    FROM ${holders} WHERE key = p_key;
  -- What is free goes to the queue's heads first (a holder expired, or a release left room).
  SELECT h.x_owner, h.n, h.used, h.mine INTO x_owner, n, used, o_token FROM ${fn.handover}(p_key, p_owner, p_channel, now_, x_owner, n, used) AS h;
  IF o_token IS NULL THEN
    SELECT * INTO head FROM ${waiters} WHERE key = p_key ORDER BY seq LIMIT 1;
    IF FOUND AND head.owner <> p_owner AND (p_fair OR now_ - head.since > ${ms(String(BARGE_BOUND_MS))} OR (head.mode = 'x' AND p_mode <> 'x')) THEN
      SELECT seq INTO my_seq FROM ${waiters} WHERE key = p_key AND owner = p_owner;
      SELECT coalesce(bool_or(mode = 'x'), false), count(*)::integer, coalesce(sum(permits) FILTER (WHERE mode = 'p'), 0)::bigint
        INTO qx, qn, qused FROM ${waiters} WHERE key = p_key AND (my_seq IS NULL OR seq < my_seq);
    END IF;
    IF ${fn.admits}(p_mode, p_permits, p_lim, p_alongside, x_owner, n, used, qx, qn, qused) THEN
      o_token := ${fn.grant}(p_key, p_owner, p_mode, p_permits, p_lim, p_ttl, now_);
    ELSE
      SELECT min(expires_at) INTO soonest FROM ${holders} WHERE key = p_key;
      IF x_owner IS NOT NULL THEN
        SELECT least(soonest, expires_at) INTO soonest FROM ${locks} WHERE key = p_key;
      END IF;
      o_remaining := CASE WHEN soonest IS NOT NULL THEN greatest(0, floor(extract(epoch FROM soonest - now_) * 1000))::bigint END;
      IF p_queue THEN
        -- The entry lives until its next try (within the holders' TTL) plus a margin.
        INSERT INTO ${waiters} (key, owner, mode, permits, lim, fair, alongside, ttl_ms, since, expires_at)
        VALUES (p_key, p_owner, p_mode, p_permits, p_lim, p_fair, p_alongside, p_ttl, now_,
          now_ + ${ms('CASE WHEN o_remaining > 0 THEN o_remaining ELSE 30000 END + 2000')})
        ON CONFLICT (key, owner) DO UPDATE SET ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at;
      END IF;
    END IF;
  END IF;
  PERFORM ${fn.tidy}(p_key, now_);
END
$$;

-- Release p_owner's hold (p_cancel: also leave the queue first), hand the key over, NOTIFY
-- p_changed (its waiters look again). Returns whether the hold was still live; null: none.
CREATE OR REPLACE FUNCTION ${fn.release}(p_key text, p_owner text, p_cancel boolean, p_channel text,
  p_changed text, p_payload text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  now_ timestamptz := clock_timestamp();
  l ${locks};
  live boolean;
  x_owner text; n integer; used bigint;
BEGIN
  IF NOT p_cancel THEN
    -- The mutex's path: our exclusive row, nothing beside it.
    DELETE FROM ${locks} WHERE key = p_key AND owner = p_owner AND NOT queued RETURNING expires_at > now_ INTO live;
    IF live IS NOT NULL THEN
      PERFORM pg_notify(p_changed, p_payload);
      RETURN live;
    END IF;
  END IF;
  SELECT * INTO l FROM ${locks} WHERE key = p_key FOR UPDATE;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF p_cancel THEN DELETE FROM ${waiters} WHERE key = p_key AND owner = p_owner; END IF;
  IF l.owner = p_owner AND l.owner <> '' THEN
    live := l.expires_at > now_;
    UPDATE ${locks} SET owner = '', expires_at = '-infinity' WHERE key = p_key;
  ELSE
    DELETE FROM ${holders} WHERE key = p_key AND owner = p_owner RETURNING expires_at > now_ INTO live;
    IF l.owner <> '' AND l.expires_at > now_ THEN x_owner := l.owner; END IF;
  END IF;
  IF live IS NULL AND NOT p_cancel THEN RETURN NULL; END IF;
  DELETE FROM ${holders} WHERE key = p_key AND expires_at <= now_;
  DELETE FROM ${waiters} WHERE key = p_key AND expires_at <= now_;
  SELECT count(*)::integer, coalesce(sum(permits) FILTER (WHERE mode = 'p'), 0)::bigint INTO n, used
    FROM ${holders} WHERE key = p_key;
  PERFORM ${fn.handover}(p_key, '', p_channel, now_, x_owner, n, used);
  PERFORM ${fn.tidy}(p_key, now_);
  IF live IS NOT NULL THEN PERFORM pg_notify(p_changed, p_payload); END IF;
  RETURN live;
END
$$;

-- An operator's eviction: remove every hold of the key, read the fence (before any handover, so
-- every later grant has a greater token), hand over to the queue's heads.
CREATE OR REPLACE FUNCTION ${fn.evict}(p_key text, p_channel text, p_changed text, p_payload text,
  OUT o_released integer, OUT o_fence bigint)
LANGUAGE plpgsql AS $$
DECLARE
  now_ timestamptz := clock_timestamp();
  l ${locks};
  n integer;
BEGIN
  SELECT * INTO l FROM ${locks} WHERE key = p_key FOR UPDATE;
  SELECT last_value INTO o_fence FROM ${n.tokens};
  o_released := 0;
  IF NOT FOUND THEN RETURN; END IF;
  IF l.owner <> '' AND l.expires_at > now_ THEN o_released := 1; END IF;
  WITH gone AS (DELETE FROM ${holders} WHERE key = p_key RETURNING expires_at > now_ AS live)
  SELECT count(*) FILTER (WHERE live)::integer INTO n FROM gone;
  o_released := o_released + n;
  UPDATE ${locks} SET owner = '', expires_at = '-infinity' WHERE key = p_key;
  DELETE FROM ${waiters} WHERE key = p_key AND expires_at <= now_;
  PERFORM ${fn.handover}(p_key, '', p_channel, now_, NULL, 0, 0::bigint);
  PERFORM ${fn.tidy}(p_key, now_);
  PERFORM pg_notify(p_changed, p_payload);
END
$$;

-- Renew a batch; returns the (key, owner) pairs still held. The keys' rows are locked first, in
-- key order, as every other step locks a key's row before its holders: no deadlock between them.
CREATE OR REPLACE FUNCTION ${fn.extend}(p_keys text[], p_owners text[], p_ttls integer[])
RETURNS TABLE (key text, owner text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE now_ timestamptz := clock_timestamp();
BEGIN
  PERFORM 1 FROM ${locks} AS l WHERE l.key = ANY (p_keys) ORDER BY l.key FOR UPDATE;
  RETURN QUERY
    UPDATE ${locks} AS l SET expires_at = now_ + ${ms('i.ttl')}
    FROM unnest(p_keys, p_owners, p_ttls) AS i(key, owner, ttl)
    WHERE l.key = i.key AND l.owner = i.owner AND l.owner <> '' AND l.expires_at > now_
    RETURNING l.key, l.owner;
  RETURN QUERY
    UPDATE ${holders} AS h SET expires_at = now_ + ${ms('i.ttl')}
    FROM unnest(p_keys, p_owners, p_ttls) AS i(key, owner, ttl)
    WHERE h.key = i.key AND h.owner = i.owner AND h.expires_at > now_
    RETURNING h.key, h.owner;
  -- The marker of keys with no exclusive holder follows their latest shared expiry.
  UPDATE ${locks} AS l SET expires_at = m.latest
  FROM (SELECT h.key, max(h.expires_at) AS latest FROM ${holders} AS h WHERE h.key = ANY (p_keys) GROUP BY h.key) AS m
  WHERE l.key = m.key AND l.owner = '' AND l.expires_at < m.latest;
END
$$;`;
}
