import { settleWithin } from '../../core/abort.js';
import { BARGE_BOUND_MS, modeOf } from '../../core/admission.js';
import { LatchWatch } from '../../core/change-watch.js';
import { sleep } from '../../core/clock.js';
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
import type { Conn } from './connection.js';
import { LIVE, MysqlEngine, orNone } from './engine.js';
import { slotOf, type MysqlDriverOptions } from './options.js';
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

/** How long one armed wake-up wait may block in the server; the core re-arms it as needed. */
const ARM_SECONDS = 3600;
/** First back-off when a busy key's signal is missing (see SignalWatch.next). */
const FREE_BACKOFF_MS = 20;
/**
 * Longest of those back-offs. Short: with a queue, the waiter that finds the signal missing may be
 * the head, the only one the rule lets take the free key (measured: with a 60 s cap, a head asleep
 * in back-off stalled the contended benchmark for seconds).
 */
const FREE_BACKOFF_CAP_MS = 250;

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
 * - an uncontended mutex costs what it did before: one statement on an uncrowded row.
 * Does not: free a crashed holder's lock before its TTL; wake the waiters a step hands the key
 * to other than through the signal (a release by a holder that does not hold the signal, e.g.
 * the second of two readers, leaves them to the signal's back-off below, bounded by the
 * holders' TTL); order session-mode waiters (GET_LOCK's own queue) among the table's; retry an
 * InnoDB error (a deadlock, a lock wait timeout) itself: the step rolls back and the core
 * backs off. Every client of a key must run a version with these tables (an older one ignores
 * the `crowded` flag and the holders rows).
 *
 * Waking waiters without LISTEN/NOTIFY: the holder also takes a per-key "signal" user lock
 * (`GET_LOCK(signal, 0.05)`, best effort; at once or not at all beside other holders, and
 * re-taken by a shared holder's renewal when free) on the connection that granted it, and
 * releases it with its hold. A waiter blocks in the server on `GET_LOCK(signal, ...)` (opened before its decisive
 * try), and passes the signal on at once (`RELEASE_LOCK` in the same round trip), so a release
 * wakes every waiter in turn with no polling. A holder that could not take the signal, or whose
 * connection died, wakes no one: waiters that find the signal missing twice in a row re-try with
 * exponential back-off (20 ms, 40 ms, ... at most 250 ms and the holder's remaining TTL), the only case
 * where this driver polls; a lost wake-up costs at most that back-off, never more than one TTL.
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
  private readonly watches = new Set<SignalWatch>();
  /** Owners granted by the full step (a crowded row), until released: see stepTry. */
  private readonly crowdedGrants = new Set<string>();
  /** The queued try in flight of each waiter (see tryAcquire). */
  private readonly trying = new Map<string, Promise<void>>();

  constructor(options: MysqlDriverOptions) {
    super(options);
  }

  /**
   * Exclusive requests (a mutex, a write lock) first take the fast path: one statement grants
   * when the row is free, not crowded (no holders or waiters rows) or already ours, and bumps the
   * fencing counter on a new grant; the next one reads the outcome and, if granted, takes the
   * key's wake-up signal; a queued waiter's entry is refreshed in the same round trip while the
   * key stays busy. Everything else (a crowded free key, the first enqueue, shared and permit
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
    const refresh = queue
      ? `;
       UPDATE ${this.waiters} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL (GREATEST(COALESCE(@dlock_left, 0), 0) + ${WAITER_MARGIN_US}) MICROSECOND
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
              @dlock_busy := (NOT (owner <=> ?) AND ${LIVE}) AS busy,
              IF(owner <=> ?, IF(IS_USED_LOCK(?) <=> CONNECTION_ID(), 1, GET_LOCK(?, 0.05)), NULL) AS signalled
         FROM ${this.locks} WHERE id = ?${refresh}`,
      [
        req.owner, n.lock, n.id,
        n.id, req.key, req.owner, us,
        req.owner, n.lock,
        req.owner, n.lock, req.owner,
        req.owner,
        req.owner, us,
        req.owner, req.fair === true ? 1 : 0, n.id,
        req.owner, n.lock, req.owner, n.lock, req.owner, n.signal, n.signal, n.id,
        ...(queue ? [n.id, req.owner] : []),
      ],
    );
    const row = (r[3] as Array<{ behind: number | string; mine: number; token: string; session: number; live: number; remaining_us: string | null }>)[0];
    if (row && Number(row.mine) === 1) return { ok: true, grant: { token: BigInt(row.token), sentAt } };
    const refreshed = queue && ((r[4] as { affectedRows?: number } | undefined)?.affectedRows ?? 0) > 0;
    // Free but behind the queue's head (fair, or past the barging bound): busy, as the full rule
    // would answer, and the head takes it with its own try.
    if (row && Number(row.live) !== 1 && Number(row.behind) === 1 && (!queue || refreshed)) return { ok: false, retryAfterMs: QUEUED_RETRY_MS };
    // Free but crowded (the head, a barging request, holders rows), or a waiter not queued yet: the full rule.
    if (!row || Number(row.live) !== 1 || (queue && !refreshed)) return this.stepTry(req, queue);
    const retryAfterMs = Number(row.session) === 1 ? -1 : Math.max(0, Math.floor(Number(row.remaining_us ?? 0) / 1000));
    return { ok: false, retryAfterMs };
  }


  /**
   * One round trip per home connection: per lease an UPDATE of the row (an exclusive holder) and
   * one of its holders row (a shared or permit holder), each only while unexpired and ours. A
   * shared holder then raises the row's expiry (the '' marker) and takes the wake-up signal when
   * nobody holds it (a holder that released it left the others without it).
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
                .map(() => `UPDATE ${this.locks} SET expires_at = GREATEST(COALESCE(expires_at, UTC_TIMESTAMP(6)), UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND) WHERE id = ? AND owner = '';
                            DO IF(IS_FREE_LOCK(?), GET_LOCK(?, 0), 0)`)
                .join(';\n'),
              shared.flatMap((i) => {
                const it = items[i] as ExtendItem;
                const n = this.namesOf(it.key);
                return [micros(it.ttlMs), n.id, n.signal, n.signal];
              }),
            )
            .catch(() => undefined);
        }
        // A lease lost with its row free (force-released, or expired): pass the wake-up signal
        // on, so that the waiters blocked on it try now rather than at the holder's TTL.
        const lost = indexes.filter((i) => !out[i]).map((i) => this.namesOf((items[i] as ExtendItem).key));
        if (lost.length > 0) {
          await conn
            .query(
              lost.map(() => `DO IF(IS_USED_LOCK(?) <=> CONNECTION_ID() AND NOT EXISTS (SELECT 1 FROM ${this.locks} WHERE id = ? AND ${LIVE}), RELEASE_LOCK(?), 0)`).join(';\n'),
              lost.flatMap((n) => [n.signal, n.id, n.lock, n.signal]),
            )
            .catch(() => undefined);
        }
      }),
    );
    return out;
  }

  /**
   * An exclusive holder of an uncrowded row: clear the row if `owner` holds it (only a live hold
   * counts as released; our own expired row is tidied too) and release the wake-up signal, which
   * wakes the waiters, in one round trip. A crowded row (holders or waiters rows): the full step,
   * which hands the key over to the queue's heads that are due.
   */
  async release(key: string, owner: string): Promise<boolean> {
    if (this.crowdedGrants.delete(owner)) return (await this.step(key, { kind: 'release', owner })).released;
    const n = this.namesOf(key);
    // The statements are not one transaction: a waiter's step may make the row crowded, or
    // uncrowded (a cancel), between them. So the tidy-up clears only our EXPIRED row, and a row
    // still ours and live after a missed fast path goes through the full step, which decides under
    // the row lock (without that, a cancel committed in between made a live hold answer false).
    const r = await this.onHome<unknown[]>(
      n.id,
      `UPDATE ${this.locks} SET owner = NULL, expires_at = NULL
         WHERE id = ? AND owner = ? AND session_id IS NULL AND expires_at > UTC_TIMESTAMP(6) AND crowded = 0;
       SET @dlock_live = ROW_COUNT();
       UPDATE ${this.locks} SET owner = NULL, expires_at = NULL
         WHERE id = ? AND owner = ? AND session_id IS NULL AND crowded = 0 AND (expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(6));
       SELECT @dlock_live AS released, (SELECT crowded = 1 OR (owner <=> ? AND ${LIVE}) FROM ${this.locks} WHERE id = ?) AS undecided,
              IF(@dlock_live + ROW_COUNT() > 0 AND IS_USED_LOCK(?) <=> CONNECTION_ID(), RELEASE_LOCK(?), NULL) AS signalled`,
      [n.id, owner, n.id, owner, owner, n.lock, n.id, n.signal, n.signal],
    );
    const row = (r[3] as Array<{ released: string | number; undecided: string | number | null }>)[0];
    if (Number(row?.released) > 0) return true;
    if (Number(row?.undecided) !== 1) return false;
    return (await this.step(key, { kind: 'release', owner })).released;
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
   * writes what the rule decided and commits, then takes or releases the wake-up signal.
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
      const r = await send<unknown[]>(
        `SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
         START TRANSACTION;
         INSERT INTO ${this.locks} (id, name, token) VALUES (?, ?, 0) ON DUPLICATE KEY UPDATE token = token;
         SELECT owner, token, session_id IS NOT NULL AS session, ${LIVE} AS live,
                TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS left_us
           FROM ${this.locks} WHERE id = ?;
         ${HOLDERS_SQL(this.holders)};
         SELECT owner, mode, permits, lim, ttl_ms, fair, alongside,
                TIMESTAMPDIFF(MICROSECOND, since, UTC_TIMESTAMP(6)) AS waited_us,
                TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) AS left_us
           FROM ${this.waiters} WHERE id = ? ORDER BY seq`,
        [n.id, key, n.lock, n.id, n.id, n.id],
      );
      const plan = new StepPlan(
        { locks: this.locks, holders: this.holders, waiters: this.waiters },
        n,
        parseRow((r[3] as RowRaw[])[0]),
        (r[4] as HolderRaw[]).map(parseHolder),
        (r[5] as WaiterRaw[]).map(parseWaiter),
      );
      const outcome = plan.apply(op);
      await send(plan.sql(), plan.params);
      return { ...outcome, sentAt };
    });
  }

  /** The full step as a {@link TryResult}. */
  private async stepTry(req: AcquireRequest, queue: boolean): Promise<TryResult> {
    const o = await this.step(req.key, { kind: 'try', req, queue });
    if (o.token === undefined) return { ok: false, retryAfterMs: o.retryAfterMs };
    // Granted on a crowded row: its release will need the full step too, so go there directly.
    this.crowdedGrants.add(req.owner);
    return { ok: true, grant: { token: o.token, sentAt: o.sentAt } };
  }

  /** A wake-up watch for `key`: a connection of its own blocked on the key's signal lock. */
  async watch(key: string): Promise<ChangeWatch> {
    if (this.closed) throw this.closedError();
    if (this.watches.size >= this.o.maxWaits) {
      // Over the cap of blocked connections: wait for the holder's TTL only (still no polling).
      return new LatchWatch(() => undefined);
    }
    const w = new SignalWatch(await this.takeSpare(), this.namesOf(key).signal, () => this.takeSpare(), (watch, conn) => {
      this.watches.delete(watch);
      if (watch.armed) {
        // Reuse the connection only once the KILL has landed (it would hit the next statement).
        void Promise.all([this.interrupt(conn), watch.settled()]).then(() => this.giveBack(conn));
      } else this.giveBack(conn);
    });
    this.watches.add(w);
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
 * Blocks in the server until the key's signal lock is released: armed when opened (before the
 * waiter's decisive try) and re-armed by `next()`. Results of one arm: 1 = the signal was held and
 * has been released (a release happened: try again); -1 = nobody holds the signal (answered at
 * once: try again once, then sleep until the holder's TTL); 0 = the long server timeout passed, or the wait was interrupted.
 */
class SignalWatch implements ChangeWatch {
  private inflight: Promise<number | null> | undefined;
  private freeStreak = 0;
  private done = false;

  constructor(
    private conn: Conn,
    private readonly signalName: string,
    /** A new connection when ours died (the server restarted...). */
    private readonly reconnect: () => Promise<Conn>,
    private readonly onClose: (w: SignalWatch, conn: Conn) => void,
  ) {
    this.arm();
  }

  /** Whether a server wait is in flight. */
  get armed(): boolean {
    return this.inflight !== undefined;
  }

  /** Resolves when no statement of this watch is running any more. */
  settled(): Promise<void> {
    return (this.inflight ?? Promise.resolve()).then(
      () => undefined,
      () => undefined,
    );
  }

  private arm(): void {
    const p = this.conn
      .query<Array<{ w: string | number | null }>>(
        // One expression, so that nothing (not even a KILL QUERY) can come between taking the
        // signal and passing it on: a waiter never keeps it.
        `SELECT IF(IS_FREE_LOCK(?), -1, IF(GET_LOCK(?, ${ARM_SECONDS}) = 1, RELEASE_LOCK(?), 0)) AS w`,
        [this.signalName, this.signalName, this.signalName],
      )
      .then((r) => {
        const w = r[0]?.w;
        return w === null || w === undefined ? null : Number(w);
      });
    p.catch(() => undefined);
    this.inflight = p;
  }

  async next(maxMs: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) throw signal.reason as Error;
    const start = performance.now();
    if (!this.inflight) {
      if (!this.conn.alive) {
        try {
          this.conn = await this.reconnect();
        } catch {
          // Still unreachable: fall back to the holder's TTL bound.
          await sleep(maxMs, signal);
          return false;
        }
        if (this.done) {
          // Closed (by the driver's close) while reconnecting: hand the new connection back.
          this.onClose(this, this.conn);
          return false;
        }
      }
      this.arm();
    }
    const inflight = this.inflight as Promise<number | null>;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await new Promise<number | null | 'timeout' | 'error'>((resolve, reject) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, maxMs));
      onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      inflight.then(resolve, () => resolve('error'));
    }).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    });
    if (outcome === 'timeout') return false;
    this.inflight = undefined;
    if (outcome === 1) {
      this.freeStreak = 0;
      return true;
    }
    if (outcome === 0) this.freeStreak = 0;
    if (outcome === -1) {
      // Nobody holds the signal: it may have been released just before we armed (try again at
      // once), or the holder has not taken it (yet: on a starved CPU the waiters passing it on
      // can keep it from the new holder past its 50 ms; or its connection died). Then back off
      // exponentially (20 ms, 40 ms, ...) up to the holder's TTL: a few tries per TTL, and
      // only while the signal is missing.
      const streak = this.freeStreak++;
      if (streak === 0) return true;
      const backoff = Math.min(FREE_BACKOFF_CAP_MS, FREE_BACKOFF_MS * 2 ** Math.min(streak - 1, 16));
      await sleep(Math.max(0, Math.min(maxMs, backoff) - (performance.now() - start)), signal);
      return false;
    }
    // A connection error: report a change, so that the caller's next try meets the error (and
    // backs off, and reports unavailability if it lasts). 0 (server timeout) or null
    // (interrupted): let the caller try again.
    return outcome === 'error';
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.onClose(this, this.conn);
  }
}
