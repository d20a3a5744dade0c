/**
 * One etcd lease, kept alive, as the session that carries an etcd driver's locks (the idea of
 * etcd's `concurrency.Session`): every key a driver creates is attached to it, so when the lease
 * ends, etcd deletes them all at once.
 *
 * The keep-alive is hand-written on etcd3's raw lease RPCs (grant, the bidirectional keep-alive
 * stream, revoke) rather than etcd3's `Lease` class, because a lock's validity depends on it and
 * that class (etcd3 1.1.2) tracks the last keep-alive by `Date.now()` (a wall-clock step moves it)
 * at the time the answer ARRIVED, reports a loss only after 2 x TTL, and leaves ref'd retry timers
 * behind after it is closed. Here:
 * - each answer is matched to the send time of its request (the stream answers in order), so
 *   `validUntil()` = that send time + the TTL etcd granted - drift, on the monotonic clock, never
 *   exceeds what the server grants;
 * - the session is declared lost at that deadline, even while the network hangs;
 * - one unref'd timer drives keep-alives (every TTL/3), suspicion and the deadline; nothing is left
 *   running after `end()`.
 */
import type { Etcd3, ILeaseKeepAliveResponse } from 'etcd3';
import { driftFor, monotonicNow } from '../../core/clock.js';
import { LockLostError } from '../../errors.js';
import type { SessionState } from '../driver.js';
import { stopStream } from './connections.js';

/** How a session ended. */
export type SessionEnd = 'expired' | 'lost' | 'closed';

type KeepAliveStream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;

/** See the file header. */
export class LeaseSession {
  private stateNow: SessionState = 'connected';
  private readonly controller = new AbortController();
  /** Monotonic send time of the last request the server answered with a live lease. */
  private confirmedAt: number;
  /** When the next keep-alive is due. */
  private nextKeepAliveAt: number;
  private stream: Promise<KeepAliveStream> | undefined;
  /** Send times of keep-alives in flight on the current stream, oldest first. */
  private fired: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ended: Promise<void> | undefined;
  /** One signal per grant this session carries (see {@link grantSignal}). */
  private readonly grants = new Map<string, { key: string; controller: AbortController }>();

  /**
   * Grant a lease of `ttlS` seconds and keep it alive. Rejects when the grant fails.
   * `onState` hears every later state change.
   */
  static async open(
    client: Etcd3,
    ttlS: number,
    callTimeoutMs: number,
    onState: (s: LeaseSession, state: SessionState) => void,
  ): Promise<LeaseSession> {
    const sentAt = monotonicNow();
    const res = await client.leaseClient.leaseGrant({ TTL: ttlS }, { deadline: Date.now() + callTimeoutMs });
    // etcd raises a TTL below its minimum: what it granted is what counts.
    const granted = Number(res.TTL) > 0 ? Number(res.TTL) : ttlS;
    const session = new LeaseSession(client, res.ID, granted * 1000, sentAt, callTimeoutMs, onState);
    session.arm();
    return session;
  }

  private constructor(
    private readonly client: Etcd3,
    /** The lease id (decimal string, as etcd3 reports it in key metadata). */
    readonly id: string,
    /** The TTL etcd granted, in ms. */
    readonly ttlMs: number,
    sentAt: number,
    private readonly callTimeoutMs: number,
    private readonly onState: (s: LeaseSession, state: SessionState) => void,
  ) {
    this.confirmedAt = sentAt;
    this.nextKeepAliveAt = sentAt + this.interval();
  }

  /** `connected`, `suspended` (keep-alives unanswered, deadline not reached) or `lost`. */
  get state(): SessionState {
    return this.stateNow;
  }

  /** Aborted when the session ends, with a {@link LockLostError} ('expired' or 'session-lost'). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The local deadline (monotonic ms): last confirmed send time + lease TTL - drift. */
  validUntil(): number {
    return this.confirmedAt + this.ttlMs - driftFor(this.ttlMs);
  }

  /**
   * The `Grant.session` of one grant: aborted with a {@link LockLostError} naming `key` when the
   * session ends. One per grant (not the session's own signal) so that the listener the core adds
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

  /** The lease id as `etcdctl lease list` shows it. */
  get hexId(): string {
    return BigInt(this.id).toString(16);
  }

  /**
   * End the session: abort {@link signal} and stop the keep-alive. On `expired` and `closed`,
   * revoke the lease (best effort, bounded) so that etcd frees its keys now rather than at its TTL.
   * Resolves when the revoke settled. Idempotent.
   */
  end(how: SessionEnd, cause?: unknown): Promise<void> {
    if (this.ended) return this.ended;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.dropStream();
    const expired = how === 'expired' || (how === 'lost' && monotonicNow() >= this.validUntil());
    const reason = expired ? 'expired' : 'session-lost';
    const why = cause === undefined ? undefined : { cause };
    // Set before anyone hears of the end, so that a listener calling end() gets this promise.
    this.ended =
      how === 'lost'
        ? Promise.resolve()
        : this.client.leaseClient.leaseRevoke({ ID: this.id }, { deadline: Date.now() + Math.min(this.callTimeoutMs, 2000) }).then(
            () => undefined,
            () => undefined,
          );
    this.controller.abort(new LockLostError(`etcd lease ${this.hexId}`, reason, why));
    for (const { key, controller } of this.grants.values()) controller.abort(new LockLostError(key, reason, why));
    this.grants.clear();
    this.setState('lost');
    return this.ended;
  }

  /** Keep-alives go every TTL/3 (as etcd's Go client does). */
  private interval(): number {
    return this.ttlMs / 3;
  }

  /** One unref'd timer: the next keep-alive, suspicion (an answer overdue), the deadline. */
  private arm(): void {
    if (this.stateNow === 'lost') return;
    if (this.timer) clearTimeout(this.timer);
    const suspectAt = this.confirmedAt + (this.interval() * 2);
    const at = Math.min(this.nextKeepAliveAt, this.validUntil(), this.stateNow === 'connected' ? suspectAt : Number.POSITIVE_INFINITY);
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
    if (now >= this.confirmedAt + this.interval() * 2) this.setState('suspended');
    if (now >= this.nextKeepAliveAt) {
      this.keepAlive(now);
      // While answers are missing, try more often (a new stream after a failure), but not in a loop.
      this.nextKeepAliveAt = now + (this.stateNow === 'connected' ? this.interval() : Math.min(this.interval(), 100));
    }
    this.arm();
  }

  private keepAlive(sentAt: number): void {
    const stream = this.openStream();
    this.fired.push(sentAt);
    stream.then(
      (s) => {
        if (this.stream === stream) s.write({ ID: this.id });
      },
      () => undefined,
    );
  }

  private openStream(): Promise<KeepAliveStream> {
    if (this.stream) return this.stream;
    const stream = this.client.leaseClient.leaseKeepAlive();
    this.stream = stream;
    this.fired = [];
    stream.then(
      (s) => {
        if (this.stream !== stream) {
          stopStream(s);
          return;
        }
        s.on('data', (res: ILeaseKeepAliveResponse) => this.answered(stream, res));
        s.on('error', () => this.streamFailed(stream));
        s.on('end', () => this.streamFailed(stream));
      },
      () => this.streamFailed(stream),
    );
    return stream;
  }

  private answered(stream: Promise<KeepAliveStream>, res: ILeaseKeepAliveResponse): void {
    if (this.stream !== stream || this.stateNow === 'lost') return;
    const sentAt = this.fired.shift();
    if (Number(res.TTL) <= 0) {
      // etcd no longer knows the lease: it expired there (or was revoked), with every key on it.
      void this.end('lost', new Error(`etcd reports lease ${this.hexId} expired or revoked`));
      return;
    }
    if (sentAt === undefined) return;
    if (sentAt > this.confirmedAt) this.confirmedAt = sentAt;
    this.setState('connected');
    this.arm();
  }

  private streamFailed(stream: Promise<KeepAliveStream>): void {
    if (this.stream !== stream) return;
    this.dropStream();
    if (this.stateNow === 'lost') return;
    this.setState('suspended');
    // Retry soon on a new stream (etcd3 may pick another member).
    this.nextKeepAliveAt = Math.min(this.nextKeepAliveAt, monotonicNow() + Math.min(this.interval(), 100));
    this.arm();
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = undefined;
    this.fired = [];
    stream?.then(
      (s) => stopStream(s),
      () => undefined,
    );
  }

  private setState(state: SessionState): void {
    if (this.stateNow === state || this.stateNow === 'lost') return;
    this.stateNow = state;
    try {
      this.onState(this, state);
    } catch {
      // a listener never breaks the session
    }
  }
}
