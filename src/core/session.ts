/**
 * One engine session, written once for every session engine (the idea of etcd's
 * `concurrency.Session`): a ZooKeeper session, an etcd lease, an SQL connection holding session
 * locks. The lease never needs to know which engine keeps it alive: it reads `validUntil()` and
 * hears the per-grant signal.
 *
 * The state machine lives here, not in the drivers:
 * - `connected` → `suspended` when the driver reports the connection down ({@link suspend}) or,
 *   with keep-alives, when an answer is overdue (`suspectAfterMs` without one, counted from the
 *   latest of the last confirmation, the last answer {@link heard} and the return to `connected`);
 * - `suspended` → `connected` when the engine confirms the session again ({@link confirmed});
 * - any → `lost` at the local deadline (last confirmed send time + timeout − drift, on the
 *   monotonic clock, even while the network hangs), or when the driver reports the engine ended
 *   it ({@link end}). `lost` is final: the driver opens a new session for the next acquisition.
 *   Grants it carried abort with a {@link LockLostError}: `expired` past the deadline, `closed`
 *   when the driver closed it, `session-lost` otherwise.
 *
 * One unref'd timer drives keep-alives (when the driver sends them: `keepAlive`), suspicion and
 * the deadline; nothing is left running after `end()`.
 */
import { LockLostError } from '../errors.js';
import type { SessionState } from '../drivers/driver.js';
import { settleWithin } from './abort.js';
import { driftFor, monotonicNow } from './clock.js';

/** How a session ended: its deadline passed, the engine ended it, or the driver closed it. */
export type SessionEnd = 'expired' | 'lost' | 'closed';

/** What a driver plugs into an {@link EngineSession}. */
export interface SessionHooks {
  /**
   * Send one keep-alive now; call {@link EngineSession.confirmed} with `sentAt` when the engine
   * answers that the session lives, or {@link EngineSession.end}('lost') when it says it is gone.
   * Omit it when the engine's client keeps the session alive by itself (the driver then reports
   * each contact) or when the connection is the session.
   */
  keepAlive?(sentAt: number): void;
  /** Keep-alive interval in ms; default a third of the timeout (as etcd's Go client does). */
  keepAliveEveryMs?: number;
  /**
   * With `keepAlive`: how long without a confirmation makes the session `suspended` (an answer
   * overdue: the engine or the path to it went silent). Default two keep-alive intervals.
   */
  suspectAfterMs?: number;
  /**
   * The session ended: give its locks back on the engine where that is possible (revoke the
   * lease, close the connection). Best effort; the session waits for it at most `endWaitMs`.
   */
  ended?(how: SessionEnd): Promise<void>;
  /** Hear every state change (after it happened). */
  onState?(session: EngineSession, state: SessionState): void;
}

/** Bound on how long {@link EngineSession.end} waits for the driver's `ended` hook. */
const END_WAIT_MS = 2000;

/** See the file header. */
export class EngineSession {
  private stateNow: SessionState = 'connected';
  private readonly controller = new AbortController();
  /** Monotonic send time of the last request the engine answered with the session alive. */
  private confirmedAt: number;
  /** Monotonic time of the last return to `connected` (suspicion counts from no earlier). */
  private resumedAt = Number.NEGATIVE_INFINITY;
  private heardAt = Number.NEGATIVE_INFINITY;
  private timeout: number;
  private nextKeepAliveAt: number;
  private timer: NodeJS.Timeout | undefined;
  private endPromise: Promise<void> | undefined;
  /** One signal per grant this session carries (see {@link grantSignal}). */
  private readonly grants = new Map<string, { key: string; controller: AbortController }>();

  /**
   * @param name what the session is, for messages (`etcd lease 694d…`, `ZooKeeper session 0x…`)
   * @param timeoutMs how long the engine keeps the session without hearing from us
   * @param confirmedAt monotonic send time of the request that opened (confirmed) the session
   */
  constructor(
    readonly name: string,
    timeoutMs: number,
    confirmedAt: number,
    private readonly hooks: SessionHooks = {},
  ) {
    this.timeout = timeoutMs;
    this.confirmedAt = confirmedAt;
    this.nextKeepAliveAt = confirmedAt + this.interval();
    this.arm();
  }

  /** How long the engine keeps the session without hearing from us, in ms. */
  get timeoutMs(): number {
    return this.timeout;
  }

  /**
   * The engine settled on another timeout than the one asked for (ZooKeeper negotiates it when
   * the session is established): the deadline follows it from now on.
   */
  retime(timeoutMs: number): void {
    if (this.stateNow === 'lost' || timeoutMs === this.timeout) return;
    this.timeout = timeoutMs;
    this.arm();
  }

  /** Monotonic send time of the newest request the engine answered with the session alive. */
  get lastConfirmedAt(): number {
    return this.confirmedAt;
  }

  /** `connected`, `suspended` or `lost` (see the file header). */
  get state(): SessionState {
    return this.stateNow;
  }

  /** Aborted when the session ends, with a {@link LockLostError} ('expired' or 'session-lost'). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True once the session ended, or when its deadline has passed (the timer may lag behind). */
  get isOver(): boolean {
    return this.stateNow === 'lost' || monotonicNow() >= this.validUntil();
  }

  /** The local deadline (monotonic ms): last confirmed send time + timeout − drift. */
  validUntil(): number {
    return this.confirmedAt + this.timeout - driftFor(this.timeout);
  }

  /**
   * The `Grant.session` of one grant: aborted with a {@link LockLostError} naming `key` when the
   * session ends. One per grant (not the session's own signal), so that the listener the core adds
   * goes away with the grant: {@link forget} it on release.
   */
  grantSignal(key: string, owner: string): AbortSignal {
    const controller = new AbortController();
    if (this.controller.signal.aborted) {
      const r = this.controller.signal.reason as LockLostError;
      controller.abort(new LockLostError(key, r.reason, { cause: r.cause ?? r }));
    } else {
      this.grants.set(owner, { key, controller });
    }
    return controller.signal;
  }

  /** The grant of `owner` ended (released): stop tracking its signal. */
  forget(owner: string): void {
    this.grants.delete(owner);
  }

  /** Abort the signal of `owner`'s grant alone (its lock went, the session lives on). */
  loseGrant(owner: string, reason: LockLostError): void {
    const g = this.grants.get(owner);
    if (!g) return;
    this.grants.delete(owner);
    g.controller.abort(reason);
  }

  /** The engine confirmed the session, for a request sent at `sentAt` (monotonic ms). */
  confirmed(sentAt: number): void {
    if (this.stateNow === 'lost') return;
    if (monotonicNow() >= this.validUntil()) {
      void this.end('expired');
      return;
    }
    if (sentAt > this.confirmedAt) this.confirmedAt = sentAt;
    if (this.stateNow === 'connected' && this.timer) return; // a timer that fires early re-arms itself
    this.resumedAt = monotonicNow();
    this.setState('connected');
    this.arm();
  }

  /**
   * The engine answered on the current connection (monotonic ms), whatever that answer proves of
   * the session: it is not silent, so an answer is not overdue. For an engine whose answers
   * confirm the session only later (ZooKeeper: a write proves an earlier one, see its driver),
   * suspicion counts from this, and the deadline from {@link confirmed} alone.
   */
  heard(at: number = monotonicNow()): void {
    if (at > this.heardAt) this.heardAt = at;
  }

  /**
   * The connection is down (or a keep-alive failed): validity stops advancing until the engine
   * confirms the session again; at the deadline the session is lost. With keep-alives, the next
   * one goes soon (on a new stream or connection, as the driver sees fit).
   */
  suspend(): void {
    if (this.stateNow === 'lost') return;
    this.setState('suspended');
    if (this.hooks.keepAlive) this.nextKeepAliveAt = Math.min(this.nextKeepAliveAt, monotonicNow() + Math.min(this.interval(), 100));
    this.arm();
  }

  /**
   * End the session: abort {@link signal} and every grant's signal, stop the timer, and run the
   * driver's `ended` hook (bounded). `lost` counts as `expired` once the deadline has passed.
   * Resolves when the hook settled. Idempotent.
   */
  end(how: SessionEnd, cause?: unknown): Promise<void> {
    if (this.endPromise) return this.endPromise;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const expired = how === 'expired' || (how === 'lost' && monotonicNow() >= this.validUntil());
    const reason = expired ? 'expired' : how === 'closed' ? 'closed' : 'session-lost';
    const why = cause === undefined ? undefined : { cause };
    // Set before anyone hears of the end, so that a listener calling end() gets this promise.
    this.endPromise = this.hooks.ended ? settleWithin(this.hooks.ended(how), END_WAIT_MS) : Promise.resolve();
    this.controller.abort(new LockLostError(this.name, reason, why));
    for (const { key, controller } of this.grants.values()) controller.abort(new LockLostError(key, reason, why));
    this.grants.clear();
    this.setState('lost');
    return this.endPromise;
  }

  private interval(): number {
    return this.hooks.keepAliveEveryMs ?? this.timeout / 3;
  }

  /** When an answer is overdue: `suspectAfterMs` after the last confirmation or return to `connected`. */
  private suspectAt(): number {
    return Math.max(this.confirmedAt, this.resumedAt, this.heardAt) + (this.hooks.suspectAfterMs ?? this.interval() * 2);
  }

  /** One unref'd timer: the next keep-alive, suspicion (an answer overdue), the deadline. */
  private arm(): void {
    if (this.stateNow === 'lost') return;
    if (this.timer) clearTimeout(this.timer);
    let at = this.validUntil();
    if (this.hooks.keepAlive) {
      at = Math.min(at, this.nextKeepAliveAt);
      if (this.stateNow === 'connected') at = Math.min(at, this.suspectAt());
    }
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, Math.ceil(at - monotonicNow())));
    this.timer.unref();
  }

  private onTimer(): void {
    this.timer = undefined;
    const now = monotonicNow();
    if (now >= this.validUntil()) {
      void this.end('expired');
      return;
    }
    if (this.hooks.keepAlive) {
      if (now >= this.suspectAt()) this.setState('suspended');
      if (now >= this.nextKeepAliveAt) {
        // While answers are missing, try more often, but not in a tight loop.
        this.nextKeepAliveAt = now + (this.stateNow === 'connected' ? this.interval() : Math.min(this.interval(), 100));
        try {
          this.hooks.keepAlive(now);
        } catch {
          // a failing hook is a missing answer: suspicion and the deadline take care of it
        }
      }
    }
    this.arm();
  }

  private setState(state: SessionState): void {
    if (this.stateNow === state || this.stateNow === 'lost') return;
    this.stateNow = state;
    try {
      this.hooks.onState?.(this, state);
    } catch {
      // a listener never breaks the session
    }
  }
}
