/**
 * One etcd lease as the session that carries an etcd driver's locks (the idea of etcd's
 * `concurrency.Session`): every key a driver creates is attached to it, so when the lease ends,
 * etcd deletes them all at once. The core's {@link EngineSession} keeps its state, its local
 * deadline, the signals of the grants it carries and the one timer; this file only grants the
 * lease, sends the keep-alives it asks for, and revokes the lease when it ends.
 *
 * The keep-alive is hand-written on etcd3's raw lease RPCs (grant, the bidirectional keep-alive
 * stream, revoke) rather than etcd3's `Lease` class, because a lock's validity depends on it and
 * that class (etcd3 1.1.2) tracks the last keep-alive by `Date.now()` (a wall-clock step moves it)
 * at the time the answer ARRIVED, reports a loss only after 2 x TTL, and leaves ref'd retry timers
 * behind after it is closed. Here each answer is matched to the send time of its request (the
 * stream answers in order), so the session's deadline (that send time + the TTL etcd granted -
 * drift, on the monotonic clock) never exceeds what the server grants. A failed stream suspends
 * the session; the next keep-alive opens a new stream (etcd3 may pick another member).
 */
import type { Etcd3, ILeaseKeepAliveResponse } from 'etcd3';
import { monotonicNow } from '../../core/clock.js';
import { EngineSession, type SessionEnd } from '../../core/session.js';
import type { SessionState } from '../driver.js';
import { stopStream } from './connections.js';

type KeepAliveStream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;

/** See the file header. */
export class LeaseSession {
  /** The core's session: state, local deadline, grant signals, the timer. */
  readonly session: EngineSession;
  private stream: Promise<KeepAliveStream> | undefined;
  /** Send times of keep-alives in flight on the current stream, oldest first. */
  private fired: number[] = [];

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
    return new LeaseSession(client, res.ID, granted * 1000, sentAt, callTimeoutMs, onState);
  }

  private constructor(
    private readonly client: Etcd3,
    /** The lease id (decimal string, as etcd3 reports it in key metadata). */
    readonly id: string,
    ttlMs: number,
    sentAt: number,
    private readonly callTimeoutMs: number,
    onState: (s: LeaseSession, state: SessionState) => void,
  ) {
    this.session = new EngineSession(`etcd lease ${this.hexId}`, ttlMs, sentAt, {
      keepAlive: (at) => this.keepAlive(at),
      ended: (how) => this.ended(how),
      onState: (_, state) => onState(this, state),
    });
  }

  /** The lease id as `etcdctl lease list` shows it. */
  get hexId(): string {
    return BigInt(this.id).toString(16);
  }

  /** See {@link EngineSession.state}. */
  get state(): SessionState {
    return this.session.state;
  }

  /** End the session (see {@link EngineSession.end}); resolves once the revoke settled. */
  end(how: SessionEnd, cause?: unknown): Promise<void> {
    return this.session.end(how, cause);
  }

  /**
   * The session ended: stop the keep-alive; unless etcd already dropped the lease, revoke it
   * (bounded) so that etcd frees its keys now rather than at its TTL.
   */
  private async ended(how: SessionEnd): Promise<void> {
    this.dropStream();
    if (how === 'lost') return;
    await this.client.leaseClient.leaseRevoke({ ID: this.id }, { deadline: Date.now() + Math.min(this.callTimeoutMs, 2000) }).catch(() => undefined);
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
    if (this.stream !== stream) return;
    const sentAt = this.fired.shift();
    if (Number(res.TTL) <= 0) {
      // etcd no longer knows the lease: it expired there (or was revoked), with every key on it.
      void this.session.end('lost', new Error(`etcd reports lease ${this.hexId} expired or revoked`));
      return;
    }
    if (sentAt !== undefined) this.session.confirmed(sentAt);
  }

  private streamFailed(stream: Promise<KeepAliveStream>): void {
    if (this.stream !== stream) return;
    this.dropStream();
    this.session.suspend();
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
}
