/**
 * ZooKeeper driver: fair (FIFO) locks on a ZooKeeper ensemble, the standard lock recipe, through
 * `node-zookeeper-client`.
 *
 * How: every contender creates an EPHEMERAL_SEQUENTIAL znode `<root>/locks/<key>/lock-<owner>-N`.
 * The lowest sequence holds the lock; every other contender watches only the znode just ahead of
 * it (no herd) and re-reads the queue when it goes. The owner id in the name lets a create whose
 * reply was lost with the connection find its own znode instead of leaving an orphan behind.
 *
 * Guarantees:
 * - exclusion and FIFO order across processes and hosts, as far as ZooKeeper's own guarantees go
 *   (a quorum must accept every create and delete; reads are the server's view, ordered after
 *   this session's writes);
 * - fencing: the token is the holder znode's creation zxid (`czxid`). Zxids are global to the
 *   ensemble and only grow (a new leader epoch raises them), and the holder is always the oldest
 *   znode in the queue, so tokens strictly increase per key, across sessions and restarts. The
 *   sequence number would not do: it belongs to the parent znode, which is deleted when the
 *   queue empties, and then restarts at 0;
 * - liveness is the session: a holder that dies (or is cut off) loses its znodes when the server
 *   expires its session, `sessionTimeoutMs` after it last heard from it. Locally a grant is valid
 *   until the last confirmed contact plus the session timeout, minus drift: disconnected, that
 *   deadline stops advancing (`sessionState` is `suspended`) and `lease.isHeld()` turns false no
 *   later than the server could expire the session; at the deadline (or when the server reports
 *   the session expired) the session is `lost` and every `Grant.session` it carried aborts;
 * - waiting costs nothing while the lock does not change hands: a release deletes one znode, one
 *   waiter's watch fires, and it confirms with one read (handoff in about one round trip);
 * - abandoned queues do not pile up: after a release or withdrawal the driver deletes the key's
 *   parent znode if it is empty (NOTEMPTY ignored), `cleanupDelayMs` later (so a key locked over
 *   and over does not pay two extra writes per cycle) and at close. ZooKeeper 3.5+ container
 *   znodes would do this on the server, but node-zookeeper-client 1.1.3 cannot create them (no
 *   createContainer op), so a parent stays behind only when its last contender's process dies
 *   without a release or close.
 *
 * Does not:
 * - renew anything on the server: `extend()` only confirms that each znode still exists and
 *   belongs to this session (parallel `exists`, one round trip for a batch). The core still
 *   bounds each lease by its `ttlMs` and gives the lock back when that runs out;
 * - report a remaining TTL: `inspect()` answers `remainingMs: -1` (the lock lasts as long as the
 *   holder's session);
 * - keep a waiter's place across a session loss: its znode goes with the session, so the waiter
 *   queues again, at the back, on a new session (while its wait lasts);
 * - support sequence numbers past 2^31 per parent (ZooKeeper's counter overflows); the parent
 *   is recreated whenever a key's queue empties, which resets it.
 *
 * Client choice: node-zookeeper-client (pure JavaScript, no native build, works on every Node
 * version and platform) rather than `zookeeper` (bindings to the C client, compiled at install).
 * It lacks a read timeout, visible ping replies and container nodes; ./session.ts adds the
 * first two, and empty parents are deleted by hand. Its queued requests survive reconnects, its
 * watches are re-registered after them, and multi (check/create/setData/delete) is supported.
 */
import { WaitScope, backoffMs, raceAbort } from '../../core/abort.js';
import { monotonicNow, sleep } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { validateMs } from '../../core/validate.js';
import { ClosedError, InvalidArgumentError, LockLostError, UnavailableError, isDlockError } from '../../errors.js';
import { SessionListeners } from '../driver.js';
import type {
  AcquireRequest,
  DriverInfo,
  ExtendItem,
  Grant,
  LockState,
  NativeWaitDriver,
  SessionSource,
  SessionState,
  TryResult,
  WaitContext,
} from '../driver.js';
import type { Stat } from 'node-zookeeper-client';
import { childPrefix, encodeName, normalizeRoot, queueOf, type Contender } from './paths.js';
import { Code, MultiError, SessionEndedError, ZkSession, czxidOf, zkClient, zkCode } from './session.js';

/** Options of {@link ZooKeeperDriver}. Give `url` or `connectionString`. */
export interface ZooKeeperDriverOptions {
  /**
   * `zookeeper://host:port[,host:port...][/root][?sessionTimeoutMs=...&spinDelayMs=...]`. The
   * path is where dlock keeps its znodes (like a chroot; created when missing); default `/dlock`.
   */
  url?: string;
  /** `host:port[,host:port...]`, the servers of one ensemble. */
  connectionString?: string;
  /** Parent znode of everything dlock creates; created when missing. Default `/dlock`. */
  root?: string;
  /**
   * Session timeout asked of the server, in ms (the server clamps it to its
   * min/maxSessionTimeout, by default 2 and 20 ticks). A holder that dies keeps its locks this
   * long. Also bounds how long one request or the first connection may take. Default 10,000.
   */
  sessionTimeoutMs?: number;
  /** Longest pause between two rounds of connection attempts over the ensemble, in ms. Default 500. */
  spinDelayMs?: number;
  /** How long after a key's last release its empty parent znode is deleted, in ms. Default 1000. */
  cleanupDelayMs?: number;
  /** Diagnostics (session state changes); silent when omitted. */
  logger?: Logger;
}

const DEFAULT_ROOT = '/dlock';
const DEFAULT_SESSION_TIMEOUT_MS = 10_000;
const DEFAULT_SPIN_DELAY_MS = 500;
const DEFAULT_CLEANUP_DELAY_MS = 1000;
const PERSISTENT = 0;
const EPHEMERAL_SEQUENTIAL = 3;
/** Attempts at one step that a concurrent change can undo (a parent deleted under a create...). */
const MAX_ATTEMPTS = 5;

/** What `zookeeper://` URLs carry. */
export interface ParsedZooKeeperUrl {
  /** `host:port,host:port,...` for the ZooKeeper client. */
  readonly connectionString: string;
  /** The znode under which dlock keeps its locks (the URL path; default `/dlock`). */
  readonly root: string;
  /** From `sessionTimeoutMs=N`. */
  readonly sessionTimeoutMs?: number;
  /** From `spinDelayMs=N`. */
  readonly spinDelayMs?: number;
}

/**
 * Parse `zookeeper://host:port[,host:port...][/root][?sessionTimeoutMs=N&spinDelayMs=N]`.
 * @throws InvalidArgumentError on a malformed URL or an unknown query option.
 */
export function parseZooKeeperUrl(url: string): ParsedZooKeeperUrl {
  const m = /^zookeeper:\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?$/i.exec(url);
  const usage = 'use zookeeper://host:port[,host:port...][/root][?sessionTimeoutMs=10000]';
  if (!m) throw new InvalidArgumentError(`"${url}" is not a ZooKeeper URL: ${usage}.`);
  const hosts = (m[1] ?? '').split(',').filter((h) => h.length > 0);
  if (hosts.length === 0) throw new InvalidArgumentError(`"${url}" names no server: ${usage}.`);
  for (const h of hosts) {
    const hp = /^([A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(h);
    if (!hp || (hp[2] !== undefined && (Number(hp[2]) < 1 || Number(hp[2]) > 65535))) {
      throw new InvalidArgumentError(`"${url}": "${h}" is not host:port (${usage}).`);
    }
  }
  const path = decodeURIComponent(m[2] ?? '');
  let root = DEFAULT_ROOT;
  if (path !== '' && path !== '/') {
    const r = normalizeRoot(path);
    if (!r) throw new InvalidArgumentError(`"${url}": "${path}" is not a valid znode path for the root.`);
    root = r;
  }
  const out: { connectionString: string; root: string; sessionTimeoutMs?: number; spinDelayMs?: number } = {
    connectionString: hosts.map((h) => (h.includes(':') ? h : `${h}:2181`)).join(','),
    root,
  };
  for (const [name, value] of new URLSearchParams(m[3] ?? '')) {
    if (name !== 'sessionTimeoutMs' && name !== 'spinDelayMs') {
      throw new InvalidArgumentError(`"${url}": unknown option "${name}" (known: sessionTimeoutMs, spinDelayMs).`);
    }
    out[name] = validateMs(name, /^\d+$/.test(value) ? Number(value) : Number.NaN, 1, 0);
  }
  return out;
}

/** One lock this driver granted and has not released. */
interface Held {
  readonly key: string;
  readonly path: string;
  readonly token: bigint;
  readonly session: ZkSession;
  readonly controller: AbortController;
}

/** A contender's znode. */
interface Node {
  readonly name: string;
  readonly path: string;
}

/** A read of a key's queue: the contenders in order, our index (-1: not there), our stat when asked. */
interface QueueRead {
  readonly queue: Contender[];
  readonly index: number;
  readonly stat: Stat | null | undefined;
}

/**
 * Locks on ZooKeeper. See the file header for what it guarantees.
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { ZooKeeperDriver } from 'dlock/zookeeper';
 *
 * const locks = new LockClient(new ZooKeeperDriver({ url: 'zookeeper://zk1:2181,zk2:2181,zk3:2181/myapp?sessionTimeoutMs=10000' }));
 * await locks.using('orders:42', async (lease) => {
 *   await db.write(order, { fence: lease.token }); // czxid of our znode: reject lower tokens
 * });
 * await locks.close();
 * ```
 */
export class ZooKeeperDriver implements NativeWaitDriver, SessionSource {
  /** Transitional: this driver still waits by itself (being ported to its kind). */
  readonly kind = 'native' as const;
  readonly info: DriverInfo = { name: 'zookeeper', liveness: 'session', fair: true, scope: 'distributed' };
  /** Parent znode of everything this driver creates. */
  readonly root: string;
  /** The servers, `host:port,...`. */
  readonly connectionString: string;
  private readonly sessionTimeoutMs: number;
  private readonly spinDelayMs: number;
  private readonly logger: Logger | undefined;
  private session: ZkSession | undefined;
  private readonly held = new Map<string, Held>();
  private readonly stateListeners = new SessionListeners();
  private endedRequests = 0;
  private waiting = 0;
  private closed = false;
  private requeued = 0;
  private readonly cleanupDelayMs: number;
  /** Key parents to delete when empty, `cleanupDelayMs` after a release. */
  private readonly sweep = new Set<string>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Key parents under which this driver has a contender right now (count per parent). */
  private readonly busyDirs = new Map<string, number>();

  constructor(options: ZooKeeperDriverOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('ZooKeeperDriver options must be an object such as { url: "zookeeper://127.0.0.1:2181" }.');
    }
    zkClient(); // MissingPeerError (npm install node-zookeeper-client) here rather than at the first lock
    let parsed: Partial<ParsedZooKeeperUrl> = {};
    if (options.url !== undefined) {
      if (typeof options.url !== 'string') throw new InvalidArgumentError('ZooKeeperDriver url must be a string.');
      parsed = parseZooKeeperUrl(options.url);
    } else if (typeof options.connectionString !== 'string' || options.connectionString.trim() === '') {
      throw new InvalidArgumentError('ZooKeeperDriver needs url ("zookeeper://host:port") or connectionString ("host:port,host:port").');
    }
    this.connectionString = parsed.connectionString ?? (options.connectionString ?? '').trim();
    const root = options.root ?? parsed.root ?? DEFAULT_ROOT;
    const normalized = typeof root === 'string' ? normalizeRoot(root) : undefined;
    if (!normalized) throw new InvalidArgumentError(`ZooKeeperDriver root must be an absolute znode path such as "/dlock", got ${JSON.stringify(root)}.`);
    this.root = normalized;
    this.sessionTimeoutMs = validateMs('sessionTimeoutMs', options.sessionTimeoutMs ?? parsed.sessionTimeoutMs, 1, DEFAULT_SESSION_TIMEOUT_MS);
    this.spinDelayMs = validateMs('spinDelayMs', options.spinDelayMs ?? parsed.spinDelayMs, 0, DEFAULT_SPIN_DELAY_MS);
    this.cleanupDelayMs = validateMs('cleanupDelayMs', options.cleanupDelayMs, 0, DEFAULT_CLEANUP_DELAY_MS);
    this.logger = options.logger;
  }

  // ------------------------------------------------------------------ session

  /** The current session's state; `lost` before the first session opens and after close. */
  get sessionState(): SessionState {
    return this.session?.state ?? 'lost';
  }

  onSessionState(listener: (state: SessionState) => void): () => void {
    return this.stateListeners.add(listener);
  }

  /** The current session's id in hex as ZooKeeper prints it (`srvr`, `cons`, logs); undefined before it connects. */
  get sessionId(): string | undefined {
    const s = this.session;
    if (!s || s.isEnded || !s.hasConnected) return undefined;
    return s.sessionId.readBigUInt64BE(0).toString(16);
  }

  /** Requests sent to ZooKeeper for lock operations so far (session heartbeats not counted). */
  get requestCount(): number {
    return this.endedRequests + (this.session?.requests ?? 0);
  }

  /** Times a wait queued again because the session carrying its znode ended (see the header). */
  get requeuedWaits(): number {
    return this.requeued;
  }

  /** Waits in progress and watch callbacks still registered (0 and 0 when idle). */
  get waitResidue(): {
    /** Waits in progress. */
    waits: number;
    /** Watch callbacks registered on the session. */
    watchCallbacks: number;
  } {
    return { waits: this.waiting, watchCallbacks: this.session?.watchCount ?? 0 };
  }

  /** The znode under which `key`'s contenders queue. */
  lockPath(key: string): string {
    return `${this.root}/locks/${encodeName(key)}`;
  }

  /** The znode that keeps `key`'s high-water mark. */
  markPath(key: string): string {
    return `${this.root}/marks/${encodeName(key)}`;
  }

  /**
   * Open the session now and wait until it is connected (optional: the first operation does it).
   * @throws UnavailableError when no server answers within the session timeout.
   */
  async connect(): Promise<void> {
    try {
      await this.connected('Connecting to ZooKeeper');
    } catch (e) {
      throw this.failure(`Connecting to ZooKeeper at ${this.connectionString}`, e);
    }
  }

  /** The live session, opened when there is none (the previous one ended). */
  private sessionNow(what: string): ZkSession {
    if (this.closed) throw new ClosedError(what);
    if (!this.session || this.session.isEnded) {
      this.session = new ZkSession({
        connectionString: this.connectionString,
        sessionTimeoutMs: this.sessionTimeoutMs,
        spinDelayMs: this.spinDelayMs,
        onEnded: (s, e) => this.onSessionEnded(s, e),
        onState: (s, state) => {
          if (s !== this.session) return;
          this.logger?.debug?.('dlock: zookeeper session state', { state, connectionString: this.connectionString });
          this.stateListeners.emit(state);
        },
      });
    }
    return this.session;
  }

  /**
   * A session that has connected at least once (requests made while it reconnects wait for it).
   * The first connection may take up to the session timeout, and no longer than `signal` allows.
   */
  private async connected(what: string, signal?: AbortSignal): Promise<ZkSession> {
    const s = this.sessionNow(what);
    if (s.hasConnected) return s;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = new Error(`no connection to ${this.connectionString} within ${this.sessionTimeoutMs} ms`);
        s.end(new SessionEndedError('session-lost', { cause: e }));
        reject(e);
      }, this.sessionTimeoutMs);
    });
    try {
      const ready = Promise.race([s.ready, timeout]);
      await (signal ? raceAbort(ready, signal) : ready);
      return s;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Abort every grant the session carried. They stay known until released, so that a release
   * answers false at once (the znodes go with the session) instead of opening a new session.
   */
  private onSessionEnded(s: ZkSession, e: SessionEndedError): void {
    this.endedRequests += s.requests;
    s.requests = 0;
    for (const h of this.held.values()) {
      if (h.session === s) h.controller.abort(new LockLostError(h.key, e.why, { cause: e }));
    }
  }

  /** A dlock error for a failure of `what`. */
  private failure(what: string, e: unknown): Error {
    if (isDlockError(e)) return e;
    if (this.closed && e instanceof SessionEndedError && e.why === 'closed') return new ClosedError(what);
    return new UnavailableError(what, { cause: e });
  }

  // ------------------------------------------------------------------ znodes

  /** Create `path` (and its parents) as persistent znodes; existing ones are fine. */
  private async ensurePath(s: ZkSession, path: string): Promise<void> {
    try {
      await s.create(path, null, PERSISTENT);
    } catch (e) {
      const code = zkCode(e);
      if (code === Code.NODE_EXISTS) return;
      if (code !== Code.NO_NODE) throw e;
      await this.ensurePath(s, path.slice(0, path.lastIndexOf('/')));
      await this.ensurePath(s, path);
    }
  }

  /**
   * Join `dir`'s queue: create our EPHEMERAL_SEQUENTIAL znode. A create that fails with a lost
   * connection may still have been applied: look for our own znode (its name carries the owner
   * id) before creating again. A create whose reply comes after its timeout is deleted.
   */
  private async enqueue(s: ZkSession, dir: string, owner: string): Promise<Node> {
    const prefix = childPrefix(owner);
    let lastError: unknown;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        const path = await s.create(`${dir}/${prefix}`, null, EPHEMERAL_SEQUENTIAL, (late) => this.removeQuietly(s, late, dir));
        return { path, name: path.slice(dir.length + 1) };
      } catch (e) {
        lastError = e;
        const code = zkCode(e);
        if (code === Code.NO_NODE) {
          // The key's parent does not exist yet, or an empty queue's parent was just deleted.
          await this.ensurePath(s, dir);
        } else if (code === Code.CONNECTION_LOSS) {
          const mine = (await s.getChildren(dir).catch(() => [] as string[])).find((c) => c.startsWith(prefix) && /^\d{10}$/.test(c.slice(prefix.length)));
          if (mine) return { path: `${dir}/${mine}`, name: mine };
        } else {
          throw e;
        }
      }
    }
    throw lastError;
  }

  /**
   * Delete our znode; resolves whether it was there. A delete that cannot reach the server is
   * retried once the session reconnects (see ZkSession). The key's parent is deleted later if
   * it is empty then.
   */
  private removeOwn(s: ZkSession, path: string, dir: string): Promise<boolean> {
    const own = s.remove(path).then(
      () => true,
      (e: unknown) => {
        if (zkCode(e) === Code.NO_NODE) return false;
        if (!s.isEnded) s.removeLater(path);
        throw e;
      },
    );
    this.scheduleSweep(dir);
    return own;
  }

  private scheduleSweep(dir: string): void {
    this.sweep.add(dir);
    if (this.sweepTimer || this.closed) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      this.sweepNow();
    }, this.cleanupDelayMs);
    this.sweepTimer.unref();
  }

  /**
   * Delete the empty parents of keys released since the last sweep (NOTEMPTY and NONODE ignored;
   * a contender that loses its parent under a create makes it again). Parents under which this
   * driver still has a contender wait for its release.
   */
  private sweepNow(): void {
    const s = this.session;
    if (!s || s.isEnded) return;
    const busy = new Set(this.busyDirs.keys());
    for (const h of this.held.values()) busy.add(h.path.slice(0, h.path.lastIndexOf('/')));
    for (const dir of this.sweep) {
      if (!busy.has(dir)) s.remove(dir).catch(() => undefined);
    }
    this.sweep.clear();
  }

  /** Count `dir` busy while `work` runs (its parent must not be swept meanwhile). */
  private async busy<T>(dir: string, work: () => Promise<T>): Promise<T> {
    this.busyDirs.set(dir, (this.busyDirs.get(dir) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const n = (this.busyDirs.get(dir) ?? 1) - 1;
      if (n > 0) this.busyDirs.set(dir, n);
      else this.busyDirs.delete(dir);
    }
  }

  /** {@link removeOwn} in the background, errors absorbed (the session's end removes it anyway). */
  private removeQuietly(s: ZkSession, path: string, dir: string): void {
    this.removeOwn(s, path, dir).catch(() => undefined);
  }

  /** Read `dir`'s queue and, the first time, our znode's stat (for the token). Pipelined: one round trip. */
  private async readQueue(s: ZkSession, dir: string, node: Node, withStat: boolean): Promise<QueueRead> {
    const [children, stat] = await Promise.all([s.getChildren(dir), withStat ? s.exists(node.path) : Promise.resolve(undefined)]);
    const queue = queueOf(children);
    return { queue, index: queue.findIndex((c) => c.name === node.name), stat };
  }

  private grant(s: ZkSession, key: string, owner: string, node: Node, token: bigint, sentAt: number): Grant {
    const controller = new AbortController();
    this.held.set(owner, { key, path: node.path, token, session: s, controller });
    return { token, sentAt, session: controller.signal, validUntil: () => s.validUntil() };
  }

  /** Resolve once `path` is gone (or changed), reject when `signal` aborts or the session ends. */
  private waitGone(s: ZkSession, path: string, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let finished = false;
      const finish = (settle: () => void): void => {
        if (finished) return;
        finished = true;
        watch.cancel();
        offEnd();
        signal.removeEventListener('abort', onAbort);
        settle();
      };
      const onAbort = (): void => finish(() => reject(signal.reason as Error));
      const watch = s.watch(path, () => finish(resolve));
      const offEnd = s.onEnd((e) => finish(() => reject(e)));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      watch.ready.then(
        () => undefined,
        // A lost connection leaves no watch behind: read the queue again once reconnected.
        (e: Error) => finish(() => (zkCode(e) === Code.CONNECTION_LOSS ? resolve() : reject(e))),
      );
    });
  }

  // ------------------------------------------------------------------ contract

  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    const what = `Trying lock "${req.key}"`;
    try {
      const s = await this.connected(what);
      const dir = this.lockPath(req.key);
      return await this.busy(dir, () => this.tryOnce(s, req, dir));
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** Enqueue; keep the znode if it is first, else withdraw it before answering busy. */
  private async tryOnce(s: ZkSession, req: AcquireRequest, dir: string): Promise<TryResult> {
    const node = await this.enqueue(s, dir, req.owner);
    let first: { token: bigint; sentAt: number } | undefined;
    try {
      const sentAt = monotonicNow();
      const { index, stat } = await this.readQueue(s, dir, node, true);
      if (index === 0 && stat) first = { token: czxidOf(stat), sentAt };
    } catch (e) {
      this.removeQuietly(s, node.path, dir);
      throw e;
    }
    if (first) return { ok: true, grant: this.grant(s, req.key, req.owner, node, first.token, first.sentAt) };
    // Busy: withdraw before answering, so that the queue holds only real contenders.
    await this.removeOwn(s, node.path, dir).catch(() => false);
    return { ok: false, retryAfterMs: -1 };
  }

  /** Wait until granted (the grant) or the deadline (`null`); rejects with the wait signal's reason when it aborts. */
  async acquire(req: AcquireRequest, wait: WaitContext): Promise<Grant | null> {
    const what = `Acquiring lock "${req.key}"`;
    const scope = new WaitScope([wait.signal], wait.deadline, monotonicNow());
    // The last failure of a session (never connected, or ended while we queued): reported as
    // unavailability if the wait runs out before a session carries us again.
    let lastError: unknown;
    let connectedOnce = false;
    this.waiting += 1;
    try {
      for (let attempt = 0; ; attempt++) {
        let session: ZkSession | undefined;
        try {
          session = await this.connected(what, scope.signal);
          connectedOnce = true;
          lastError = undefined;
          const s = session;
          return await this.busy(this.lockPath(req.key), () => this.queueAndWait(s, req, scope.signal));
        } catch (e) {
          // The session that carried our place ended (cut off past its deadline, expired on the
          // server, or it never connected): the znode went with it. Like the try-set drivers'
          // wait, start over on a new session, with backoff, while the wait lasts.
          if (scope.signal.aborted || this.closed || (session && !session.isEnded)) throw e;
          lastError = e;
          if (session) this.requeued += 1;
          this.logger?.debug?.('dlock: zookeeper session ended while waiting; queueing again', { key: req.key, error: e });
          await sleep(backoffMs(attempt), scope.signal);
        }
      }
    } catch (e) {
      if (scope.timedOut) {
        if (connectedOnce && lastError === undefined) return null;
        throw new UnavailableError(`${what}: no ZooKeeper session before the wait ran out`, { cause: lastError ?? e });
      }
      if (wait.signal.aborted) throw wait.signal.reason;
      throw this.failure(what, e);
    } finally {
      this.waiting -= 1;
      scope.dispose();
    }
  }

  /** Enqueue, then wait for every znode ahead to go; withdraw on any failure or abort. */
  private async queueAndWait(s: ZkSession, req: AcquireRequest, signal: AbortSignal): Promise<Grant> {
    const dir = this.lockPath(req.key);
    // If the wait ends while the create is in flight, the znode it makes is withdrawn when it comes.
    const node = await raceAbort(this.enqueue(s, dir, req.owner), signal, (late) => this.removeQuietly(s, late.path, dir));
    try {
      let token: bigint | undefined;
      for (;;) {
        const sentAt = monotonicNow();
        let read: QueueRead;
        try {
          read = await raceAbort(this.readQueue(s, dir, node, token === undefined), signal);
        } catch (e) {
          // Reads are safe to repeat: after a lost connection, read again once reconnected.
          if (zkCode(e) === Code.CONNECTION_LOSS && !signal.aborted) continue;
          throw e;
        }
        if (read.stat) token = czxidOf(read.stat);
        if (read.index < 0 || read.stat === null || token === undefined) {
          throw new Error(`our znode ${node.path} is gone (deleted by someone else, or the session ended)`);
        }
        if (read.index === 0) return this.grant(s, req.key, req.owner, node, token, sentAt);
        const ahead = read.queue[read.index - 1];
        if (ahead) await this.waitGone(s, `${dir}/${ahead.name}`, signal);
      }
    } catch (e) {
      this.removeQuietly(s, node.path, dir);
      throw e;
    }
  }

  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    try {
      // One exists per znode, all sent at once: one round trip for the batch. Each must still be
      // the znode we were granted (same czxid) and belong to this very session.
      return await Promise.all(
        items.map(async (it) => {
          const h = this.held.get(it.owner);
          if (!h || h.key !== it.key || h.session.isEnded) return false;
          const stat = await h.session.exists(h.path);
          const ok = stat !== null && czxidOf(stat) === h.token && stat.ephemeralOwner.equals(h.session.sessionId);
          if (!ok && this.held.get(it.owner) === h) this.held.delete(it.owner);
          return ok;
        }),
      );
    } catch (e) {
      throw this.failure('Confirming held ZooKeeper locks', e);
    }
  }

  async release(key: string, owner: string): Promise<boolean> {
    const what = `Releasing lock "${key}"`;
    const dir = this.lockPath(key);
    try {
      const h = this.held.get(owner);
      if (h && h.key === key) {
        this.held.delete(owner);
        if (h.session.isEnded) return false;
        // Sent before anything else this call could await: later requests on this session see it done.
        return await this.removeOwn(h.session, h.path, dir);
      }
      // Not granted through this driver: find the owner's znode on the engine.
      const s = await this.connected(what);
      let children: string[];
      try {
        children = await s.getChildren(dir);
      } catch (e) {
        if (zkCode(e) === Code.NO_NODE) return false;
        throw e;
      }
      const queue = queueOf(children);
      const index = queue.findIndex((c) => c.owner === owner);
      const mine = queue[index];
      if (!mine) return false;
      const removed = await this.removeOwn(s, `${dir}/${mine.name}`, dir);
      return removed && index === 0;
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  async inspect(key: string): Promise<LockState | null> {
    const what = `Inspecting lock "${key}"`;
    const dir = this.lockPath(key);
    try {
      const s = await this.connected(what);
      // The holder may release between the two reads: read again (a few times at most).
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        let children: string[];
        try {
          children = await s.getChildren(dir);
        } catch (e) {
          if (zkCode(e) === Code.NO_NODE) return null;
          throw e;
        }
        const first = queueOf(children)[0];
        if (!first) return null;
        const stat = await s.exists(`${dir}/${first.name}`);
        if (stat) return { owner: first.owner, token: czxidOf(stat), remainingMs: -1 };
      }
      throw new Error(`the queue of ${dir} kept changing while it was read`);
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** The durable high-water mark of `key` (worker-id leases); 0n when none was written. */
  async readMark(key: string): Promise<bigint> {
    const what = `Reading the mark of "${key}"`;
    try {
      const s = await this.connected(what);
      try {
        const { data } = await s.getData(this.markPath(key));
        return data.length === 0 ? 0n : BigInt(data.toString('utf8'));
      } catch (e) {
        if (zkCode(e) === Code.NO_NODE) return 0n;
        throw e;
      }
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** Raise the mark of `key` to `mark` while `owner` holds it; false when it no longer holds it. */
  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    const what = `Raising the mark of "${key}"`;
    try {
      const s = await this.connected(what);
      const holder = await this.holderPath(s, key, owner);
      if (!holder) return false;
      const markPath = this.markPath(key);
      // Compare-and-set on the mark's version, in one multi with a check that our znode (the
      // holder) still exists; a concurrent raise moves the version: read again.
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        let current = 0n;
        let version: number | undefined;
        try {
          const { data, stat } = await s.getData(markPath);
          current = data.length === 0 ? 0n : BigInt(data.toString('utf8'));
          version = stat.version;
        } catch (e) {
          if (zkCode(e) !== Code.NO_NODE) throw e;
        }
        const next = mark > current ? mark : current;
        const check = { op: 'check', path: holder, version: -1 } as const;
        try {
          if (version === undefined) {
            await s.multi([check, { op: 'create', path: markPath, data: Buffer.from(next.toString()), mode: PERSISTENT }]);
          } else if (next !== current) {
            await s.multi([check, { op: 'setData', path: markPath, data: Buffer.from(next.toString()), version }]);
          } else {
            return (await s.exists(holder)) !== null;
          }
          return true;
        } catch (e) {
          if (!(e instanceof MultiError)) throw e;
          if (e.codes[0] === Code.NO_NODE) return false;
          if (e.codes[1] === Code.NO_NODE) await this.ensurePath(s, `${this.root}/marks`);
          else if (e.codes[1] !== Code.BAD_VERSION && e.codes[1] !== Code.NODE_EXISTS) throw e;
        }
      }
      throw new Error(`the mark ${markPath} kept changing while it was raised`);
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** The znode through which `owner` holds `key` now, or undefined. */
  private async holderPath(s: ZkSession, key: string, owner: string): Promise<string | undefined> {
    const h = this.held.get(owner);
    if (h && h.key === key && h.session === s) return h.path;
    const dir = this.lockPath(key);
    try {
      const first = queueOf(await s.getChildren(dir))[0];
      return first?.owner === owner ? `${dir}/${first.name}` : undefined;
    } catch (e) {
      if (zkCode(e) === Code.NO_NODE) return undefined;
      throw e;
    }
  }

  /**
   * Close the session: the server deletes every znode it created at once (locks held through
   * this driver are freed and their `Grant.session` aborts with reason `closed`). Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    // Queued ahead of the session's close, so that they still go out.
    this.sweepNow();
    const s = this.session;
    if (s) await s.close();
    this.stateListeners.clear();
  }
}
