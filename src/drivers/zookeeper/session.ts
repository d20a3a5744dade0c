/**
 * One ZooKeeper session over one `node-zookeeper-client` Client. The core's {@link EngineSession}
 * keeps its state (connected / suspended / lost), its local deadline, the signals of the grants it
 * carries and the one timer; this file turns the client's events and replies into what that
 * session needs, and makes up for what the client lacks.
 *
 * When the ensemble last kept the session alive (the local deadline) is not what the client
 * shows: in an ensemble, sessions are expired by the LEADER, which hears of a client connected to
 * a follower only through that follower's answers to its pings (every tickTime/2, carrying the
 * sessions that sent anything since the last one). A follower cut off from the leader goes on
 * answering its clients' pings and reads for up to syncLimit × tickTime, while the leader expires
 * their sessions and grants their locks to others: a reply to a read proves nothing (the
 * partition suite's "2/1 split" case saw a holder believe in its lock ~2 s after the majority
 * had granted it to the waiter). What proves it, and how the deadline is computed:
 * - only a successful WRITE (create, remove, multi) went through the leader; a follower forwards
 *   it on the same TCP stream as its ping answers, so when the leader handled a write W2, it had
 *   received every ping answer the follower sent before forwarding it;
 * - a write W1 answered at `r1` touched the session on the follower before `r1`; if W2 was sent
 *   at least {@link PING_SPACING} of the timeout after `r1`, the follower answered a ping (they
 *   come every tickTime/2, and ZooKeeper negotiates a timeout of at least 2 × tickTime: its
 *   minSessionTimeout, which this relies on) between the two, and that answer carried W1's touch:
 *   the leader keeps the session until at least W1's send time + timeout. So W2's reply confirms
 *   W1's send time (`confirmed(s1)`), never its own ({@link LeaderTouches});
 * - a heartbeat that is a write (a multi with one `check` of `/`: a transaction without effect)
 *   goes out a sixth of the timeout after the last write's reply (or send, if later) when nothing
 *   else writes (the session's keep-alive hook): each proves the one two before it, so the
 *   confirmed send time trails the clock by about half the timeout (the deadline is that
 *   much nearer than a whole timeout ahead), and a session cut off from the quorum ends locally
 *   before the leader can expire it;
 * - a reconnection's handshake renews the session on the leader (a follower revalidates it
 *   there) as of when contact was lost, which is confirmed once a write on that connection went
 *   through: a leader that lost its quorum still revalidates sessions until it steps down, and
 *   stepping down closes its connections, so the write proves it was the leader then.
 * What the client lacks besides, and how it is made up for:
 * - it has no read timeout (a silent server keeps it "connected" forever, its requests pending):
 *   no write answered for two thirds of the timeout makes the session `suspended` (the session's
 *   suspicion, counted from the last answer, `heard`, not from the confirmation it gave, which
 *   trails it by a third of the timeout or more), and then the socket is dropped so that the client reconnects, to another server
 *   of the ensemble, while the session still lives there (as the Java client does);
 * - a server that accepts the TCP connection but never answers the handshake (frozen) would hold
 *   the client forever as well: an attempt gets `timeout / servers` ms, then the next server;
 * - it fails queued requests only when a socket closes: the session's end fails them all;
 * - it registers one listener per watch call (more than ten on one path print a
 *   MaxListenersExceededWarning): one dispatcher per session, callbacks per path here;
 * - it keeps a partial reply frame across a reconnect (its `pendingBuffer` is never cleared when
 *   a socket closes), so a connection reset in the middle of a reply makes it misread the next
 *   connection's bytes and throw from its socket handler ("Unknown code: ...", an uncaught
 *   exception that ends the host process; upstream issues alexguan/node-zookeeper-client#23,
 *   #70): the frame is dropped when its socket closes, and a reply it cannot parse drops the
 *   socket (the client reconnects) instead of throwing (see {@link guardFraming}).
 * Requests need no timeout of their own: a silent connection is dropped (what was sent then fails
 * with CONNECTION_LOSS), and what waits for a connection fails when the session ends, at its
 * local deadline at the latest, also before the first connection (no server within the timeout).
 */
import type { Socket } from 'node:net';
import type * as zk from 'node-zookeeper-client';
import { lazyPeer } from '../../core/peer.js';
import { settleWithin } from '../../core/abort.js';
import { monotonicNow } from '../../core/clock.js';
import { EngineSession, type SessionEnd } from '../../core/session.js';
import type { SessionState } from '../driver.js';

/** The `node-zookeeper-client` module, loaded at the first session (MissingPeerError when absent). */
export const zkClient = lazyPeer<typeof zk>('node-zookeeper-client');

/** How long {@link ZkSession.removeLater} waits before it sends again on a connection not yet reported lost. */
const RECONNECT_CHECK_MS = 20;

/** ZooKeeper error codes the driver handles. */
export const Code = {
  CONNECTION_LOSS: -4,
  NO_NODE: -101,
  BAD_VERSION: -103,
  NODE_EXISTS: -110,
  NOT_EMPTY: -111,
  SESSION_EXPIRED: -112,
} as const;

/** The ZooKeeper error code of `e`, or undefined when it is not a ZooKeeper exception. */
export function zkCode(e: unknown): number | undefined {
  if (e instanceof zkClient().Exception) return e.getCode();
  return undefined;
}

/** The session ended: what its pending and later requests fail with. */
export class SessionEndedError extends Error {
  constructor(
    readonly how: SessionEnd,
    message: string,
  ) {
    super(message);
    this.name = 'SessionEndedError';
  }
}

/** The parts of the client's internals this wrapper needs (not in its typings). */
interface ClientInternals {
  connectionManager?: {
    socket?: Socket;
    state?: number;
    connect?: () => void;
    pendingBuffer?: Buffer | null;
    onSocketData?: (buffer: Buffer) => void;
    onSocketClosed?: (...args: unknown[]) => void;
  };
}

/**
 * See the file header: a partial frame never outlives its socket, and an unparsable reply drops
 * the connection rather than throwing from a socket handler. Installed before the first
 * connect (the client binds these methods to each new socket when it connects).
 */
function guardFraming(client: zk.Client): void {
  const cm = (client as unknown as ClientInternals).connectionManager;
  const onData = cm?.onSocketData;
  const onClosed = cm?.onSocketClosed;
  if (!cm || !onData || !onClosed) return;
  cm.onSocketClosed = function (this: typeof cm, ...args: unknown[]) {
    this.pendingBuffer = null;
    onClosed.apply(this, args);
  };
  cm.onSocketData = function (this: typeof cm, buffer: Buffer) {
    try {
      onData.call(this, buffer);
    } catch {
      this.pendingBuffer = null;
      this.socket?.destroy();
    }
  };
}

function socketOf(client: zk.Client): Socket | undefined {
  return (client as unknown as ClientInternals).connectionManager?.socket;
}

/** The client's own states below this one are CLOSING, CLOSED, SESSION_EXPIRED, AUTH_FAILED. */
const CLIENT_DISCONNECTED = 0;
/** Bound on how long close() waits for the server to close the connection. */
const CLOSE_WAIT_MS = 1500;

/**
 * Stop a client for good. Its reconnect logic treats a socket that closes in some states as a
 * reason to reconnect, forever, and a reconnect timer may still be pending: disable `connect`
 * first, then close (when it is not closed already) and drop the socket.
 */
function shutDown(client: zk.Client): void {
  const cm = (client as unknown as ClientInternals).connectionManager;
  if (cm) cm.connect = () => undefined;
  if (cm?.state === undefined || cm.state >= CLIENT_DISCONNECTED) {
    try {
      client.close();
    } catch {
      // already closing
    }
  }
  cm?.socket?.destroy();
}

/** Creation zxid of a znode as a bigint (zxids are positive signed 64-bit integers). */
export function czxidOf(stat: zk.Stat): bigint {
  return stat.czxid.readBigInt64BE(0);
}

/** One operation of a multi. */
export type MultiOp =
  | { op: 'check'; path: string; version: number }
  | { op: 'create'; path: string; data: Buffer | null; mode: number }
  | { op: 'setData'; path: string; data: Buffer; version: number }
  | { op: 'remove'; path: string; version: number };

/** Per-op error codes of a multi that failed as a whole (0 = OK). */
export class MultiError extends Error {
  constructor(readonly codes: readonly number[]) {
    super(`ZooKeeper multi failed: ${codes.join(', ')}`);
    this.name = 'MultiError';
  }
}

/**
 * The spacing, as a fraction of the session timeout, between a write's reply and a later write's
 * send that guarantees a follower ping answer between the two (pings come every tickTime/2, and
 * tickTime ≤ timeout / 2: ZooKeeper's minSessionTimeout is 2 × tickTime unless lowered). A third,
 * not a quarter: slack for a ping that arrives late.
 */
export const PING_SPACING = 1 / 3;

/**
 * Which send time the reply of a write proves the session alive at on the leader (see the file
 * header): the send time of the latest earlier write answered at least `spacingMs()` before
 * this one was sent. Pure bookkeeping (no clock of its own), so it is unit-tested alone.
 */
export class LeaderTouches {
  /** Answered writes, oldest first; a later query never needs one older than its answer. */
  private writes: Array<{ sentAt: number; repliedAt: number }> = [];

  constructor(private readonly spacingMs: () => number) {}

  /** A write sent at `sentAt` was answered at `repliedAt`: the send time now proven, if any. */
  answered(sentAt: number, repliedAt: number): number | undefined {
    const spacing = this.spacingMs();
    let at = -1;
    for (let i = 0; i < this.writes.length; i++) {
      const w = this.writes[i];
      if (w && w.repliedAt <= sentAt - spacing) at = i;
    }
    const proven = at >= 0 ? this.writes[at]?.sentAt : undefined;
    if (at > 0) this.writes = this.writes.slice(at);
    const last = this.writes.at(-1);
    // Many writes within a sliver of the spacing prove nearly the same: keep the first of them
    // (bounds the list to about 16 per spacing; a proof is then at most that sliver older).
    if (!last || repliedAt - last.repliedAt >= spacing / 16) this.writes.push({ sentAt, repliedAt });
    return proven;
  }

  /** Forget what was answered (a new connection: the old server's touches say nothing of the new one's). */
  reset(): void {
    this.writes = [];
  }
}

export interface SessionOptions {
  readonly connectionString: string;
  readonly sessionTimeoutMs: number;
  readonly spinDelayMs: number;
  /** Called on every change of {@link ZkSession.state} once the session has connected. */
  readonly onState: (session: ZkSession, state: SessionState) => void;
}

/** A watch on one znode: `ready` resolves its stat (null: it does not exist) once it is set. */
export interface ZnodeWatch {
  readonly ready: Promise<zk.Stat | null>;
  cancel(): void;
}

/** See the file header. */
export class ZkSession {
  private readonly client: zk.Client;
  /** The core's session: state, local deadline, grant signals, the timer. */
  readonly engine: EngineSession;
  private connectedOnce = false;
  /** Whether the client has a connection now (it may still be silent). */
  private connectedNow = false;
  /** When contact was last lost (or the client created): a handshake after it renewed the session. */
  private lostContactAt: number;
  private beating = false;
  /** Which send time each write's reply proves the session alive at on the leader. */
  private readonly touches = new LeaderTouches(() => this.engine.timeoutMs * PING_SPACING);
  /**
   * Monotonic time of the latest write's send or successful reply, whichever came later
   * (heartbeats included). An idle heartbeat goes timeout/6 after it: timed from the previous
   * reply, each heartbeat proves the one two before it (spacing timeout/3, see
   * {@link LeaderTouches}); timed from the previous send, it missed that by the round trip and
   * proved the one three before, so the confirmations of an idle session lagged up to 2/3 of the
   * timeout: the suspicion's bound, and the session flapped and ended (seen after a move away
   * from a frozen server).
   */
  private lastWriteAt: number;
  /** When contact was lost before the current connection's handshake, until a write confirms it. */
  private handshakeAt: number | undefined;
  /** The socket of the current connection attempt, and when it was first seen. */
  private attempt: { socket: Socket | undefined; since: number } = { socket: undefined, since: 0 };
  private readonly serverCount: number;
  private endError: SessionEndedError | undefined;
  private readonly pending = new Set<(error: Error) => void>();
  private readonly watchers = new Map<string, Set<() => void>>();
  /**
   * Znodes to delete once the connection is back (their delete could not reach the server), each
   * with whoever waits for that delete and whether it is on the wire now.
   */
  private readonly orphans = new Map<string, { settle: Array<(outcome: boolean | Error) => void>; sending: boolean }>();
  /** Requests sent for lock operations (heartbeats not counted). */
  requests = 0;
  /** Resolves once connected the first time; rejects if the session ends before. */
  readonly ready: Promise<void>;

  constructor(private readonly options: SessionOptions) {
    const timeoutMs = options.sessionTimeoutMs;
    this.lostContactAt = monotonicNow();
    this.lastWriteAt = this.lostContactAt;
    this.client = zkClient().createClient(options.connectionString, { sessionTimeout: timeoutMs, spinDelay: options.spinDelayMs, retries: 0 });
    guardFraming(this.client);
    this.engine = new EngineSession(`ZooKeeper session on ${options.connectionString}`, timeoutMs, this.lostContactAt, {
      keepAlive: (now) => this.keepAlive(now),
      keepAliveEveryMs: Math.max(20, timeoutMs / 24),
      suspectAfterMs: (timeoutMs * 2) / 3,
      ended: (how) => this.ended(how),
      onState: (_, state) => this.onEngineState(state),
    });
    // Not connected yet: the deadline runs from now (no server within the timeout ends it).
    this.engine.suspend();
    this.ready = new Promise<void>((resolve, reject) => {
      this.client.once('connected', () => resolve());
      this.engine.signal.addEventListener('abort', () => reject(this.endError ?? (this.engine.signal.reason as Error)), { once: true });
    });
    // Handled by whoever awaits it; never an unhandled rejection.
    this.ready.catch(() => undefined);
    this.client.on('connected', () => this.onConnected());
    this.client.on('disconnected', () => this.onDisconnected());
    this.client.on('expired', () => void this.engine.end('lost', new Error('ZooKeeper reports the session expired')));
    this.client.on('authenticationFailed', () => void this.engine.end('lost', new Error('ZooKeeper refused the authentication')));
    this.client.on('error', () => undefined);
    this.serverCount = Math.max(1, options.connectionString.split(',').length);
    this.client.connect();
  }

  /** `connected`, `suspended` or `lost` (a session that has not connected yet is not open: `lost`). */
  get state(): SessionState {
    return this.connectedOnce ? this.engine.state : 'lost';
  }

  /** Whether the session connected at least once (it has an id). */
  get hasConnected(): boolean {
    return this.connectedOnce;
  }

  get isEnded(): boolean {
    return this.engine.state === 'lost';
  }

  /** The session id as the server knows it (8 bytes). */
  get sessionId(): Buffer {
    return this.client.getSessionId();
  }

  /**
   * Delete `path` once connected again: its delete failed with the connection (CONNECTION_LOSS)
   * while the session lives, and the server keeps the session, and the node, meanwhile. Sent to
   * whichever server the client reconnects to. Resolves `true` once deleted, `false` when the
   * node was not there or the session ended first (its ephemeral nodes go with it, at its local
   * deadline at the latest); rejects with any other error of the delete. Not there is `false`
   * even though the lost delete may itself have been applied before its reply was lost:
   * ZooKeeper cannot tell that from someone else's delete (an operator's forceRelease), and
   * `false` is the safe answer for a release. One entry per path,
   * whoever asks: no listener per delete (thousands of aborted waits during an outage add none).
   */
  removeLater(path: string): Promise<boolean> {
    if (this.isEnded) return Promise.resolve(false);
    return new Promise<boolean>((resolve, reject) => {
      const settle = (outcome: boolean | Error): void => (outcome instanceof Error ? reject(outcome) : resolve(outcome));
      const entry = this.orphans.get(path);
      if (entry) entry.settle.push(settle);
      else this.orphans.set(path, { settle: [settle], sending: false });
      this.sendOrphanSoon(path);
    });
  }

  /** A request can fail with its connection before the client reports it lost: look again in a moment. */
  private sendOrphanSoon(path: string): void {
    if (this.connectedNow) setTimeout(() => this.connectedNow && this.sendOrphan(path), RECONNECT_CHECK_MS).unref();
  }

  private sendOrphan(path: string): void {
    const entry = this.orphans.get(path);
    if (!entry || entry.sending) return;
    entry.sending = true;
    const done = (outcome: boolean | Error): void => {
      this.orphans.delete(path);
      for (const settle of entry.settle) settle(outcome);
    };
    this.remove(path).then(
      () => done(true),
      (e: unknown) => {
        entry.sending = false;
        if (zkCode(e) === Code.NO_NODE || this.isEnded) done(false);
        else if (zkCode(e) !== Code.CONNECTION_LOSS) done(e as Error);
        else this.sendOrphanSoon(path); // otherwise at the next 'connected'
      },
    );
  }

  /** Close the session: the server deletes its ephemeral nodes at once (see {@link ended}). */
  close(): Promise<void> {
    return this.engine.end('closed');
  }

  // ------------------------------------------------------------------ requests

  create(path: string, data: Buffer | null, mode: number): Promise<string> {
    return this.request<string>((cb) => this.client.create(path, data ?? Buffer.alloc(0), mode, cb), 'write');
  }

  remove(path: string, version = -1): Promise<void> {
    return this.request<void>((cb) => this.client.remove(path, version, (e) => cb(e, undefined)), 'write');
  }

  getChildren(path: string): Promise<string[]> {
    return this.request<string[]>((cb) => this.client.getChildren(path, cb));
  }

  /** The node's stat, or null when it does not exist. */
  exists(path: string): Promise<zk.Stat | null> {
    return this.request<zk.Stat | null>((cb) => this.client.exists(path, (e, stat) => cb(e, stat ?? null)));
  }

  getData(path: string): Promise<{ data: Buffer; stat: zk.Stat }> {
    return this.request((cb) => this.client.getData(path, (e, data, stat) => cb(e, { data: data ?? Buffer.alloc(0), stat })));
  }

  /** Run `ops` atomically; rejects with {@link MultiError} (per-op codes) when one fails. */
  multi(ops: readonly MultiOp[]): Promise<void> {
    return this.request<void>((cb) => {
      const t = this.client.transaction();
      for (const o of ops) {
        if (o.op === 'check') t.check(o.path, o.version);
        else if (o.op === 'create') t.create(o.path, o.data ?? Buffer.alloc(0), o.mode);
        else if (o.op === 'remove') t.remove(o.path, o.version);
        else t.setData(o.path, o.data, o.version);
      }
      t.commit((error, results: unknown) => {
        if (!error) {
          cb(null, undefined);
          return;
        }
        const codes = Array.isArray(results) ? results.map((r: { err?: number }) => r.err ?? 0) : [];
        cb(codes.length > 0 ? new MultiError(codes) : error, undefined);
      });
    }, 'write');
  }

  /**
   * Watch `path` for its deletion (or a change), in the same request that reads its stat: `ready`
   * resolves the stat once the watch is set, or null when the znode does not exist (then no watch
   * is set and `onEvent` is not called). `onEvent` runs at most once. `cancel()` stops listening
   * (the server-side watch stays until it fires; it is shared by every waiter of this session on
   * that path).
   */
  watch(path: string, onEvent: () => void): ZnodeWatch {
    let set = this.watchers.get(path);
    if (!set) {
      set = new Set();
      this.watchers.set(path, set);
    }
    const once = (): void => {
      cancel();
      onEvent();
    };
    set.add(once);
    const cancel = (): void => {
      const s = this.watchers.get(path);
      s?.delete(once);
      if (s?.size === 0) this.watchers.delete(path);
    };
    const ready = this.request<zk.Stat | null>((cb) =>
      this.client.getData(path, this.dispatch, (e, _data, stat) => {
        if (e && zkCode(e) === Code.NO_NODE) cb(null, null);
        else cb(e, stat);
      }),
    );
    ready.then(
      (stat) => {
        if (!stat) cancel();
      },
      () => cancel(),
    );
    return { ready, cancel };
  }

  /** Callbacks waiting on watches (for residue checks). */
  get watchCount(): number {
    let n = 0;
    for (const s of this.watchers.values()) n += s.size;
    return n;
  }

  /** One function for every watch of this session, so the client keeps one listener per path. */
  private readonly dispatch = (event: zk.Event): void => {
    const set = this.watchers.get(event.getPath());
    if (!set) return;
    for (const fn of [...set]) fn();
  };

  /**
   * Send one request through the client. The successful reply of a write (or of the heartbeat,
   * a write too) confirms the session as of an earlier write's send time (see the file header);
   * a read's reply confirms nothing.
   */
  private request<T>(send: (cb: (e: Error | zk.Exception | null, value: T) => void) => void, kind: 'read' | 'write' | 'heartbeat' = 'read'): Promise<T> {
    if (this.endError) return Promise.reject(this.endError);
    if (kind !== 'heartbeat') this.requests += 1;
    const sentAt = monotonicNow();
    if (kind !== 'read') this.lastWriteAt = sentAt;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        this.pending.delete(fail);
        reject(error);
      };
      this.pending.add(fail);
      try {
        send((e, value) => {
          if (e === null && kind !== 'read') {
            const repliedAt = monotonicNow();
            // Idle heartbeats are timed from this reply, not from the send: see keepAlive.
            if (repliedAt > this.lastWriteAt) this.lastWriteAt = repliedAt;
            if (this.connectedNow) this.engine.heard(repliedAt);
            const proven = this.touches.answered(sentAt, repliedAt);
            if (this.handshakeAt !== undefined) this.engine.confirmed(this.handshakeAt);
            this.handshakeAt = undefined;
            if (proven !== undefined) this.engine.confirmed(proven);
          }
          if (settled) return;
          settled = true;
          this.pending.delete(fail);
          // The client's exceptions are Errors at run time (its typings say otherwise).
          if (e) reject(e instanceof Error ? e : new Error(e.toString()));
          else resolve(value);
        });
      } catch (e) {
        fail(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  // ------------------------------------------------------------------ health

  /** The session's keep-alive hook: a heartbeat when idle; while connecting, move past a frozen server. */
  private keepAlive(now: number): void {
    const socket = socketOf(this.client);
    if (this.connectedNow) {
      this.attempt = { socket: undefined, since: now };
      if (!this.beating && now - this.lastWriteAt >= this.engine.timeoutMs / 6) this.beat();
      return;
    }
    if (socket !== this.attempt.socket) this.attempt = { socket, since: now };
    else if (socket && !socket.destroyed && now - this.attempt.since > this.engine.timeoutMs / this.serverCount) socket.destroy();
  }

  private beat(): void {
    this.beating = true;
    const done = (): void => {
      this.beating = false;
    };
    // A transaction without effect: a write, so the leader handles it (see the file header).
    this.request<void>((cb) => this.client.transaction().check('/', -1).commit((e) => cb(e, undefined)), 'heartbeat').then(done, done);
  }

  private onEngineState(state: SessionState): void {
    // Suspected while the client still has a connection: the server went silent. Drop the socket
    // so that the client reconnects (to another server) while the session still lives.
    if (state === 'suspended' && this.connectedNow) socketOf(this.client)?.destroy();
    if (this.connectedOnce) this.options.onState(this, state);
  }

  private onConnected(): void {
    if (this.isEnded) return;
    this.connectedNow = true;
    if (!this.connectedOnce) {
      this.connectedOnce = true;
      this.engine.retime(this.client.getSessionTimeout());
    }
    // The handshake renewed the session on the leader as of when we lost contact (or started):
    // confirmed once a write on this connection went through (see the file header).
    this.handshakeAt = this.lostContactAt;
    this.touches.reset();
    this.beat();
    for (const path of [...this.orphans.keys()]) this.sendOrphan(path);
  }

  private onDisconnected(): void {
    if (this.isEnded || !this.connectedNow) return;
    this.connectedNow = false;
    this.handshakeAt = undefined;
    this.lostContactAt = monotonicNow();
    this.engine.suspend();
  }

  /**
   * The session's `ended` hook: fail everything pending, forget the watches, and stop the client
   * (on close, after the server closed the connection: CLOSE_SESSION goes out after every request
   * queued before it, and the server deletes the session's ephemeral znodes at once).
   */
  private async ended(how: SessionEnd): Promise<void> {
    const message =
      how === 'closed'
        ? 'The ZooKeeper session was closed'
        : !this.connectedOnce
          ? `No ZooKeeper server of ${this.options.connectionString} answered within ${this.engine.timeoutMs} ms`
          : how === 'expired'
            ? 'The ZooKeeper session passed its local deadline while disconnected'
            : 'The ZooKeeper session ended (expired on the server)';
    this.endError = new SessionEndedError(how, message);
    for (const fail of [...this.pending]) fail(this.endError);
    for (const { settle } of this.orphans.values()) for (const give of settle) give(false);
    this.orphans.clear();
    this.watchers.clear();
    const socket = socketOf(this.client);
    if (how === 'closed' && this.connectedNow && socket && !socket.destroyed) {
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      this.client.close();
      await settleWithin(closed, CLOSE_WAIT_MS);
    }
    shutDown(this.client);
  }
}
