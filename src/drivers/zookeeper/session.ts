/**
 * One ZooKeeper session over one `node-zookeeper-client` Client: promisified requests with a
 * timeout, the session's health (connected / suspended / lost), its local deadline, and one
 * shared watcher per znode.
 *
 * Why a wrapper: the client has no read timeout (a silent server keeps it "connected" forever),
 * hides ping replies (so it cannot say when the server last confirmed the session), fails queued
 * requests only when a socket closes, and registers one listener per watch call (more than ten
 * on one path prints a MaxListenersExceededWarning). Here:
 * - every reply to a request sent at `t` proves the session was alive on the server at `t`, so
 *   the local deadline is `lastConfirmed + timeout - drift` (the server expires a session no
 *   earlier than the session timeout after it last heard from the client);
 * - a heartbeat (`exists /`, a local read on any server) goes out when nothing was confirmed for
 *   a sixth of the timeout, in place of the client's own pings; nothing confirmed for half the
 *   timeout means the server is silent: the session is `suspended` and the socket is dropped so
 *   that the client reconnects (to another server of the ensemble) while the session still
 *   lives on the servers, as the Java client does with its read timeout;
 * - a server that accepts the TCP connection but never answers the handshake (frozen) would hold
 *   the client forever as well: an attempt gets `timeout / servers` ms, then the next server;
 * - while suspended the deadline stops advancing; when it passes, the session is `lost`.
 */
import type { Socket } from 'node:net';
import type * as zk from 'node-zookeeper-client';
import { lazyPeer } from '../../core/peer.js';
import { driftFor, monotonicNow } from '../../core/clock.js';
import type { SessionState } from '../driver.js';

/** The `node-zookeeper-client` module, loaded at the first use (MissingPeerError when absent). */
export const zkClient = lazyPeer<typeof zk>('node-zookeeper-client');

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

/** A request got no reply within the request timeout. */
export class RequestTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`ZooKeeper ${what} got no reply within ${ms} ms`);
    this.name = 'RequestTimeoutError';
  }
}

/** The session ended (expired on the server, lost locally, or closed). */
export class SessionEndedError extends Error {
  constructor(readonly why: 'expired' | 'session-lost' | 'closed', options?: { cause?: unknown }) {
    super(
      why === 'closed'
        ? 'The ZooKeeper session was closed'
        : why === 'expired'
          ? 'The ZooKeeper session passed its local deadline while disconnected'
          : 'The ZooKeeper session ended (expired on the server, or it never connected)',
      options,
    );
    this.name = 'SessionEndedError';
  }
}

/** The parts of the client's internals this wrapper needs (not in its typings). */
interface ClientInternals {
  connectionManager?: { socket?: Socket; state?: number; connect?: () => void };
}

function socketOf(client: zk.Client): Socket | undefined {
  return (client as unknown as ClientInternals).connectionManager?.socket;
}

/** The client's own states below this one are CLOSING, CLOSED, SESSION_EXPIRED, AUTH_FAILED. */
const CLIENT_DISCONNECTED = 0;

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
  | { op: 'setData'; path: string; data: Buffer; version: number };

/** Per-op error codes of a multi that failed as a whole (0 = OK). */
export class MultiError extends Error {
  constructor(readonly codes: readonly number[]) {
    super(`ZooKeeper multi failed: ${codes.join(', ')}`);
    this.name = 'MultiError';
  }
}

export interface SessionOptions {
  readonly connectionString: string;
  readonly sessionTimeoutMs: number;
  readonly spinDelayMs: number;
  /** Called once when the session ends, with why. */
  readonly onEnded: (session: ZkSession, error: SessionEndedError) => void;
  /** Called on every change of {@link ZkSession.state}. */
  readonly onState: (session: ZkSession, state: SessionState) => void;
}

type Pending = (error: Error) => void;

/** See the file header. */
export class ZkSession {
  private readonly client: zk.Client;
  /** Monotonic ms at which the newest request that the server answered was sent. */
  private lastConfirmed = Number.NEGATIVE_INFINITY;
  private timeoutMs: number;
  private current: SessionState | 'connecting' = 'connecting';
  private ended: SessionEndedError | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private heartbeatSentAt: number | undefined;
  /** When the current connection was established (silence is measured from no earlier). */
  private connectedAt = Number.NEGATIVE_INFINITY;
  /** The socket of the current connection attempt, and when it was first seen. */
  private attempt: { socket: Socket | undefined; since: number } = { socket: undefined, since: 0 };
  private readonly serverCount: number;
  private readonly pending = new Set<Pending>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly endListeners = new Set<(e: SessionEndedError) => void>();
  /** Znodes to delete once the connection is back (their delete could not reach the server). */
  private readonly orphans = new Set<string>();
  /** Requests sent for lock operations (heartbeats not counted). */
  requests = 0;
  /** Resolves once connected the first time; rejects if the session ends before. */
  readonly ready: Promise<void>;

  constructor(private readonly options: SessionOptions) {
    this.timeoutMs = options.sessionTimeoutMs;
    this.client = zkClient().createClient(options.connectionString, {
      sessionTimeout: options.sessionTimeoutMs,
      spinDelay: options.spinDelayMs,
      retries: 0,
    });
    this.ready = new Promise<void>((resolve, reject) => {
      this.client.once('connected', () => resolve());
      this.endListeners.add(reject);
    });
    // Handled by whoever awaits it; never an unhandled rejection.
    this.ready.catch(() => undefined);
    this.client.on('connected', () => this.onConnected());
    this.client.on('disconnected', () => this.onDisconnected());
    this.client.on('expired', () => this.end(new SessionEndedError('session-lost', { cause: new Error('SESSION_EXPIRED') })));
    this.client.on('authenticationFailed', () => this.end(new SessionEndedError('session-lost', { cause: new Error('AUTH_FAILED') })));
    this.client.on('error', () => undefined);
    this.serverCount = Math.max(1, options.connectionString.split(',').length);
    this.client.connect();
    this.armTicks();
  }

  /** Health checks every sixth of the (negotiated) timeout. */
  private armTicks(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.tick(), Math.max(20, Math.floor(this.timeoutMs / 6)));
    this.heartbeat.unref();
  }

  /** `connected`, `suspended` or `lost` (a session that has not connected yet is not open: `lost`). */
  get state(): SessionState {
    return this.current === 'connecting' ? 'lost' : this.current;
  }

  /** Whether the session connected at least once (it has an id). */
  get hasConnected(): boolean {
    return this.current !== 'connecting';
  }

  get isEnded(): boolean {
    return this.ended !== undefined;
  }

  /** Why the session ended, once it has. */
  get endError(): SessionEndedError | undefined {
    return this.ended;
  }

  /** The negotiated session timeout (ms). */
  get sessionTimeoutMs(): number {
    return this.timeoutMs;
  }

  /** The session id as the server knows it (8 bytes). */
  get sessionId(): Buffer {
    return this.client.getSessionId();
  }

  /**
   * The session's local deadline (monotonic ms): the send time of the newest answered request
   * plus the session timeout, minus drift. The server cannot expire the session before it.
   */
  validUntil(): number {
    return this.lastConfirmed + this.timeoutMs - driftFor(this.timeoutMs);
  }

  /** Call `listener` once when the session ends; returns an unsubscribe function. */
  onEnd(listener: (e: SessionEndedError) => void): () => void {
    if (this.ended) {
      listener(this.ended);
      return () => undefined;
    }
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** Delete `path` once connected again (a delete that failed with the connection). */
  removeLater(path: string): void {
    this.orphans.add(path);
  }

  // ------------------------------------------------------------------ requests

  create(path: string, data: Buffer | null, mode: number, late?: (path: string) => void): Promise<string> {
    return this.request<string>('create', (cb) => this.client.create(path, data ?? Buffer.alloc(0), mode, cb), late);
  }

  remove(path: string, version = -1): Promise<void> {
    return this.request<void>('delete', (cb) => this.client.remove(path, version, (e) => cb(e, undefined)));
  }

  getChildren(path: string): Promise<string[]> {
    return this.request<string[]>('getChildren', (cb) => this.client.getChildren(path, cb));
  }

  /** The node's stat, or null when it does not exist. */
  exists(path: string): Promise<zk.Stat | null> {
    return this.request<zk.Stat | null>('exists', (cb) => this.client.exists(path, (e, stat) => cb(e, stat ?? null)));
  }

  getData(path: string): Promise<{ data: Buffer; stat: zk.Stat }> {
    return this.request('getData', (cb) =>
      this.client.getData(path, (e, data, stat) => cb(e, { data: data ?? Buffer.alloc(0), stat })),
    );
  }

  setData(path: string, data: Buffer, version = -1): Promise<zk.Stat> {
    return this.request<zk.Stat>('setData', (cb) => this.client.setData(path, data, version, cb));
  }

  /** Run `ops` atomically; rejects with {@link MultiError} (per-op codes) when one fails. */
  multi(ops: readonly MultiOp[]): Promise<void> {
    return this.request<void>('multi', (cb) => {
      const t = this.client.transaction();
      for (const o of ops) {
        if (o.op === 'check') t.check(o.path, o.version);
        else if (o.op === 'create') t.create(o.path, o.data ?? Buffer.alloc(0), o.mode);
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
    });
  }

  /**
   * Wait for `path` to change or disappear: resolves `true` once it was deleted or changed (at
   * once when it does not exist). `onEvent` runs at most once. Returns a function that stops
   * listening (the server-side watch stays until it fires; it is shared by every waiter of this
   * session on that path).
   */
  watch(path: string, onEvent: () => void): { ready: Promise<boolean>; cancel: () => void } {
    let set = this.watchers.get(path);
    if (!set) {
      set = new Set();
      this.watchers.set(path, set);
    }
    let fired = false;
    const once = (): void => {
      if (fired) return;
      fired = true;
      onEvent();
    };
    set.add(once);
    const cancel = (): void => {
      const s = this.watchers.get(path);
      s?.delete(once);
      if (s?.size === 0) this.watchers.delete(path);
    };
    const ready = this.request<boolean>('getData', (cb) =>
      this.client.getData(path, this.dispatch, (e) => {
        if (e && zkCode(e) === Code.NO_NODE) cb(null, false);
        else cb(e, true);
      }),
    ).then((exists) => {
      if (!exists) {
        cancel();
        once();
      }
      return exists;
    });
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
    const path = event.getPath();
    const set = this.watchers.get(path);
    if (!set) return;
    this.watchers.delete(path);
    for (const fn of set) fn();
  };

  /**
   * Send one request through the client, with a timeout. A reply (success or a server-side error
   * such as NONODE) confirms the session as of the send time. `late` receives a result that
   * arrives after the timeout (so a create can be undone).
   */
  private request<T>(
    what: string,
    send: (cb: (e: Error | zk.Exception | null, value: T) => void) => void,
    late?: (value: T) => void,
    heartbeat = false,
  ): Promise<T> {
    if (this.ended) return Promise.reject(this.ended);
    if (!heartbeat) this.requests += 1;
    const sentAt = monotonicNow();
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail: Pending = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.pending.delete(fail);
        reject(error);
      };
      const timeoutMs = this.timeoutMs;
      const timer = setTimeout(() => fail(new RequestTimeoutError(what, timeoutMs)), timeoutMs);
      timer.unref();
      this.pending.add(fail);
      try {
        send((e, value) => {
          const code = zkCode(e);
          if (e === null || (code !== undefined && code !== Code.CONNECTION_LOSS && code !== Code.SESSION_EXPIRED)) {
            this.confirm(sentAt);
          }
          if (settled) {
            if (!e) late?.(value);
            return;
          }
          settled = true;
          clearTimeout(timer);
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

  private confirm(sentAt: number): void {
    if (sentAt > this.lastConfirmed) this.lastConfirmed = sentAt;
  }

  private setState(state: SessionState): void {
    if (this.current === state) return;
    this.current = state;
    this.options.onState(this, state);
  }

  private onConnected(): void {
    if (this.ended) return;
    const timeout = this.client.getSessionTimeout();
    const changed = timeout !== this.timeoutMs;
    this.timeoutMs = timeout;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.heartbeatSentAt = undefined;
    this.connectedAt = monotonicNow();
    // The connect reply proves the session lives, but its send time is the client's; confirm with
    // a request whose send time we know.
    this.beat();
    for (const path of [...this.orphans]) {
      this.orphans.delete(path);
      this.remove(path).catch((e: unknown) => {
        if (zkCode(e) !== Code.NO_NODE && !this.ended) this.orphans.add(path);
      });
    }
    if (changed) this.armTicks();
    this.setState('connected');
  }

  private onDisconnected(): void {
    if (this.ended || this.current === 'connecting') return;
    this.suspend();
  }

  private suspend(): void {
    this.setState('suspended');
    if (this.deadlineTimer) return;
    const arm = (): void => {
      const left = this.validUntil() - monotonicNow();
      if (left > 0) {
        this.deadlineTimer = setTimeout(arm, Math.ceil(left));
        this.deadlineTimer.unref();
      } else {
        this.deadlineTimer = undefined;
        this.end(new SessionEndedError('expired'));
      }
    };
    arm();
  }

  private tick(): void {
    if (this.ended) return;
    const now = monotonicNow();
    const socket = socketOf(this.client);
    if (this.current === 'connected') {
      this.attempt = { socket: undefined, since: now };
      if (now - Math.max(this.lastConfirmed, this.connectedAt) > this.timeoutMs / 2) {
        // The server stopped answering but the socket is open: reconnect, to another server if
        // there is one, while the session still lives (the client would wait forever).
        this.suspend();
        socket?.destroy();
      } else if (this.heartbeatSentAt === undefined && now - this.lastConfirmed >= this.timeoutMs / 6) {
        this.beat();
      }
      return;
    }
    // Connecting: give each attempt timeout/servers ms, then move on to the next server.
    if (socket !== this.attempt.socket) this.attempt = { socket, since: now };
    else if (socket && !socket.destroyed && now - this.attempt.since > this.timeoutMs / this.serverCount) socket.destroy();
  }

  private beat(): void {
    const sentAt = monotonicNow();
    this.heartbeatSentAt = sentAt;
    this.request<zk.Stat | null>('heartbeat', (cb) => this.client.exists('/', (e, stat) => cb(e, stat ?? null)), undefined, true).then(
      () => {
        if (this.heartbeatSentAt === sentAt) this.heartbeatSentAt = undefined;
      },
      () => {
        if (this.heartbeatSentAt === sentAt) this.heartbeatSentAt = undefined;
      },
    );
  }

  /** End the session for `error`: fail everything pending, notify, drop the connection. */
  end(error: SessionEndedError): void {
    if (this.ended) return;
    this.ended = error;
    this.stopTimers();
    for (const fail of [...this.pending]) fail(error);
    this.watchers.clear();
    this.setState('lost');
    for (const l of [...this.endListeners]) {
      try {
        l(error);
      } catch {
        // a listener never breaks the others
      }
    }
    this.endListeners.clear();
    this.options.onEnded(this, error);
    // Nothing more goes through this client (close() shuts a closed one down itself).
    if (error.why !== 'closed') shutDown(this.client);
  }

  /**
   * Close the session: the server deletes its ephemeral nodes at once. Waits for the server to
   * close the connection (at most `waitMs`), then drops the socket.
   */
  async close(waitMs = 2000): Promise<void> {
    if (this.ended) return;
    const socket = socketOf(this.client);
    const connected = this.current === 'connected' && socket !== undefined && !socket.destroyed;
    this.end(new SessionEndedError('closed'));
    if (connected) {
      // CLOSE_SESSION goes out after every request queued before it; the server then closes.
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      this.client.close();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
      clearTimeout(timer);
    }
    shutDown(this.client);
  }

  private stopTimers(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.heartbeat = undefined;
    this.deadlineTimer = undefined;
  }
}
