/**
 * The one wait loop, for every kind of engine (see src/drivers/driver.ts).
 *
 * What it owns, so that no driver has to:
 * - the deadline, the caller's AbortSignal and `close()`, folded into one scope per wait; every
 *   await of a wait races that scope, so any abort ends any wait promptly, whatever the engine
 *   is doing (a try that hangs, a connection being opened, a queue read);
 * - jittered exponential backoff on engine errors, and the error that ends the wait: the engine's
 *   own last error as the `cause` of an {@link UnavailableError} when the wait ran out while the
 *   engine failed (or never answered), a plain timeout (`null`) when the lock stayed busy;
 * - re-queueing after a lost session or a queue entry that went behind our back;
 * - the local FIFO gate per key (try-set and server-blocking engines): waiters of one key in this
 *   process queue here, so only the head talks to the engine (10,000 local waiters cost one
 *   engine waiter) and a local releaser cannot barge ahead of local waiters. Queue engines need
 *   none: their queue is the engine's, and every local waiter takes its place in it;
 * - for server-blocking engines, at most `maxBlocking` server waits at once (FIFO, abortable), and
 *   on an abort or the deadline a bounded wait for the driver's cancel, so that nothing of the
 *   wait is left waiting or held on the server when it returns;
 * - giving back a grant that lands after the wait ended (abort, deadline, close);
 * - the queue algorithm of queue engines, written once: enqueue (and read the queue before us in
 *   the same step), take the turn when nobody is ahead, else wait for the entry just ahead of us
 *   to go, then look again, unless it was the only one ahead: then the turn is ours without a
 *   second look (the entry we watched was the holder), unless our own entry went meanwhile, which
 *   the driver's `waitGone` reports. The entry is kept across engine errors (the next look says
 *   whether it is still ours); one that went out of use (its session ended, someone deleted it)
 *   is withdrawn and the wait enqueues again; any exit without a grant withdraws the entry, also
 *   one whose enqueue is still in flight.
 */
import type {
  AcquireRequest,
  BlockingDriver,
  ChangeWatch,
  Grant,
  LockDriver,
  QueueDriver,
  QueueEntry,
  QueueView,
  TryResult,
  TrySetDriver,
} from '../drivers/driver.js';
import { UnavailableError } from '../errors.js';
import { backoffMs, DEADLINE, raceAbort, settleWithin } from './abort.js';
import { driftFor, monotonicNow, sleep } from './clock.js';
import { KeyGates } from './key-gates.js';
import { PassOn } from './pass-on.js';
import { admits, blockerOf, sharesKey } from './admission.js';

/** Bound on what a wait's exit may still owe the engine (leave a queue, withdraw an entry). */
const EXIT_WAIT_MS = 1000;

/**
 * A wait that heard nothing from the engine until its deadline ends with "no answer"
 * ({@link UnavailableError}) only when the engine has been silent to this client for this long:
 * an engine that answered a moment ago is slow (a loaded host, a short `waitMs`), not gone, and
 * the lock was simply not had in time (a timeout; a late grant is given back).
 */
export const SILENT_ENGINE_MS = 1000;

/** What the wait loop reports as it goes (the client turns it into events). */
export interface WaitObserver {
  /** The first try found the lock busy: the caller waits. */
  waiting?(req: AcquireRequest): void;
  /** The grant came by direct handoff from the engine (no extra round trip). */
  handedOver?(req: AcquireRequest, token: bigint): void;
  /** An engine error during the wait (retried with backoff). */
  engineError?(req: AcquireRequest, error: unknown): void;
}

/** What this client's waits last heard from the engine: its error, until an answer clears it. */
/**
 * A watch opened before a wait's first try (TrySetDriver.watchNow), so that try was the decisive
 * one: queued when busy (`busy`: its answer; absent when it failed). The wait takes it over.
 */
interface EarlyWatch {
  readonly watch: ChangeWatch;
  /** When that try was sent. */
  readonly sentAt: number;
  busy: Extract<TryResult, { ok: false }> | undefined;
}

interface EngineHealth {
  error: unknown;
  /** When the engine last answered this client's waits or single tries (monotonic ms). */
  answeredAt: number | undefined;
}

/** Whether an engine that did not answer a wait by `deadline` counts as gone (see SILENT_ENGINE_MS). */
function silent(health: EngineHealth, deadline: number): boolean {
  return health.answeredAt === undefined || health.answeredAt < deadline - SILENT_ENGINE_MS;
}

/** One wait in progress: its signal (caller, deadline, close) and what it learnt of the engine. */
class WaitRun {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly offCaller: (() => void) | undefined;
  /** Whether the engine answered anything during this wait. */
  answered = false;
  /** The engine's error since its last answer (cleared by an answer). */
  lastError: unknown;
  /** Whether the observer heard that this wait waits. */
  reported = false;

  constructor(
    readonly deadline: number,
    caller: AbortSignal | undefined,
    private readonly runs: Set<WaitRun>,
    private readonly health: EngineHealth,
  ) {
    if (caller?.aborted) {
      this.controller.abort(caller.reason);
    } else {
      if (caller) this.offCaller = follow(caller, this);
      // A ref'd timer: waiting for a lock is a legitimate reason to keep the process alive.
      this.timer = setTimeout(() => this.controller.abort(DEADLINE), Math.max(0, deadline - monotonicNow()));
      runs.add(this);
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The wait ended because its deadline passed (not an abort or close). */
  get timedOut(): boolean {
    return this.signal.aborted && this.signal.reason === DEADLINE;
  }

  /** Abort the wait (close()), with `reason`. */
  abort(reason: unknown): void {
    this.controller.abort(reason);
  }

  /** Ms left; past the deadline, end the wait now (the timer may lag behind on a busy loop). */
  remaining(): number {
    const left = this.deadline - monotonicNow();
    if (left <= 0) this.controller.abort(DEADLINE);
    if (this.signal.aborted) throw this.signal.reason;
    return left;
  }

  /**
   * Await one engine call, racing the wait's signal. A value that arrives after the race was lost
   * goes to `onLate` (to give a grant back); a late rejection is swallowed.
   */
  async call<T>(work: Promise<T>, onLate?: (value: T) => void): Promise<T> {
    const v = await raceAbort(work, this.signal, onLate);
    this.answered = true;
    this.lastError = undefined;
    this.health.error = undefined;
    this.health.answeredAt = monotonicNow();
    return v;
  }

  /** An engine error during this wait (retried with backoff until the deadline). */
  failed(e: unknown): void {
    this.lastError = e;
    this.health.error = e;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.offCaller?.();
    this.runs.delete(this);
  }
}

/** One try bounded by {@link Deadlines}: its deadline and what to do when it passes. */
interface DeadlineEntry {
  readonly deadline: number;
  readonly expire: () => void;
}

/**
 * The deadlines of the first tries in flight, on ONE timer per wait loop that stays armed when
 * they end. Nearly every try answers long before its deadline; a timer of its own cost each one
 * a setTimeout and a clearTimeout, and Node a timer list created and dropped per cycle (with the
 * priority-queue work behind it): about a twentieth of a semaphore cycle's client CPU. Here a
 * try costs a Set insert and delete; the timer, armed for the earliest deadline, is re-armed
 * only for an earlier one, and when it fires it expires what is due by then and re-arms for the
 * rest. Ref'd only while a try waits on it (waiting for a lock keeps the process alive; a timer
 * left armed after the last try must not).
 */
class Deadlines {
  private readonly entries = new Set<DeadlineEntry>();
  private timer: NodeJS.Timeout | undefined;
  private at = Number.POSITIVE_INFINITY;

  add(entry: DeadlineEntry): void {
    this.entries.add(entry);
    if (entry.deadline < this.at) this.arm(entry.deadline);
    else if (this.entries.size === 1) this.timer?.ref();
  }

  delete(entry: DeadlineEntry): void {
    this.entries.delete(entry);
    if (this.entries.size === 0) this.timer?.unref();
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.at = at;
    this.timer = setTimeout(this.fire, Math.max(0, at - monotonicNow()));
  }

  /** The timer fired: every entry due by the time it was armed for has passed its deadline. */
  private readonly fire = (): void => {
    const due = this.at;
    this.timer = undefined;
    this.at = Number.POSITIVE_INFINITY;
    let next = Number.POSITIVE_INFINITY;
    for (const e of [...this.entries]) {
      if (e.deadline <= due) {
        this.entries.delete(e);
        e.expire();
      } else if (e.deadline < next) next = e.deadline;
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next);
  };

  /**
   * `work`, or {@link DEADLINE} once the monotonic `deadline` passes first (then a value `work`
   * resolves to later goes to `onLate`, and a late rejection is swallowed). No signal.
   */
  within<T>(work: Promise<T>, deadline: number, onLate: (value: T) => void): Promise<T | typeof DEADLINE> {
    return new Promise<T | typeof DEADLINE>((resolve, reject) => {
      let done = false;
      const entry: DeadlineEntry = {
        deadline,
        expire: () => {
          done = true;
          resolve(DEADLINE);
        },
      };
      this.add(entry);
      work.then(
        (v) => {
          if (done) {
            onLate(v);
            return;
          }
          this.delete(entry);
          resolve(v);
        },
        (e: Error) => {
          if (done) return;
          this.delete(entry);
          reject(e);
        },
      );
    });
  }
}

/** The waits that follow each caller signal (see {@link follow}). */
const followers = new WeakMap<AbortSignal, Set<WaitRun>>();

/**
 * Make `run` abort when the caller's `signal` does, with ONE listener per signal however many
 * waits share it (10,000 waits on one signal must not trip Node's MaxListenersExceededWarning).
 * Returns the function that stops following.
 */
function follow(signal: AbortSignal, run: WaitRun): () => void {
  let runs = followers.get(signal);
  if (!runs) {
    const set = new Set<WaitRun>();
    runs = set;
    followers.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        followers.delete(signal);
        for (const r of [...set]) r.abort(signal.reason);
      },
      { once: true },
    );
  }
  const mine = runs;
  mine.add(run);
  return () => mine.delete(run);
}

/** A queue engine's entry across the rounds of one wait (kept across engine errors). */
interface QueuePlace {
  /** Our entry, while it is ours. */
  entry: QueueEntry | undefined;
  /** The last enqueue, until it resolved: it may still create an entry that the exit withdraws. */
  enqueuing: Promise<{ readonly entry: QueueEntry }> | undefined;
  granted: boolean;
}

/** See the file header. One per client. */
export class WaitLoop {
  private readonly gates = new KeyGates();
  /** The first tries' deadlines (see {@link Deadlines}). */
  private readonly deadlines = new Deadlines();
  /** Server-blocking engines with `maxBlocking`: the attempts on the server at once. */
  private slots: Slots | undefined;
  private readonly runs = new Set<WaitRun>();
  /** Keys with a first try in flight that opened an early watch (see acquire()). */
  private readonly earlyKeys = new Set<string>();
  private readonly health: EngineHealth = { error: undefined, answeredAt: undefined };
  /** Waits in progress, with the exits they still owe the engine. */
  private readonly busy = new Set<Promise<unknown>>();
  /** Set by {@link abortAll}: a wait whose first try was in flight then ends with it. */
  private ended: { reason: unknown } | undefined;

  constructor(
    private readonly driver: LockDriver,
    private readonly observer: WaitObserver = {},
    /** Every release this loop sends goes through it, and every try first tells it (see PassOn). */
    private readonly passOn: PassOn = new PassOn(driver),
  ) {}

  /** Number of keys with local waiters queued at the gate (for tests and inspection). */
  get gatedKeys(): number {
    return this.gates.size;
  }

  /** The engine answered this client outside a wait (a single try): it is not silent. */
  heard(): void {
    this.health.answeredAt = monotonicNow();
  }

  /** Number of waits in progress. */
  get size(): number {
    return this.runs.size;
  }

  /**
   * Wait for `req` until `deadline` (monotonic ms): the grant, or `null` when the lock stayed busy
   * until then. Rejects with the caller's `signal.reason` when it aborts, with the reason given to
   * {@link abortAll}, or with an {@link UnavailableError} (cause: the engine's last error) when the
   * engine failed or never answered until the deadline.
   */
  async acquire(req: AcquireRequest, deadline: number, signal?: AbortSignal): Promise<Grant | null> {
    const d = this.driver;
    // Fast path: one try, unless local waiters of this key already queue (no barging past them),
    // bounded by the deadline, with nothing more allocated for a wait that may not happen (a
    // caller signal takes the full path: its waits share one listener, see follow()). Queue
    // engines skip it: their enqueue reads the queue too, so it is their fast path.
    let tried: TryResult | undefined;
    let fastError: unknown;
    let noAnswer = false;
    let late = false;
    // A watch that opens at once (see TrySetDriver.watchNow) makes this try the decisive one of
    // the wait: queued when busy, its watch open before it was sent.
    let early: EarlyWatch | undefined;
    if (!signal && (d.kind === 'try-set' || d.kind === 'server-blocking') && !this.gates.has(req.key)) {
      // One at a time per key: the waits that start beside it queue behind it at the local gate
      // anyway (10,000 waiters at once must not each enter the engine's queue and leave it).
      const watch = d.kind === 'try-set' && !this.earlyKeys.has(req.key) ? d.watchNow?.(req.key, req.owner) : undefined;
      if (watch) {
        early = { watch, sentAt: monotonicNow(), busy: undefined };
        this.earlyKeys.add(req.key);
      }
      try {
        this.passOn.asked(req.key);
        const r = await this.deadlines.within(d.tryAcquire(req, early !== undefined), deadline, (late) => this.giveBack(req, late));
        if (r === DEADLINE) {
          if (silent(this.health, deadline)) noAnswer = true;
          else late = true;
        }
        else {
          this.health.error = undefined;
          this.heard();
          if (r.ok) {
            early?.watch.close();
            return r.grant;
          }
          tried = r;
          if (early) early.busy = r;
        }
      } catch (e) {
        fastError = e;
        this.health.error = e;
        this.observer.engineError?.(req, e);
      } finally {
        if (early) this.earlyKeys.delete(req.key);
      }
    }
    const gatedBehind = !signal && (d.kind === 'try-set' || d.kind === 'server-blocking') && this.gates.has(req.key);
    // Not going on to a wait of its own right now: the early watch and queue entry go first.
    if (early && (this.ended || noAnswer || late || gatedBehind)) {
      await this.dropEarly(req, early);
      early = undefined;
    }
    // close() came while the first try was in flight (that try is not yet a wait abortAll sees).
    if (this.ended) throw this.ended.reason;
    if (noAnswer) throw new UnavailableError(`No answer from the engine while waiting for lock "${req.key}"`);
    // The deadline passed during the first try of an engine that answered a moment ago: slow, not
    // gone: a timeout (the late answer is given back).
    if (late) return null;
    // Behind a local waiter of this key (and no caller signal): park at the gate, light, and no
    // frame of this function stays suspended meanwhile (see KeyGates.park).
    if (gatedBehind) return this.parked(req, deadline);
    return this.run(req, deadline, signal, tried, fastError, false, early);
  }

  /** An early watch that no wait took over: close it and leave the queue (bounded). */
  private async dropEarly(req: AcquireRequest, early: EarlyWatch): Promise<void> {
    early.watch.close();
    const d = this.driver;
    if (d.kind === 'try-set' && d.cancel) await settleWithin(d.cancel(req.key, req.owner), EXIT_WAIT_MS);
  }

  /**
   * A wait parked at its key's gate until its turn: then an ordinary wait that already holds the
   * gate. Its deadline passing in the gate is a timeout (`null`), unless the engine's last word
   * to this client's waits was an error (then that error, as for any wait).
   */
  private parked(req: AcquireRequest, deadline: number): Promise<Grant | null> {
    this.observer.waiting?.(req);
    const work = this.gates.park(req.key, deadline, monotonicNow).then((turn) => {
      if (turn) return this.run(req, deadline, undefined, undefined, undefined, true);
      const e = this.health.error;
      if (e instanceof UnavailableError) throw e;
      if (e !== undefined) throw new UnavailableError(`Could not acquire lock "${req.key}" before the wait ran out`, { cause: e });
      return null;
    });
    const untrack = (): void => {
      this.busy.delete(work);
    };
    this.busy.add(work);
    work.then(untrack, untrack);
    return work;
  }

  private async run(
    req: AcquireRequest,
    deadline: number,
    signal: AbortSignal | undefined,
    tried: TryResult | undefined,
    fastError: unknown,
    gateHeld: boolean,
    early?: EarlyWatch,
  ): Promise<Grant | null> {
    if (this.ended) {
      if (early) await this.dropEarly(req, early);
      throw this.ended.reason;
    }
    const run = new WaitRun(deadline, signal, this.runs, this.health);
    // A parked wait took its turn behind local waiters that were talking to the engine.
    run.answered = tried !== undefined || gateHeld;
    run.lastError = fastError;
    run.reported = gateHeld;
    const work = this.wait(req, run, tried !== undefined, signal !== undefined, gateHeld, early);
    this.busy.add(work);
    try {
      return await work;
    } finally {
      this.busy.delete(work);
      run.dispose();
    }
  }

  /** Abort every wait in progress with `reason` (close()). */
  abortAll(reason: unknown): void {
    this.ended ??= { reason };
    for (const run of [...this.runs]) run.abort(reason);
    this.gates.failParked(reason);
  }

  /** Resolve once every wait has ended and left the engine's queue, or after `maxMs`. */
  async drain(maxMs: number): Promise<void> {
    const until = monotonicNow() + maxMs;
    while (this.busy.size > 0) {
      const left = until - monotonicNow();
      if (left <= 0) return;
      await settleWithin(Promise.allSettled([...this.busy]), left);
    }
  }

  private async wait(req: AcquireRequest, run: WaitRun, justTried: boolean, fastPathHere: boolean, gateHeld: boolean, early?: EarlyWatch): Promise<Grant | null> {
    const d = this.driver;
    const gated = d.kind === 'try-set' || d.kind === 'server-blocking';
    let inGate = gateHeld;
    let triedOnce = justTried;
    const place: QueuePlace | undefined = d.kind === 'queue' ? { entry: undefined, enqueuing: undefined, granted: false } : undefined;
    try {
      // The fast path of a caller with a signal (see acquire()), raced with the whole wait.
      if (fastPathHere && gated && !inGate && !this.gates.has(req.key)) {
        try {
          this.passOn.asked(req.key);
          const r = await run.call(d.tryAcquire(req), (late) => this.giveBack(req, late));
          if (r.ok) return r.grant;
          triedOnce = true;
        } catch (e) {
          if (run.signal.aborted) throw e;
          run.failed(e);
          this.observer.engineError?.(req, e);
        }
      }
      if (gated) this.reportWaiting(req, run);
      if (gated && !inGate) {
        run.remaining();
        const queuedBehind = await this.gates.take(req.key, run.signal);
        inGate = true;
        // Queued behind a local waiter: the lock may have changed hands since our try.
        if (queuedBehind) triedOnce = false;
      }
      for (let attempt = 0, requeues = 0; ; ) {
        try {
          run.remaining();
          const handOver = early;
          early = undefined;
          const grant = await this.step(req, run, triedOnce && run.lastError === undefined, place, handOver);
          if (grant) return grant;
          // Our queue entry or session went: enqueue again, at once the first time.
          if (requeues > 0) await sleep(Math.min(backoffMs(requeues), run.remaining()), run.signal);
          requeues += 1;
        } catch (e) {
          if (run.signal.aborted) throw e;
          run.failed(e);
          this.observer.engineError?.(req, e);
          await sleep(Math.min(backoffMs(attempt++), run.remaining()), run.signal);
        }
        triedOnce = false;
      }
    } catch (e) {
      if (!run.timedOut) throw e;
    } finally {
      // Ended before the first step took the early watch over (an abort in the gate, the deadline).
      if (early) await this.dropEarly(req, early);
      if (inGate) this.gates.leave(req.key);
      // Leave nothing behind in the engine's queue. Bounded: an unreachable engine must not hold
      // up the caller's timeout or abort; the session's end frees the entry at the latest.
      if (place && !place.granted) await settleWithin(this.leaveQueue(req, place), EXIT_WAIT_MS);
    }
    const lastError = run.lastError;
    // An engine error that already says what failed (a quorum error listing every node) is the answer.
    if (lastError instanceof UnavailableError) throw lastError;
    if (lastError !== undefined || (!run.answered && silent(this.health, run.deadline))) {
      throw new UnavailableError(
        lastError === undefined
          ? `No answer from the engine while waiting for lock "${req.key}"`
          : `Could not acquire lock "${req.key}" before the wait ran out`,
        { cause: lastError },
      );
    }
    return null;
  }

  /** One round of waiting, by kind: a grant, `undefined` to enqueue again, or an engine error. */
  private step(req: AcquireRequest, run: WaitRun, justTried: boolean, place: QueuePlace | undefined, early: EarlyWatch | undefined): Promise<Grant | undefined> {
    const d = this.driver;
    switch (d.kind) {
      case 'try-set':
        return this.trySet(d, req, run, justTried, early);
      case 'server-blocking':
        return this.blocking(d, req, run);
      case 'queue':
        if (!place) throw new Error('unreachable: a queue wait has a place');
        return this.queue(d, req, run, place);
    }
  }

  private reportWaiting(req: AcquireRequest, run: WaitRun): void {
    if (run.reported) return;
    run.reported = true;
    this.observer.waiting?.(req);
  }

  private giveBack(req: AcquireRequest, r: TryResult): void {
    if (r.ok) this.passOn.release(req.key, req.owner).catch(() => undefined);
  }

  /**
   * Try-set engines: open the change watch *before* the decisive try (a release between a failed
   * try and the subscription would otherwise be missed), then sleep until a change or the holder's
   * remaining TTL, whichever comes first: a lost notification costs at most one TTL, and nothing
   * polls. Without a watch, or while the engine says its watch cannot see the holder
   * (`unseen`): jittered backoff bounded by the holder's remaining TTL.
   */
  private async trySet(d: TrySetDriver, req: AcquireRequest, run: WaitRun, justTried: boolean, early?: EarlyWatch): Promise<Grant | undefined> {
    let watch: ChangeWatch | undefined = early?.watch;
    /** Send time of the last queued try that found the lock busy: a handoff happened after it. */
    let lastBusyAt = Number.NEGATIVE_INFINITY;
    // An early watch's try was queued (or, if it failed, may have been): leave the queue at the end.
    let queued = early !== undefined;
    let granted = false;
    let skipTry = justTried && d.watch !== undefined;
    let idle = 0;
    let unseen = false;
    // The early try already was the decisive one: sleep on its answer.
    let first = early?.busy;
    if (early && first) lastBusyAt = early.sentAt;
    try {
      for (;;) {
        let retryAfterMs = -1;
        if (first) {
          retryAfterMs = first.retryAfterMs;
          unseen = first.unseen === true;
          first = undefined;
          skipTry = true;
        }
        if (!skipTry) {
          const sentAt = monotonicNow();
          const queue = watch !== undefined;
          queued ||= queue;
          this.passOn.asked(req.key);
          const r = await run.call(d.tryAcquire(req, queue), (late) => this.giveBack(req, late));
          if (r.ok) {
            granted = true;
            return r.grant;
          }
          retryAfterMs = r.retryAfterMs;
          // A holder the watch sees again: backoff starts over the next time one is unseen.
          if (r.unseen !== true) idle = 0;
          unseen = r.unseen === true;
          if (queue) lastBusyAt = sentAt;
        }
        skipTry = false;
        if (!watch && d.watch) {
          watch = await run.call(d.watch(req.key, req.owner), (w) => w.close());
          continue; // the decisive try, now that no release can slip by unseen
        }
        const remaining = run.remaining();
        const bound = retryAfterMs >= 0 ? retryAfterMs + 1 : remaining;
        if (!watch) {
          await sleep(Math.min(remaining, bound, backoffMs(idle++)), run.signal);
          continue;
        }
        const woke = await watch.next(Math.min(remaining, bound, unseen ? backoffMs(idle++) : Number.POSITIVE_INFINITY), run.signal);
        // Handed over by the engine after our last busy try: its TTL started after that try was
        // sent. Take it at once unless that bound leaves too little validity; then the next try
        // confirms it (the engine answers "yours" and extends it).
        if (typeof woke === 'object' && lastBusyAt + req.ttlMs - driftFor(req.ttlMs) - monotonicNow() > req.ttlMs / 2) {
          granted = true;
          this.observer.handedOver?.(req, woke.token);
          return { token: woke.token, sentAt: lastBusyAt };
        }
      }
    } finally {
      watch?.close();
      // Leave the engine's queue; a handoff that raced with our exit is passed on. Bounded: an
      // unreachable engine must not hold up the caller's timeout or abort.
      if (queued && !granted && d.cancel) await settleWithin(d.cancel(req.key, req.owner), EXIT_WAIT_MS);
    }
  }

  /**
   * Server-blocking engines: block on the server for what is left of the wait, cancellably, at
   * most `maxBlocking` at once. A busy answer (the server's wait ran out or was interrupted)
   * blocks again while time is left; the deadline and aborts end it through the wait's signal.
   */
  private async blocking(d: BlockingDriver, req: AcquireRequest, run: WaitRun): Promise<Grant | undefined> {
    for (;;) {
      const slots = this.blockSlots(d);
      if (slots) await slots.take(run.signal);
      let work: Promise<TryResult>;
      try {
        work = d.block(req, Math.ceil(run.remaining()), run.signal);
      } catch (e) {
        slots?.leave();
        throw e;
      }
      // The slot is the driver's connection: it is free once the attempt settled.
      if (slots) void work.then(() => slots.leave(), () => slots.leave());
      let r: TryResult;
      try {
        r = await run.call(work);
      } catch (e) {
        // Ended (abort, deadline, close): the driver cancels its server wait; wait for that
        // (bounded), and give back a grant that landed meanwhile, so that nothing of this wait
        // is left waiting or held on the server when it ends.
        if (run.signal.aborted) {
          await settleWithin(
            work.then((late) => (late.ok ? this.passOn.release(req.key, req.owner) : undefined)),
            EXIT_WAIT_MS,
          );
        }
        throw e;
      }
      if (r.ok) return r.grant;
    }
  }

  private blockSlots(d: BlockingDriver): Slots | undefined {
    const max = d.maxBlocking;
    if (max === undefined || !(max >= 1)) return undefined;
    this.slots ??= new Slots(max);
    return this.slots;
  }

  /**
   * Queue engines: the queue algorithm (see the file header). Resolves the grant, or `undefined`
   * when our entry went out of use (the caller enqueues again); rejects on engine errors with the
   * entry kept in `place`, so that the next round looks again instead of losing its place.
   */
  private async queue(d: QueueDriver, req: AcquireRequest, run: WaitRun, place: QueuePlace): Promise<Grant | undefined> {
    let view: QueueView;
    let entry = place.entry;
    if (entry) {
      view = await run.call(d.look(req, entry));
    } else {
      const enqueuing = d.enqueue(req);
      place.enqueuing = enqueuing;
      const first = await run.call(enqueuing);
      place.enqueuing = undefined;
      place.entry = entry = first.entry;
      view = first.view;
    }
    for (;;) {
      if (!view.mine) return this.dropEntry(d, req, place);
      if (view.ahead === 0) return this.takeTurn(d, req, place, entry, view.sentAt);
      if (sharesKey(req)) {
        // Shared and permits requests: the rule over every entry ahead (the holders first).
        const before = view.before;
        if (!before) throw new Error(`The ${d.info.name} driver read the queue of "${req.key}" without its entries, which an admission needs`);
        const blocker = blockerOf(req, before);
        if (!blocker) return this.takeTurn(d, req, place, entry, view.sentAt);
        this.reportWaiting(req, run);
        const permits = req.admission?.mode === 'permits';
        const gone = await run.call(
          permits && d.waitAnyGone ? d.waitAnyGone(req, before, entry, run.signal) : d.waitGone(req, blocker, entry, run.signal),
        );
        if (gone === 'mine-gone') return this.dropEntry(d, req, place);
        // Entries ahead only ever go: if the rule admits us without the one that went, the turn
        // is ours with no second look (a permits request cannot know which one went).
        if (gone === 'gone' && !permits && admits(req, before.filter((c) => c !== blocker))) return this.takeTurn(d, req, place, entry, monotonicNow());
        view = await run.call(d.look(req, entry));
        continue;
      }
      this.reportWaiting(req, run);
      if (view.predecessor) {
        const gone = await run.call(d.waitGone(req, view.predecessor, entry, run.signal));
        if (gone === 'mine-gone') return this.dropEntry(d, req, place);
        // The one entry ahead of us, the holder, went: the turn is ours, no second look.
        if (gone === 'gone' && view.ahead === 1) return this.takeTurn(d, req, place, entry, monotonicNow());
      }
      view = await run.call(d.look(req, entry));
    }
  }

  /** The turn is ours: the grant, or (its session unusable) drop the entry to enqueue again. */
  private takeTurn(d: QueueDriver, req: AcquireRequest, place: QueuePlace, entry: QueueEntry, sentAt: number): Grant | undefined {
    const grant = d.grant(req, entry, sentAt);
    if (!grant) return this.dropEntry(d, req, place);
    place.granted = true;
    return grant;
  }

  /**
   * Our entry went out of use (gone, or on a session that ended): withdraw what may remain of it
   * in the background (tracked: {@link drain} waits for it), and enqueue again.
   */
  private dropEntry(d: QueueDriver, req: AcquireRequest, place: QueuePlace): undefined {
    const old = place.entry;
    place.entry = undefined;
    if (old) this.track(d.withdraw(req, old));
    return undefined;
  }

  /**
   * Withdraw the entry of a wait that ends without a grant (one round trip, awaited). An entry
   * still being created is withdrawn once its enqueue settles, in the background: the caller's
   * abort or timeout does not wait for an engine that is slow to answer.
   */
  private leaveQueue(req: AcquireRequest, place: QueuePlace): Promise<void> {
    const d = this.driver as QueueDriver;
    if (place.entry) return d.withdraw(req, place.entry);
    if (place.enqueuing) {
      this.track(
        place.enqueuing.then(
          (r) => d.withdraw(req, r.entry),
          () => d.withdraw(req, undefined),
        ),
      );
    }
    return Promise.resolve();
  }

  /** Background work that {@link drain} waits for (bounded, errors dropped). */
  private track(work: Promise<unknown>): void {
    const bounded = settleWithin(work, EXIT_WAIT_MS);
    this.busy.add(bounded);
    void bounded.then(() => this.busy.delete(bounded));
  }
}

/** A FIFO semaphore of `max` slots whose waiters leave on abort (see {@link BlockingDriver.maxBlocking}). */
class Slots {
  private free: number;
  private readonly queue: Array<() => void> = [];

  constructor(max: number) {
    this.free = max;
  }

  take(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.free > 0) {
      this.free -= 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const go = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(go);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal.reason as Error);
      };
      this.queue.push(go);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  leave(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.free += 1;
  }
}
