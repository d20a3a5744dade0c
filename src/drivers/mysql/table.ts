import { settleWithin } from '../../core/abort.js';
import { BARGE_BOUND_MS, modeOf } from '../../core/admission.js';
import { LatchWatch } from '../../core/change-watch.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  KeyState,
  LockState,
  TrySetDriver,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import type { Conn, MysqlError } from './connection.js';
import { LIVE, MysqlEngine, orNone } from './engine.js';
import { slotOf, type KeyNames, type MysqlDriverOptions } from './options.js';
import {
  HOLDERS_SQL,
  micros,
  parseHolder,
  parseRow,
  parseWaiter,
  QUEUED_RETRY_MS,
  StepPlan,
  WAITER_MARGIN_US,
  type HolderRaw,
  type Op,
  type Outcome,
  type RowRaw,
  type WaiterRaw,
} from './step.js';

/** How long one armed wake-up wait may sleep in the server; the core re-arms it as needed. */
const ARM_SECONDS = 3600;
/** A statement sender on a connection held with `Conn.exclusive`. */
type Send = <R>(sql: string, params?: readonly unknown[]) => Promise<R>;
/** At most this many keys remembered as crowded by {@link MysqlTableDriver.release}. */
const CROWDED_KEYS_MAX = 10_000;
/** ER_QUERY_INTERRUPTED: a `KILL QUERY` ended the watch's sleep (a release woke it). */
const ER_QUERY_INTERRUPTED = 1317;
/** ER_NO_SUCH_THREAD, ER_KILL_DENIED_ERROR: a wake-up that found its watch gone, or of another user. */
const KILL_MISSED = new Set([1094, 1095]);

/**
 * Lease-table mode: a row per key holds its exclusive holder, fencing counter and expiry by the
 * server's clock (`UTC_TIMESTAMP(6)`); `<prefix>holders` holds its shared (read) and permit
 * holders, `<prefix>waiters` its queue; the core renews every lease. A try-set driver whose
 * steps are atomic on the engine (a statement, or one transaction under the key row's lock), so
 * the lock does not depend on any connection staying up; the core's wait loop waits.
 *
 * Guarantees (see ./index.ts for both modes):
 * - every admission mode (`info.modes`: exclusive, shared, permits; the rule of
 *   src/core/admission.ts): many readers at once, a writer alone, k of L permits all or nothing;
 *   a queued writer stops new readers;
 * - fairness as a choice (`info.fairness` `choice`): a `fair` request is strict FIFO across
 *   processes (behind every waiter queued before it); otherwise it may barge only while the
 *   queue's head has waited less than BARGE_BOUND_MS (5 ms), after which a release hands the key
 *   to the head. A busy waiter queues in its decisive try and refreshes its entry on each try
 *   (an entry lives the holders' remaining TTL + 2 s, so a crashed waiter leaves the queue);
 * - direct handoff: a release grants the key to the queue's heads that the rule admits (when
 *   the head is fair or past the bound), each with the next token; the waiter finds it is the
 *   holder at its next try (woken by the signal below) and confirms it; after a holder's expiry
 *   the head takes the key with its own try;
 * - tokens strictly increase per key across modes (one counter in the row, never deleted);
 * - an uncontended mutex costs what it did before: one statement on an uncrowded row;
 * - every release or cancel that changes a waiter's answer wakes that waiter, whichever client
 *   releases (below), and only those: a handoff wakes the head alone.
 * Does not: free a crashed holder's lock before its TTL (its waiters wake at that TTL, the core's
 * bound); wake a waiter connected as another MySQL user than the releaser unless the releaser may
 * `KILL` it (`CONNECTION_ADMIN` / `SUPER`): that waiter wakes at the holders' TTL; order
 * session-mode waiters (GET_LOCK's own queue) among the table's; retry an InnoDB error (a
 * deadlock, a lock wait timeout) itself: the step rolls back and the core backs off. Every client
 * of a key must run a version with these tables (an older one ignores the `crowded` flag, the
 * holders rows and the wake-ups).
 *
 * Waking waiters without LISTEN/NOTIFY: a waiter's watch is a connection of its own that sleeps in
 * the server (`SLEEP`) unless the row's `changes` counter moved past the value its last try read,
 * checked in the same statement. Its queue entry carries that connection's `CONNECTION_ID()`
 * (`watch_id`). A release or cancel is a full step (the row is crowded while anyone waits): it
 * bumps `changes` and, after its COMMIT in the same batch, ends the sleep of the waiters whose
 * answer it changed with `KILL QUERY <watch_id>` (a client may end its own user's statements
 * without any privilege). No wake-up is lost: a KILL that lands before the sleep started comes
 * after the commit, which that statement's check then sees. Nothing polls: a watch sleeps until a
 * wake-up or the bound the core gives it (the holders' remaining TTL).
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { MysqlTableDriver } from 'dlock/mysql';
 * const locks = new LockClient(new MysqlTableDriver({ url: 'mysql://app:secret@db:3306/app' }));
 * const lease = await locks.acquire('report:daily', { ttlMs: 10_000 });
 * try { ... } finally { await lease.release(); }
 * ```
 */
export class MysqlTableDriver extends MysqlEngine implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  readonly info: DriverInfo = {
    name: 'mysql',
    liveness: 'lease',
    fair: false,
    scope: 'distributed',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'choice',
  };
  private readonly watches = new Set<WakeWatch>();
  /** The open watch of each waiting owner: its connection id and the `changes` its tries read. */
  private readonly watching = new Map<string, WakeWatch>();
  /** Owners granted by the full step (a crowded row), until released: see stepTry. */
  private readonly crowdedGrants = new Set<string>();
  /** Keys whose last release by this driver found waiters (see {@link release}). */
  private readonly crowdedKeys = new Set<string>();
  /** The queued try in flight of each waiter (see tryAcquire). */
  private readonly trying = new Map<string, Promise<void>>();

  constructor(options: MysqlDriverOptions) {
    super(options);
  }

  /**
   * Exclusive requests (a mutex, a write lock) first take the fast path: one statement grants
   * when the row is free, not crowded (no holders or waiters rows) or already ours, and bumps the
   * fencing counter on a new grant; the next one reads the outcome (and the row's `changes`,
   * which the waiter's watch sleeps on); a queued waiter's entry is refreshed in the same round
   * trip while the key stays busy. Everything else (a crowded free key, the first enqueue, shared and permit
   * requests) is one transaction over the row and its holders and queue (`step` in step.ts).
   */
  tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    const attempt = this.attempt(req, queue);
    if (!queue) return attempt;
    // A waiter's try may queue it in its second round trip: a cancel must come after it.
    const settled = attempt.then(
      () => undefined,
      () => undefined,
    );
    this.trying.set(req.owner, settled);
    void settled.then(() => {
      if (this.trying.get(req.owner) === settled) this.trying.delete(req.owner);
    });
    return attempt;
  }

  private async attempt(req: AcquireRequest, queue: boolean): Promise<TryResult> {
    if (modeOf(req.admission) !== 'exclusive' || req.alongside !== undefined) return this.stepTry(req, queue);
    const n = this.namesOf(req.key);
    const us = micros(req.ttlMs);
    const sentAt = this.now();
    const watch = queue ? this.watching.get(req.owner) : undefined;
    const refresh = queue
      ? `;
       UPDATE ${this.waiters} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL (GREATEST(COALESCE(@dlock_left, 0), 0) + ${WAITER_MARGIN_US}) MICROSECOND,
                                  watch_id = ?
         WHERE id = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6) AND (@dlock_busy = 1 OR @dlock_behind = 1)`
      : '';
    const r = await this.onHome<unknown[]>(
      n.id,
      // A key held by someone else is seen with a plain read first, which locks nothing: woken
      // waiters that find it busy do not queue on the row lock ahead of the one it was handed to.
      `SET @dlock_held = (SELECT NOT (owner <=> ?) AND ${LIVE} FROM ${this.locks} WHERE id = ?);
       INSERT INTO ${this.locks} (id, name, owner, token, expires_at)
         SELECT ?, ?, ?, 1, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND FROM DUAL WHERE NOT (@dlock_held <=> 1)
       ON DUPLICATE KEY UPDATE
         token      = IF(owner <=> ?, token, IF(${LIVE} OR crowded = 1, token, token + 1)),
         owner      = IF(owner <=> ? OR NOT (${LIVE} OR crowded = 1), ?, owner),
         session_id = IF(owner <=> ?, NULL, session_id),
         expires_at = IF(owner <=> ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, expires_at);
       SET @dlock_behind = COALESCE((SELECT owner <> ? AND (? OR TIMESTAMPDIFF(MICROSECOND, since, UTC_TIMESTAMP(6)) > ${BARGE_BOUND_MS * 1000})
                                       FROM ${this.waiters} WHERE id = ? AND expires_at > UTC_TIMESTAMP(6) ORDER BY seq LIMIT 1), 0);
       SELECT @dlock_behind AS behind, owner <=> ? AS mine, token, session_id IS NOT NULL AS session, ${LIVE} AS live,
              @dlock_left := TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS remaining_us,
              @dlock_busy := (NOT (owner <=> ?) AND ${LIVE}) AS busy, changes
         FROM ${this.locks} WHERE id = ?${refresh}`,
      [
        req.owner, n.lock, n.id,
        n.id, req.key, req.owner, us,
        req.owner, n.lock,
        req.owner, n.lock, req.owner,
        req.owner,
        req.owner, us,
        req.owner, req.fair === true ? 1 : 0, n.id,
        req.owner, n.lock, req.owner, n.lock, n.id,
        ...(queue ? [watch?.threadId ?? null, n.id, req.owner] : []),
      ],
    );
    const row = (r[3] as Array<{ behind: number | string; mine: number; token: string; session: number; live: number; remaining_us: string | null; changes: string | number }>)[0];
    if (row && Number(row.mine) === 1) return { ok: true, grant: { token: BigInt(row.token), sentAt } };
    const refreshed = queue && ((r[4] as { affectedRows?: number } | undefined)?.affectedRows ?? 0) > 0;
    if (row && refreshed) watch?.saw(String(row.changes));
    // Free but behind the queue's head (fair, or past the barging bound): busy, as the full rule
    // would answer, and the head takes it with its own try.
    if (row && Number(row.live) !== 1 && Number(row.behind) === 1 && (!queue || refreshed)) return { ok: false, retryAfterMs: QUEUED_RETRY_MS };
    // Free but crowded (the head, a barging request, holders rows), or a waiter not queued yet: the full rule.
    if (!row || Number(row.live) !== 1 || (queue && !refreshed)) return this.stepTry(req, queue);
    // A session-mode holder releases without waking this mode's watches.
    if (Number(row.session) === 1) return { ok: false, retryAfterMs: -1, unseen: true };
    return { ok: false, retryAfterMs: Math.max(0, Math.floor(Number(row.remaining_us ?? 0) / 1000)) };
  }


  /**
   * One round trip per home connection: per lease an UPDATE of the row (an exclusive holder) and
   * one of its holders row (a shared or permit holder), each only while unexpired and ours. A
   * shared holder then raises the row's expiry (the '' marker).
   */
  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    const out = items.map(() => false);
    const groups = new Map<number, number[]>();
    items.forEach((it, i) => {
      const slot = slotOf(this.namesOf(it.key).id, this.o.connections);
      groups.set(slot, [...(groups.get(slot) ?? []), i]);
    });
    await Promise.all(
      [...groups].map(async ([slot, indexes]) => {
        const params: unknown[] = [];
        const sql = indexes
          .map((i) => {
            const it = items[i] as ExtendItem;
            const id = this.namesOf(it.key).id;
            params.push(micros(it.ttlMs), id, it.owner, micros(it.ttlMs), id, it.owner);
            return `UPDATE ${this.locks} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                      WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6);
                    UPDATE ${this.holders} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                      WHERE id = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)`;
          })
          .join(';\n');
        const conn = await this.home(slot);
        const r = await conn.query<Array<{ affectedRows: number }>>(sql, params);
        const shared: number[] = [];
        indexes.forEach((i, j) => {
          const x = (r[2 * j]?.affectedRows ?? 0) > 0;
          const h = (r[2 * j + 1]?.affectedRows ?? 0) > 0;
          out[i] = x || h;
          if (h) shared.push(i);
        });
        if (shared.length > 0) {
          await conn
            .query(
              shared
                .map(() => `UPDATE ${this.locks} SET expires_at = GREATEST(COALESCE(expires_at, UTC_TIMESTAMP(6)), UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND) WHERE id = ? AND owner = ''`)
                .join(';\n'),
              shared.flatMap((i) => {
                const it = items[i] as ExtendItem;
                return [micros(it.ttlMs), this.namesOf(it.key).id];
              }),
            )
            .catch(() => undefined);
        }
      }),
    );
    return out;
  }

  /**
   * An exclusive holder of an uncrowded row (nobody waits): clear the row if `owner` holds it
   * (only a live hold counts as released; our own expired row is tidied too), one round trip. A
   * crowded row (holders or waiters rows): the full step, which hands the key over to the queue's
   * heads that are due and wakes the waiters whose answer changed.
   */
  async release(key: string, owner: string): Promise<boolean> {
    if (this.crowdedGrants.delete(owner)) return (await this.step(key, { kind: 'release', owner })).released;
    const n = this.namesOf(key);
    const conn = await this.home(slotOf(n.id, this.o.connections));
    // The fast path's statements are not one transaction: a waiter's step may make the row
    // crowded, or uncrowded (a cancel), between them. So the tidy-up clears only our EXPIRED row,
    // and a row still ours and live after a missed fast path goes through the full step, which
    // decides under the row lock (without that, a cancel committed in between made a live hold
    // answer false). On a key whose last release here missed the fast path (a waiter queued),
    // the step's first round trip rides along, run only when the fast path misses again
    // (`@dlock_step`): such a release takes two round trips, not three. Elsewhere it stays out:
    // its seven extra statements made an uncontended cycle ~25% slower.
    const along = this.crowdedKeys.has(key);
    return conn.exclusive(async (send) => {
      const r = await send<unknown[]>(
        `UPDATE ${this.locks} SET owner = NULL, expires_at = NULL
           WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6) AND crowded = 0;
         SET @dlock_live = ROW_COUNT();
         UPDATE ${this.locks} SET owner = NULL, expires_at = NULL
           WHERE id = ? AND owner = ? AND session_id IS NULL AND crowded = 0 AND (expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(6));
         SET @dlock_step = @dlock_live = 0 AND (SELECT crowded = 1 OR (owner <=> ? AND ${LIVE}) FROM ${this.locks} WHERE id = ?) <=> 1;
         SELECT @dlock_live AS released, @dlock_step AS undecided${along ? `;\n${this.stepOpenSql('@dlock_step = 1')}` : ''}`,
        [n.id, owner, n.id, owner, owner, n.lock, n.id, ...(along ? this.stepOpenParams(n, key) : [])],
      );
      const row = (r[4] as Array<{ released: string | number; undecided: string | number | null }>)[0];
      if (Number(row?.undecided) !== 1) {
        if (along) {
          this.crowdedKeys.delete(key);
          // Nothing was locked or read: end the empty transaction (queued before anything else
          // this connection runs; nothing to wait for).
          void send('COMMIT').catch(() => undefined);
        }
        return Number(row?.released) > 0;
      }
      if (!along) {
        // Remember the key (bounded: a client releasing many crowded keys forgets them all).
        if (this.crowdedKeys.size >= CROWDED_KEYS_MAX) this.crowdedKeys.clear();
        this.crowdedKeys.add(key);
        return (await this.fullStep(send, n, key, { kind: 'release', owner })).released;
      }
      return (await this.stepDecide(send, n, { kind: 'release', owner }, r, 5)).released;
    });
  }

  /** The waiter `owner` gives up: leave the queue; a hold handed to it meanwhile goes to the next. */
  async cancel(key: string, owner: string): Promise<void> {
    await this.trying.get(owner);
    await this.step(key, { kind: 'cancel', owner });
  }

  /** The oldest holder of `key` (an exclusive one, or the first shared or permit holder). */
  override async inspect(key: string): Promise<LockState | null> {
    return (await this.keyState(key)).holders[0] ?? null;
  }

  /** Every live holder of `key` (exclusive, shared, permits), oldest grant first, and its live waiters. */
  async keyState(key: string): Promise<KeyState> {
    const n = this.namesOf(key);
    const r = await orNone(
      this.onHome<unknown[]>(
        n.id,
        `SELECT owner, token, session_id IS NOT NULL AS session, ${LIVE} AS live,
                TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS left_us
           FROM ${this.locks} WHERE id = ?;
         ${HOLDERS_SQL(this.holders)} AND expires_at > UTC_TIMESTAMP(6) ORDER BY token;
         SELECT COUNT(*) AS n FROM ${this.waiters} WHERE id = ? AND expires_at > UTC_TIMESTAMP(6)`,
        [n.lock, n.id, n.id, n.id],
      ),
      [],
    );
    if (r.length === 0) return { holders: [], waiters: 0 };
    const rowRaw = (r[0] as RowRaw[])[0];
    const holders: LockState[] = [];
    if (rowRaw) {
      const row = parseRow(rowRaw);
      if (row.live && row.owner !== '' && row.owner !== null) holders.push({ owner: row.owner, token: row.token, remainingMs: row.session ? -1 : Math.max(0, row.leftMs) });
      if (row.owner !== null) {
        for (const h of (r[1] as HolderRaw[]).map(parseHolder)) holders.push({ owner: h.owner, token: h.token, remainingMs: Math.max(0, h.leftMs), admission: h.admission });
      }
    }
    holders.sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
    return { holders, waiters: Number((r[2] as Array<{ n: string | number }>)[0]?.n ?? 0) };
  }

  /**
   * One atomic step over the key's row, holders and queue (src/core/admission.ts's rule), as one
   * transaction in two round trips on the key's home connection, which it has to itself meanwhile
   * (Conn.exclusive): the first locks the key's row (an INSERT ... ON DUPLICATE KEY UPDATE, which
   * also creates it; every step of a key takes this one row lock first, so steps of one key run
   * one after the other and never deadlock) and reads the holders and the queue; the second
   * writes what the rule decided and commits, then wakes the waiters it names (KILL QUERY of
   * their watches' sleep; see the class header).
   * READ COMMITTED: reads see the latest commit and writes lock only the rows they touch (no gap
   * locks between keys). An engine error (ER_LOCK_DEADLOCK included) rolls back and rejects: the
   * core backs off and tries again.
   *
   * Rule (the memory driver's): expired holders and waiters are dropped; a release (or cancel)
   * hands the key to the queue's heads while the rule admits them, when the head asked for
   * fairness or has waited past BARGE_BOUND_MS; a try is admitted over the holders, and also over the
   * waiters queued before it when it asks for fairness, when the head has waited past the bound,
   * or when the head is exclusive and the request would share (a queued writer stops new
   * readers). A busy request with `queue` is queued (or its entry refreshed, keeping its place).
   */
  private async step(key: string, op: Op): Promise<Outcome & { sentAt: number }> {
    const n = this.namesOf(key);
    const conn = await this.home(slotOf(n.id, this.o.connections));
    const sentAt = this.now();
    return conn.exclusive(async (send) => {
      return { ...(await this.fullStep(send, n, key, op)), sentAt };
    });
  }

  /** Both round trips of the step on a connection the caller has to itself. */
  private async fullStep(send: Send, n: KeyNames, key: string, op: Op): Promise<Outcome> {
    return this.stepDecide(send, n, op, await send<unknown[]>(this.stepOpenSql(), this.stepOpenParams(n, key)), 0);
  }

  /**
   * The step's first round trip: READ COMMITTED, a transaction that locks the key's row (an
   * INSERT ... ON DUPLICATE KEY UPDATE, which also creates it) and reads the row, the holders and
   * the queue (6 results). `cond`: the row is locked and read only while that SQL condition holds
   * (a release's fast path ran first in the same round trip); otherwise the transaction touches
   * nothing and the reads come back empty.
   */
  private stepOpenSql(cond = ''): string {
    const and = cond ? ` AND ${cond}` : '';
    return `SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
         START TRANSACTION;
         INSERT INTO ${this.locks} (id, name, token) ${cond ? `SELECT ?, ?, 0 FROM DUAL WHERE ${cond}` : 'VALUES (?, ?, 0)'} ON DUPLICATE KEY UPDATE token = token;
         SELECT owner, token, session_id IS NOT NULL AS session, ${LIVE} AS live,
                TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS left_us, changes
           FROM ${this.locks} WHERE id = ?${and};
         ${HOLDERS_SQL(this.holders)}${and};
         SELECT owner, mode, permits, lim, ttl_ms, fair, alongside, watch_id,
                TIMESTAMPDIFF(MICROSECOND, since, UTC_TIMESTAMP(6)) AS waited_us,
                TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS left_us
           FROM ${this.waiters} WHERE id = ?${and} ORDER BY seq`;
  }

  private stepOpenParams(n: KeyNames, key: string): unknown[] {
    return [n.id, key, n.lock, n.id, n.id, n.id];
  }

  /**
   * The step's second round trip, over the reads of {@link stepOpenSql} (at `r[at]` on): the rule
   * decides, the writes and the COMMIT go out, then the wake-ups.
   */
  private async stepDecide(send: Send, n: KeyNames, op: Op, r: unknown[], at: number): Promise<Outcome> {
    const plan = new StepPlan(
      { locks: this.locks, holders: this.holders, waiters: this.waiters },
      n,
      parseRow((r[at + 3] as RowRaw[])[0]),
      (r[at + 4] as HolderRaw[]).map(parseHolder),
      (r[at + 5] as WaiterRaw[]).map(parseWaiter),
    );
    const outcome = plan.apply(op);
    try {
      await send(plan.sql(), plan.params);
    } catch (e) {
      // A KILL (after the COMMIT) whose watch ended meanwhile, or of another user's connection:
      // the step is done; wake the rest one at a time.
      if (plan.wake.size === 0 || !KILL_MISSED.has((e as MysqlError).errno ?? 0)) throw e;
      for (const watch of plan.wake) await send(`KILL QUERY ${watch}`).catch(() => undefined);
    }
    return outcome;
  }

  /** The full step as a {@link TryResult}. */
  private async stepTry(req: AcquireRequest, queue: boolean): Promise<TryResult> {
    const watch = queue ? this.watching.get(req.owner) : undefined;
    const o = await this.step(req.key, { kind: 'try', req, queue, watchId: watch?.threadId });
    if (o.token === undefined) {
      watch?.saw(o.changes);
      return o.unseen ? { ok: false, retryAfterMs: o.retryAfterMs, unseen: true } : { ok: false, retryAfterMs: o.retryAfterMs };
    }
    // Granted on a crowded row: its release will need the full step too, so go there directly.
    this.crowdedGrants.add(req.owner);
    return { ok: true, grant: { token: o.token, sentAt: o.sentAt } };
  }

  /**
   * A wake-up watch for `owner`'s wait on `key`: a connection of its own that sleeps in the server
   * until a step wakes it (see the class header). Its id goes into the owner's queue entry with
   * the decisive try that follows.
   */
  async watch(key: string, owner: string): Promise<ChangeWatch> {
    if (this.closed) throw this.closedError();
    if (this.watches.size >= this.o.maxWaits) {
      // Over the cap of sleeping connections: wait for the holder's TTL only (still no polling).
      return new LatchWatch(() => undefined);
    }
    const w = new WakeWatch(await this.takeSpare(), this.locks, this.namesOf(key).id, () => this.takeSpare(), (watch, conn) => {
      this.watches.delete(watch);
      if (this.watching.get(owner) === watch) this.watching.delete(owner);
      if (watch.armed) {
        // Reuse the connection only once the KILL has landed (it would hit the next statement).
        void Promise.all([this.interrupt(conn), watch.settled()]).then(() => this.giveBack(conn));
      } else this.giveBack(conn);
    });
    this.watches.add(w);
    this.watching.set(owner, w);
    return w;
  }

  /** Open wake-up watches (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.watches.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watches]) w.close();
    await settleWithin(Promise.allSettled([...this.watches].map((w) => w.settled())), 1000);
    await this.closeConnections();
  }
}

/**
 * Sleeps in the server until a step wakes it: armed by `next()` with the `changes` value the
 * owner's last try read, in one statement that answers at once when the row has moved on since
 * (a wake-up that came before the sleep began), and otherwise sleeps until a step's
 * `KILL QUERY` (ER_QUERY_INTERRUPTED) or the long server bound. An arm outlives a `next()` that
 * timed out: a later wake-up still ends it.
 */
class WakeWatch implements ChangeWatch {
  private inflight: Promise<'changed' | 'slept' | 'error'> | undefined;
  private seen: string | undefined;
  private done = false;

  constructor(
    private conn: Conn,
    private readonly locks: string,
    private readonly rowId: Buffer,
    /** A new connection when ours died (the server restarted...). */
    private readonly reconnect: () => Promise<Conn>,
    private readonly onClose: (w: WakeWatch, conn: Conn) => void,
  ) {}

  /** The CONNECTION_ID() whose sleep a step ends. */
  get threadId(): number {
    return this.conn.threadId;
  }

  /** The row's `changes` as the owner's latest busy try read it. */
  saw(changes: string): void {
    this.seen = changes;
  }

  /** Whether a server wait is in flight. */
  get armed(): boolean {
    return this.inflight !== undefined;
  }

  /** Resolves when no statement of this watch is running any more. */
  settled(): Promise<void> {
    return (this.inflight ?? Promise.resolve()).then(() => undefined);
  }

  private arm(): void {
    this.inflight = this.conn
      .query<Array<{ w: string | number | null }>>(
        // An unknown `seen` (NULL) answers at once: the next try reads it.
        `SELECT IF((SELECT changes FROM ${this.locks} WHERE id = ?) <=> CAST(? AS SIGNED), SLEEP(${ARM_SECONDS}), 1) AS w`,
        [this.rowId, this.seen ?? null],
      )
      .then(
        (r) => (Number(r[0]?.w) === 1 ? ('changed' as const) : ('slept' as const)),
        (e: MysqlError) => (e.errno === ER_QUERY_INTERRUPTED ? ('changed' as const) : ('error' as const)),
      );
  }

  async next(maxMs: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) throw signal.reason as Error;
    if (!this.inflight) {
      if (!this.conn.alive) {
        try {
          this.conn = await this.reconnect();
        } catch {
          // Unreachable: report a change, so that the caller's next try meets the error and the
          // core backs off.
          return true;
        }
        if (this.done) {
          // Closed (by the driver's close) while reconnecting: hand the new connection back.
          this.onClose(this, this.conn);
          return false;
        }
      }
      this.arm();
    }
    const inflight = this.inflight as Promise<'changed' | 'slept' | 'error'>;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await new Promise<'changed' | 'slept' | 'error' | 'timeout'>((resolve, reject) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, maxMs));
      onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      void inflight.then(resolve);
    }).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    });
    if (outcome === 'timeout') return false;
    this.inflight = undefined;
    // A connection error: report a change, so that the caller's next try meets the error (and
    // backs off, and reports unavailability if it lasts). A sleep that ran out: no change.
    return outcome !== 'slept';
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.onClose(this, this.conn);
  }
}
