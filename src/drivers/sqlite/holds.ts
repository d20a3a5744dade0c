/**
 * The holds and the queue of the SQLite driver's keys: the statements, and the steps its
 * transactions run (src/drivers/sqlite/index.ts wraps each step in one `BEGIN IMMEDIATE`
 * transaction, or runs a read-only one as plain reads). The admission rule is the core's
 * (src/core/admission.ts); this file only stores what the rule looks at.
 *
 * Tables (every row carries the boot it was written in: a row of another boot is expired):
 * - `<prefix>locks`: one row per key: the exclusive holder (owner, token, expiry), or, while
 *   only shared and permit holders hold the key, a marker row (owner `''`) that expires with the
 *   latest of them. An exclusive try thus sees a busy key in one read, as before there were modes,
 *   and so does an earlier version of this driver on the same file (its locks still exclude, and
 *   are excluded).
 * - `<prefix>holders`: shared and permit holders (key, owner, mode, permits, limit, token, expiry).
 * - `<prefix>queue`: waiters in arrival order (`seq`), with what they ask (ttl, mode, permits,
 *   limit, fair, alongside), an expiry (an entry lives until its waiter's next try plus a margin:
 *   a crashed waiter's entry goes by itself) and `since`.
 *
 * Fairness. A `fair` request is admitted over the holders AND the waiters queued before it. A
 * release, or any write step that finds room (a holder expired), hands the key directly to the
 * queue's heads (each gets its token in that transaction; the notify file wakes it, and its next
 * try, a plain read, finds the hold is its own) when the head asked for fairness or has waited
 * longer than {@link HEAD_BOUND_MS} as the head. Until then a free key goes to whoever asks first
 * (bounded barging: the releaser's process re-takes it without a cross-process wake-up, which is
 * what makes a contended key fast). A queued writer at the head stops new readers at once.
 *
 * The bound, and where it counts from. A SQLite handoff is a wake-up of another process through a
 * file watch (1 ms on a quiet host, 4-11 ms on a loaded one), not a server round trip, so the
 * core's 5 ms {@link BARGE_BOUND_MS} made most grants of a contended key handoffs: counted from
 * the enqueue, every waiter of a busy key soon counts as past it; counted from when the waiter
 * became the head (its enqueue, or when the waiter before it left: `since`), 5 ms still made
 * about half of the flash-sale demo's grants handoffs. 50 ms as the head keeps handoffs under 20 a
 * second per key, and no head waits more than that plus the holder's section plus one handoff.
 * The cost that remains: each waiting acquisition writes its queue entry once (a commit without
 * fsync, but it takes the file's write lock), which makes the 16-process demo about twice as slow
 * as the driver without a queue was; the 8-process contended benchmark is not slower.
 */
import type Database from 'better-sqlite3';
import { admits, BARGE_BOUND_MS, modeOf, sharesKey, type Ask, type Claim } from '../../core/admission.js';
import type { AcquireRequest, Admission, KeyState, LockState } from '../driver.js';
import type { HostNow } from './host-clock.js';

/** The owner of a `<prefix>locks` row that only marks shared and permit holders. */
export const MARKER = '';

/** A `<prefix>locks` row. */
export interface LockRow {
  owner: string;
  token: bigint;
  expires_at: bigint;
  boot: string;
}

interface HolderRow {
  owner: string;
  /** `s` shared, `p` permits. */
  mode: string;
  permits: bigint;
  lim: bigint;
  token: bigint;
  expires_at: bigint;
  boot: string;
}

interface QueueRow {
  seq: bigint;
  owner: string;
  /** When it became the queue's head: its enqueue, or when the waiter before it left (host ms). */
  since: bigint;
  expires_at: bigint;
  boot: string;
  ttl: bigint;
  /** `x` exclusive, `s` shared, `p` permits. */
  mode: string;
  permits: bigint;
  lim: bigint;
  fair: bigint;
  alongside: string;
}

/** One key as a step sees it: its live holds and waiters. */
interface KeyView {
  readonly key: string;
  /** The locks row as stored, live or not: the next token is above its token. */
  row: LockRow | undefined;
  /** The live exclusive holder. */
  x: LockRow | undefined;
  /** Live shared and permit holders, oldest grant first. */
  holders: HolderRow[];
  /** Live waiters in arrival order. */
  queue: QueueRow[];
  /** Expired holder or queue rows were seen (a write step deletes them). */
  stale: boolean;
  /** The stored queue's first row was one of them (pruning changes the head). */
  staleHead: boolean;
}

/** What a try found. */
export type Outcome =
  | { readonly kind: 'granted'; readonly token: bigint }
  /** Already ours (handed over to us): the TTL started earlier, it expires at `expiresAt`. */
  | { readonly kind: 'mine'; readonly token: bigint; readonly expiresAt: bigint }
  | { readonly kind: 'busy'; readonly retryAfterMs: number }
  /** Plain reads cannot answer: run the write step (`grant`: it may grant a token). */
  | { readonly kind: 'write'; readonly grant: boolean };

/** What a release-like step did: whether it released, and whether it handed the key over. */
export interface Released {
  readonly released: boolean;
  readonly handed: boolean;
}

/** Tables and indexes, created in `schema` (see `tablesSql` in index.ts). */
export function holdTablesSql(prefix: string, schema: 'main' | 'temp'): string {
  return `CREATE TABLE IF NOT EXISTS ${schema}."${prefix}holders" (
         key TEXT NOT NULL, owner TEXT NOT NULL, mode TEXT NOT NULL, permits INTEGER NOT NULL,
         lim INTEGER NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL, boot TEXT NOT NULL,
         PRIMARY KEY (key, owner));
       CREATE TABLE IF NOT EXISTS ${schema}."${prefix}queue" (
         seq INTEGER PRIMARY KEY, key TEXT NOT NULL, owner TEXT NOT NULL, since INTEGER NOT NULL,
         expires_at INTEGER NOT NULL, boot TEXT NOT NULL, ttl INTEGER NOT NULL, mode TEXT NOT NULL,
         permits INTEGER NOT NULL, lim INTEGER NOT NULL, fair INTEGER NOT NULL, alongside TEXT NOT NULL);
       CREATE UNIQUE INDEX IF NOT EXISTS ${schema}."${prefix}queue_owner" ON "${prefix}queue" (key, owner);`;
}

function holderAdmission(h: HolderRow): Admission {
  return h.mode === 'p' ? { mode: 'permits', permits: Number(h.permits), limit: Number(h.lim) } : { mode: 'shared' };
}

function queuedAdmission(q: QueueRow): Admission | undefined {
  return q.mode === 'x' ? undefined : q.mode === 's' ? { mode: 'shared' } : { mode: 'permits', permits: Number(q.permits), limit: Number(q.lim) };
}

function queuedAsk(q: QueueRow): Ask & Claim {
  return { owner: q.owner, admission: queuedAdmission(q), alongside: q.alongside === '' ? undefined : q.alongside };
}

function claimsOf(v: KeyView): Claim[] {
  const claims: Claim[] = v.x ? [{ owner: v.x.owner }] : [];
  for (const h of v.holders) claims.push({ owner: h.owner, admission: holderAdmission(h) });
  return claims;
}

/** Remaining TTL of a row, rounded down (never more than the TTL that was granted). */
export function remainingMs(row: { expires_at: bigint }, now: HostNow): number {
  return Math.max(0, Number(row.expires_at - now.ceil));
}

/** Whole milliseconds as a bigint (the core passes integers; round up anything else). */
export function ms(value: number): bigint {
  return BigInt(Math.ceil(value));
}

/**
 * How long the queue's head may wait as the head while others barge (ms); past it, the key is
 * handed to the head. SQLite's own bound, above the core's {@link BARGE_BOUND_MS} (see the file
 * header for why).
 */
export const HEAD_BOUND_MS = 10 * BARGE_BOUND_MS;

/** How long a queue entry must live after a busy try: until the next try, plus a margin. */
function entryLifeMs(retryAfterMs: number): bigint {
  return BigInt((retryAfterMs > 0 ? retryAfterMs : 30_000) + 2000);
}

/** See the file header. One per driver (one connection). */
export class Holds {
  private readonly s;

  constructor(
    db: Database.Database,
    prefix: string,
    private readonly boot: string,
  ) {
    const locks = `"${prefix}locks"`;
    const holders = `"${prefix}holders"`;
    const queue = `"${prefix}queue"`;
    const qcols = 'seq, owner, since, expires_at, boot, ttl, mode, permits, lim, fair, alongside';
    this.s = {
      select: db.prepare<[string], LockRow>(`SELECT owner, token, expires_at, boot FROM ${locks} WHERE key = ?`),
      // max(): even if a fence row were lost, never hand out a token at or below the lock row's.
      nextToken: db.prepare<[string, bigint], { token: bigint }>(
        `INSERT INTO "${prefix}fences" (key, token) VALUES (?, ?)
         ON CONFLICT (key) DO UPDATE SET token = max(token + 1, excluded.token) RETURNING token`,
      ),
      upsert: db.prepare<[string, string, bigint, bigint, string]>(
        `INSERT INTO ${locks} (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token,
           expires_at = excluded.expires_at, boot = excluded.boot`,
      ),
      remove: db.prepare<[string, string]>(`DELETE FROM ${locks} WHERE key = ? AND owner = ?`),
      removeAny: db.prepare<[string]>(`DELETE FROM ${locks} WHERE key = ?`),
      toMarker: db.prepare<[bigint, string, string]>(`UPDATE ${locks} SET owner = '', expires_at = ? WHERE key = ? AND owner = ?`),
      markerTo: db.prepare<[bigint, string]>(`UPDATE ${locks} SET expires_at = ? WHERE key = ? AND owner = ''`),
      raiseMarker: db.prepare<[bigint, string, string]>(
        `UPDATE ${locks} SET expires_at = max(expires_at, ?) WHERE key = ? AND owner = '' AND boot = ?`,
      ),
      holders: db.prepare<[string], HolderRow>(
        `SELECT owner, mode, permits, lim, token, expires_at, boot FROM ${holders} WHERE key = ? ORDER BY token`,
      ),
      holder: db.prepare<[string, string], HolderRow>(
        `SELECT owner, mode, permits, lim, token, expires_at, boot FROM ${holders} WHERE key = ? AND owner = ?`,
      ),
      addHolder: db.prepare<[string, string, string, number, number, bigint, bigint, string]>(
        `INSERT OR REPLACE INTO ${holders} (key, owner, mode, permits, lim, token, expires_at, boot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      dropHolder: db.prepare<[string, string]>(`DELETE FROM ${holders} WHERE key = ? AND owner = ?`),
      dropHolders: db.prepare<[string]>(`DELETE FROM ${holders} WHERE key = ?`),
      pruneHolders: db.prepare<[string, bigint, string]>(`DELETE FROM ${holders} WHERE key = ? AND (expires_at <= ? OR boot <> ?)`),
      extendHolder: db.prepare<[bigint, string, string, string, bigint]>(
        `UPDATE ${holders} SET expires_at = ? WHERE key = ? AND owner = ? AND boot = ? AND expires_at > ?`,
      ),
      queue: db.prepare<[string], QueueRow>(`SELECT ${qcols} FROM ${queue} WHERE key = ? ORDER BY seq`),
      head: db.prepare<[string, bigint, string], QueueRow>(
        `SELECT ${qcols} FROM ${queue} WHERE key = ? AND expires_at > ? AND boot = ? ORDER BY seq LIMIT 1`,
      ),
      entry: db.prepare<[string, string], QueueRow>(`SELECT ${qcols} FROM ${queue} WHERE key = ? AND owner = ?`),
      enqueue: db.prepare<[string, string, bigint, bigint, string, bigint, string, number, number, number, string]>(
        `INSERT INTO ${queue} (key, owner, since, expires_at, boot, ttl, mode, permits, lim, fair, alongside)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      refresh: db.prepare<[bigint, bigint, string, string]>(`UPDATE ${queue} SET expires_at = ?, ttl = ? WHERE key = ? AND owner = ?`),
      dequeue: db.prepare<[string, string]>(`DELETE FROM ${queue} WHERE key = ? AND owner = ?`),
      pruneQueue: db.prepare<[string, bigint, string]>(`DELETE FROM ${queue} WHERE key = ? AND (expires_at <= ? OR boot <> ?)`),
      promote: db.prepare<[bigint, bigint]>(`UPDATE ${queue} SET since = max(since, ?) WHERE seq = ?`),
    };
  }

  /** Same boot (the monotonic clock is comparable) and not yet expired. */
  isLive(row: { boot: string; expires_at: bigint }, now: HostNow): boolean {
    return row.boot === this.boot && row.expires_at > now.floor;
  }

  /** The `<prefix>locks` row of `key`. */
  lockRow(key: string): LockRow | undefined {
    return this.s.select.get(key);
  }

  /**
   * Answer a try from plain reads where they suffice (busy, or already ours), in WAL mode without
   * waiting for any writer; else say which write step to run. A busy exclusive key costs one read.
   */
  peek(req: AcquireRequest, now: HostNow, queue: boolean): Outcome {
    if (modeOf(req.admission) === 'exclusive') {
      const row = this.s.select.get(req.key);
      if (!row || !this.isLive(row, now)) return { kind: 'write', grant: true };
      if (row.owner === req.owner) return { kind: 'mine', token: row.token, expiresAt: row.expires_at };
      const retryAfterMs = remainingMs(row, now);
      if (queue && this.mustEnqueue(this.liveEntry(req, now), retryAfterMs, now)) return { kind: 'write', grant: false };
      return { kind: 'busy', retryAfterMs };
    }
    const v = this.read(req.key, now);
    const mine = this.holdOf(v, req.owner);
    if (mine) return { kind: 'mine', token: mine.token, expiresAt: mine.expires_at };
    if (this.dueHeads(v, now).length > 0) return { kind: 'write', grant: true };
    const d = this.decide(req, v, now);
    if (d === 'admit') return { kind: 'write', grant: true };
    if (queue && this.mustEnqueue(v.queue.find((q) => q.owner === req.owner), d.retryAfterMs, now)) return { kind: 'write', grant: false };
    return { kind: 'busy', retryAfterMs: d.retryAfterMs };
  }

  /**
   * The write step of a try (inside a transaction): confirm a hold that is already ours, hand the
   * key to the queue's heads where due, then admit `req` or (with `queue`) queue it. `canGrant`
   * false (the transaction is not fsynced): grant nothing, answer `write` when a grant is due.
   */
  acquire(req: AcquireRequest, now: HostNow, queue: boolean, canGrant: boolean): { outcome: Outcome; handed: boolean } {
    const v = this.open(req.key, now);
    const mine = this.holdOf(v, req.owner);
    if (mine) {
      this.dequeue(v, req.owner, now);
      return { outcome: { kind: 'mine', token: mine.token, expiresAt: mine.expires_at }, handed: false };
    }
    if (!canGrant && this.dueHeads(v, now).length > 0) return { outcome: { kind: 'write', grant: true }, handed: false };
    const handed = canGrant ? this.handOver(v, now) : new Map<string, bigint>();
    const given = handed.get(req.owner);
    if (given !== undefined) return { outcome: { kind: 'granted', token: given }, handed: true };
    const d = this.decide(req, v, now);
    if (d === 'admit') {
      if (!canGrant) return { outcome: { kind: 'write', grant: true }, handed: false };
      const token = this.grant(v, req.owner, req.ttlMs, req.admission, now);
      this.dequeue(v, req.owner, now);
      return { outcome: { kind: 'granted', token }, handed: handed.size > 0 };
    }
    if (queue) this.enqueue(v, req, d.retryAfterMs, now);
    return { outcome: { kind: 'busy', retryAfterMs: d.retryAfterMs }, handed: handed.size > 0 };
  }

  /** Whether a release of `key` now may hand it over (a due head waits): its commit mints tokens. */
  mayHandOver(key: string, now: HostNow): boolean {
    const head = this.s.head.get(key, now.floor, this.boot);
    return head !== undefined && this.headDue(head, now);
  }

  /** Release `owner`'s hold of `key` (any mode), then hand over where due (when `canGrant`). */
  release(key: string, owner: string, now: HostNow, canGrant: boolean): Released {
    const v = this.open(key, now);
    if (!this.drop(v, owner)) {
      // Our own row goes even when expired (tidy), but only a live one counts as released.
      if (v.row?.owner === owner) this.s.remove.run(key, owner);
      return { released: false, handed: false };
    }
    return { released: true, handed: canGrant && this.handOver(v, now).size > 0 };
  }

  /** A waiter gives up: leave the queue; a hold handed to it meanwhile is released (passed on). */
  cancel(key: string, owner: string, now: HostNow, canGrant: boolean): Released {
    const v = this.open(key, now);
    this.dequeue(v, owner, now);
    const released = this.drop(v, owner);
    return { released, handed: canGrant && this.handOver(v, now).size > 0 };
  }

  /** Whether `owner` may have something to cancel on `key` (a queue entry or a hold). */
  hasAnything(key: string, owner: string): boolean {
    return this.s.entry.get(key, owner) !== undefined || this.s.holder.get(key, owner) !== undefined || this.s.select.get(key)?.owner === owner;
  }

  /**
   * Every hold of `key` goes, whoever owns it; the fence row is never touched, so the next grant's
   * token is above every token the key carried. Then the queue's heads are handed the key where due.
   */
  force(key: string, now: HostNow, canGrant: boolean, counted: bigint): { released: number; fence: bigint; handed: boolean } {
    const v = this.open(key, now);
    const released = (v.x ? 1 : 0) + v.holders.length;
    let fence = counted;
    if (v.row && v.row.token > fence) fence = v.row.token;
    if (v.row) this.s.removeAny.run(key);
    if (v.holders.length > 0) this.s.dropHolders.run(key);
    v.x = undefined;
    v.holders = [];
    return { released, fence, handed: released > 0 && canGrant && this.handOver(v, now).size > 0 };
  }

  /** Renew a shared or permit hold (the exclusive row is renewed by the driver); keeps the marker above it. */
  extendHolder(key: string, owner: string, expiresAt: bigint, now: HostNow): boolean {
    if (this.s.extendHolder.run(expiresAt, key, owner, this.boot, now.floor).changes === 0) return false;
    this.s.raiseMarker.run(expiresAt, key, this.boot);
    return true;
  }

  /** Every live hold of `key`, oldest grant first, and the number of live waiters. */
  state(key: string, now: HostNow): KeyState {
    const v = this.read(key, now);
    const holds: LockState[] = v.holders.map((h) => ({ owner: h.owner, token: h.token, remainingMs: remainingMs(h, now), admission: holderAdmission(h) }));
    if (v.x) holds.push({ owner: v.x.owner, token: v.x.token, remainingMs: remainingMs(v.x, now) });
    holds.sort((a, b) => (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
    return { holders: holds, waiters: v.queue.length };
  }

  /** The key as stored, expired rows left out (and noted). Plain reads. */
  private read(key: string, now: HostNow): KeyView {
    const row = this.s.select.get(key);
    const x = row && row.owner !== MARKER && this.isLive(row, now) ? row : undefined;
    const allHolders = this.s.holders.all(key);
    const holders = allHolders.filter((h) => this.isLive(h, now));
    const allQueue = this.s.queue.all(key);
    const queue = allQueue.filter((q) => this.isLive(q, now));
    const staleHead = allQueue.length > 0 && !this.isLive(allQueue[0]!, now);
    return { key, row, x, holders, queue, stale: holders.length < allHolders.length || queue.length < allQueue.length, staleHead };
  }

  /** {@link read}, in a write step: expired rows are deleted (a new head's wait starts now). */
  private open(key: string, now: HostNow): KeyView {
    const v = this.read(key, now);
    if (v.stale) {
      this.s.pruneHolders.run(key, now.floor, this.boot);
      this.s.pruneQueue.run(key, now.floor, this.boot);
      if (v.staleHead && v.queue[0]) this.promote(v.queue[0], now);
    }
    return v;
  }

  private holdOf(v: KeyView, owner: string): { token: bigint; expires_at: bigint } | undefined {
    return v.x?.owner === owner ? v.x : v.holders.find((h) => h.owner === owner);
  }

  private liveEntry(req: AcquireRequest, now: HostNow): QueueRow | undefined {
    const e = this.s.entry.get(req.key, req.owner);
    return e && this.isLive(e, now) ? e : undefined;
  }

  /** Whether a busy try must write its queue entry (missing, or living too short for the next try). */
  private mustEnqueue(entry: QueueRow | undefined, retryAfterMs: number, now: HostNow): boolean {
    return entry === undefined || entry.expires_at - now.floor < entryLifeMs(retryAfterMs);
  }

  /** Whether the head may be handed the key now: it asked for fairness or waited past the bound. */
  private headDue(head: QueueRow, now: HostNow): boolean {
    return head.fair !== 0n || Number(now.floor - head.since) > HEAD_BOUND_MS;
  }

  /** The queue's heads a step would hand the key to now, in order (none while barging is allowed). */
  private dueHeads(v: KeyView, now: HostNow): QueueRow[] {
    const head = v.queue[0];
    if (!head || !this.headDue(head, now)) return [];
    const claims = claimsOf(v);
    const due: QueueRow[] = [];
    for (const q of v.queue) {
      const ask = queuedAsk(q);
      if (!admits(ask, claims)) break; // strict FIFO: stop at the first that does not fit
      due.push(q);
      claims.push(ask);
    }
    return due;
  }

  /**
   * The rule for `req` over the holders, and over the waiters queued before it when it asks for
   * fairness, when the head has waited past the bound, or when a writer heads the queue and `req`
   * would share (a queued writer stops new readers at once).
   */
  private decide(req: AcquireRequest, v: KeyView, now: HostNow): 'admit' | { retryAfterMs: number } {
    const at = v.queue.findIndex((q) => q.owner === req.owner);
    const before = at >= 0 ? v.queue.slice(0, at) : v.queue;
    const head = before[0];
    const ask: Ask = { admission: req.admission, alongside: req.alongside };
    const strict = head !== undefined && (req.fair === true || this.headDue(head, now) || (head.mode === 'x' && sharesKey(ask)));
    const claims = claimsOf(v);
    if (admits(ask, strict ? [...claims, ...before.map(queuedAsk)] : claims)) return 'admit';
    // Until a holder goes (its TTL bounds a lost notification), or until the head's turn is due.
    let soonest = v.x ? remainingMs(v.x, now) : -1;
    for (const h of v.holders) if (soonest < 0 || remainingMs(h, now) < soonest) soonest = remainingMs(h, now);
    if (soonest < 0 && head) soonest = Math.max(1, HEAD_BOUND_MS + 1 - Number(now.floor - head.since));
    return { retryAfterMs: soonest };
  }

  /** Grant `owner` a hold of `key` (its token from the per-key counter shared by every mode). */
  private grant(v: KeyView, owner: string, ttlMs: number, admission: Admission | undefined, now: HostNow): bigint {
    const floor = (v.row?.token ?? 0n) + 1n;
    const token = this.s.nextToken.get(v.key, floor)?.token ?? floor;
    const expiresAt = now.ceil + ms(ttlMs);
    if (admission === undefined || admission.mode === 'exclusive') {
      this.s.upsert.run(v.key, owner, token, expiresAt, this.boot);
      v.row = v.x = { owner, token, expires_at: expiresAt, boot: this.boot };
      return token;
    }
    const [mode, permits, lim] = admission.mode === 'permits' ? ['p', admission.permits, admission.limit] : ['s', 0, 0];
    this.s.addHolder.run(v.key, owner, mode, permits, lim, token, expiresAt, this.boot);
    v.holders.push({ owner, mode, permits: BigInt(permits), lim: BigInt(lim), token, expires_at: expiresAt, boot: this.boot });
    if (!v.x) {
      // The marker: the latest expiry of the holders, so that an exclusive try sees them in one read.
      const latest = v.holders.reduce((m, h) => (h.expires_at > m ? h.expires_at : m), expiresAt);
      this.s.upsert.run(v.key, MARKER, token, latest, this.boot);
      v.row = { owner: MARKER, token, expires_at: latest, boot: this.boot };
    }
    return token;
  }

  /** Remove `owner`'s live hold (exclusive or not) and keep the marker exact; false: none. */
  private drop(v: KeyView, owner: string): boolean {
    if (v.x?.owner === owner) {
      v.x = undefined;
      if (v.holders.length === 0) {
        this.s.remove.run(v.key, owner);
        return true;
      }
      // Readers stay beside the write holder that leaves (downgrade): the row becomes their marker.
      const latest = v.holders.reduce((m, h) => (h.expires_at > m ? h.expires_at : m), 0n);
      this.s.toMarker.run(latest, v.key, owner);
      v.row = { ...v.row!, owner: MARKER, expires_at: latest };
      return true;
    }
    const i = v.holders.findIndex((h) => h.owner === owner);
    if (i < 0) return false;
    this.s.dropHolder.run(v.key, owner);
    v.holders.splice(i, 1);
    if (!v.x) {
      if (v.holders.length === 0) {
        this.s.remove.run(v.key, MARKER);
        if (v.row) v.row = { ...v.row, expires_at: 0n };
      } else {
        const latest = v.holders.reduce((m, h) => (h.expires_at > m ? h.expires_at : m), 0n);
        this.s.markerTo.run(latest, v.key);
      }
    }
    return true;
  }

  /**
   * Hand the key to the queue's heads, in order, while the rule admits them over the holders
   * (FIFO: stop at the first that does not fit), when the head is due (fair, or past the bound).
   * Returns owner -> token of those granted; each learns it through the notify file.
   */
  private handOver(v: KeyView, now: HostNow): Map<string, bigint> {
    const given = new Map<string, bigint>();
    for (const q of this.dueHeads(v, now)) {
      given.set(q.owner, this.grant(v, q.owner, Number(q.ttl), queuedAdmission(q), now));
      this.s.dequeue.run(v.key, q.owner);
    }
    if (given.size > 0) {
      v.queue = v.queue.slice(given.size);
      if (v.queue[0]) this.promote(v.queue[0], now);
    }
    return given;
  }

  /** Queue `req` (or keep its place, refreshing its expiry when it would not last until the next try). */
  private enqueue(v: KeyView, req: AcquireRequest, retryAfterMs: number, now: HostNow): void {
    const life = entryLifeMs(retryAfterMs);
    const e = v.queue.find((q) => q.owner === req.owner);
    // Twice what is needed, so that the next tries mostly find it long enough already.
    const expiresAt = now.floor + 2n * life;
    if (e) {
      if (e.expires_at - now.floor < life) this.s.refresh.run(expiresAt, ms(req.ttlMs), req.key, req.owner);
      return;
    }
    const a = req.admission;
    const [mode, permits, lim] = a?.mode === 'permits' ? ['p', a.permits, a.limit] : a?.mode === 'shared' ? ['s', 0, 0] : ['x', 0, 0];
    this.s.enqueue.run(req.key, req.owner, now.floor, expiresAt, this.boot, ms(req.ttlMs), mode, permits, lim, req.fair === true ? 1 : 0, req.alongside ?? '');
  }

  /** `owner` leaves the queue; when it was the head, the next one's wait as head starts now. */
  private dequeue(v: KeyView, owner: string, now: HostNow): void {
    const i = v.queue.findIndex((q) => q.owner === owner);
    if (i < 0) return;
    this.s.dequeue.run(v.key, owner);
    v.queue.splice(i, 1);
    if (i === 0 && v.queue[0]) this.promote(v.queue[0], now);
  }

  private promote(head: QueueRow, now: HostNow): void {
    this.s.promote.run(now.floor, head.seq);
    if (head.since < now.floor) head.since = now.floor;
  }
}
