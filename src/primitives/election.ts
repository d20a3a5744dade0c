/**
 * Leader election over one lock (Curator's LeaderSelector, etcd's Election), on any driver.
 *
 * Why this shape:
 * - The leader is whoever holds the election's key; a term is a {@link Lease}. Its fencing token
 *   is the term number: strictly increasing across leaders, so a deposed leader's late writes can
 *   be refused downstream exactly as a stale lock holder's are.
 * - Liveness is the lock's: a crashed leader's term ends by TTL (or session), renewal keeps a
 *   live one, `term.signal` aborts the moment it is lost. On fair drivers (ZooKeeper, etcd, SQL
 *   session locks, Redis) candidates take turns in arrival order.
 * - `lead()` is the loop most services want: campaign, run the leader's work with a signal that
 *   aborts when the term is lost or the service stops, give the term back, campaign again. An
 *   engine outage while campaigning is waited out, not thrown.
 */
import { linkSignals, backoffMs } from '../core/abort.js';
import type { LockClient, LockInfo } from '../core/client.js';
import { sleep } from '../core/clock.js';
import type { Lease } from '../core/lease.js';
import { MAX_TIMER_MS, validateKey, validateMs, validateSignal } from '../core/validate.js';
import { InvalidArgumentError, LockTimeoutError, UnavailableError } from '../errors.js';

/** Options of a {@link LeaderElection}. */
export interface LeaderElectionOptions {
  /** TTL of the leadership lock, in ms (a crashed leader is replaced after it). Default: the client's. */
  ttlMs?: number;
  /** Term limit: a leader steps down (its term is lost with `'max-hold'`) after this many ms. */
  maxHoldMs?: number;
  /**
   * In {@link LeaderElection.lead}: after a term ends because the work returned, wait this long
   * before campaigning again, so that on engines without FIFO handoff (SQLite, the SQL table
   * modes) the candidates already waiting take their turn instead of the one that just resigned.
   * Default 100. 0 campaigns again at once.
   */
  requeueDelayMs?: number;
}

/** Options of {@link LeaderElection.campaign}. */
export interface CampaignOptions {
  /** Stop campaigning: the campaign rejects with {@link LockAbortedError}. */
  signal?: AbortSignal;
  /**
   * Give up after this many ms with {@link LockTimeoutError}. Default: campaign until elected or
   * aborted, waiting out engine outages.
   */
  waitMs?: number;
}

/**
 * Candidates for one leadership, identified by a lock key. Create one per process and candidate.
 *
 * @example
 * ```ts
 * const election = new LeaderElection(locks, 'leader:billing-scheduler', { ttlMs: 10_000 });
 * const stop = new AbortController();
 * process.on('SIGTERM', () => stop.abort());
 * await election.lead(async (term, signal) => {
 *   // only one process in the fleet runs this at a time; term.token is the term number
 *   while (!signal.aborted) await runDueJobs({ fence: term.token, signal });
 * }, { signal: stop.signal });
 * ```
 */
export class LeaderElection {
  private readonly ttlMs: number | undefined;
  private readonly maxHoldMs: number | undefined;
  private readonly requeueDelayMs: number;
  private won = 0;

  /**
   * @param client the lock client the leadership lock is taken through.
   * @param key the election's lock key (the leader holds it).
   */
  constructor(
    private readonly client: LockClient,
    readonly key: string,
    options: LeaderElectionOptions = {},
  ) {
    validateKey(key);
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
    this.ttlMs = options.ttlMs === undefined ? undefined : validateMs('ttlMs', options.ttlMs, 30, 0);
    this.maxHoldMs = options.maxHoldMs === undefined ? undefined : validateMs('maxHoldMs', options.maxHoldMs, 1, 0);
    this.requeueDelayMs = validateMs('requeueDelayMs', options.requeueDelayMs, 0, 100);
  }

  /** Terms this candidate has won so far. */
  get termsWon(): number {
    return this.won;
  }

  /** The current leader (owner, term = token), or `null` when there is none; no campaigning. */
  leader(): Promise<LockInfo | null> {
    return this.client.inspect(this.key);
  }

  /**
   * Wait until elected; resolves the term. Release it (`term.release()`) to resign.
   * @throws {@link LockAbortedError} when `signal` aborts; {@link LockTimeoutError} when `waitMs`
   *   runs out; {@link UnavailableError} only with `waitMs` (without it, outages are waited out).
   */
  async campaign(options: CampaignOptions = {}): Promise<Lease> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object.');
    const signal = validateSignal(options.signal);
    const lock = { ttlMs: this.ttlMs, maxHoldMs: this.maxHoldMs, signal };
    if (options.waitMs !== undefined) {
      const term = await this.client.acquire(this.key, { ...lock, waitMs: validateMs('waitMs', options.waitMs, 0, 0) });
      this.won += 1;
      return term;
    }
    for (let attempt = 0; ; ) {
      try {
        const term = await this.client.acquire(this.key, { ...lock, waitMs: MAX_TIMER_MS });
        this.won += 1;
        return term;
      } catch (e) {
        if (e instanceof LockTimeoutError) continue;
        if (!(e instanceof UnavailableError) || signal?.aborted) throw e;
        // The engine is unreachable: wait it out (capped backoff), the way a candidate must.
        await sleep(backoffMs(attempt++, 100, 5000), signal);
      }
    }
  }

  /**
   * Campaign and lead, term after term, until `signal` aborts. Each term runs `fn(term, signal)`;
   * its signal aborts when the term is lost or the caller's `signal` aborts, and `fn` should
   * return then. When `fn` returns, the term is given back and the candidate campaigns again.
   * Resolves once stopped (the last term given back). Rejects, after giving the term back, if
   * `fn` throws while its term is still valid and the caller has not stopped.
   */
  async lead(fn: (term: Lease, signal: AbortSignal) => Promise<void> | void, options: { signal: AbortSignal }): Promise<void> {
    if (typeof fn !== 'function') throw new InvalidArgumentError('lead(fn, { signal }): fn must be a function.');
    const stop = validateSignal(options?.signal);
    if (!stop) throw new InvalidArgumentError('lead(fn, { signal }): pass an AbortSignal to stop leading (for example on SIGTERM).');
    while (!stop.aborted) {
      let term: Lease;
      try {
        term = await this.campaign({ signal: stop });
      } catch (e) {
        if (stop.aborted) return;
        throw e;
      }
      const linked = linkSignals(term.signal, stop);
      let resigned = false;
      try {
        await term.run(() => fn(term, linked.signal));
        resigned = !linked.signal.aborted;
      } catch (e) {
        // An error after the term was lost or the caller stopped is fn's reaction to that.
        if (!linked.signal.aborted) throw e;
      } finally {
        linked.dispose();
        await term[Symbol.asyncDispose]();
      }
      if (resigned && this.requeueDelayMs > 0) await sleep(this.requeueDelayMs, stop).catch(() => undefined);
    }
  }
}
