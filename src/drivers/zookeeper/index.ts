/**
 * ZooKeeper driver: fair (FIFO) locks on a ZooKeeper ensemble, the standard lock recipe, through
 * `node-zookeeper-client`. A queue engine ({@link QueueDriver}): it does the steps (enqueue, read
 * the queue, watch an entry, withdraw); the core's wait loop runs the algorithm over them.
 *
 * How: every contender creates an EPHEMERAL_SEQUENTIAL znode `<root>/locks/<key>/lock-<owner>-N`.
 * The lowest sequence holds the lock; every other contender watches only the znode just ahead of
 * it (no herd), and its own znode (from the read that found it in the queue, for as long as it
 * waits). The owner id in the name lets a create whose reply was lost with the connection find
 * its own znode instead of leaving an orphan behind.
 *
 * Guarantees:
 * - exclusion and FIFO order across processes and hosts, as far as ZooKeeper's own guarantees go
 *   (a quorum must accept every create and delete; reads are the server's view, ordered after
 *   this session's writes; watch events reach a session in the order of the changes);
 * - fencing: the token is the holder znode's creation zxid (`czxid`). Zxids are global to the
 *   ensemble and only grow (a new leader epoch raises them), and the holder is always the oldest
 *   znode in the queue, so tokens strictly increase per key, across sessions and restarts. The
 *   sequence number would not do: it belongs to the parent znode, which is deleted when the
 *   queue empties, and then restarts at 0;
 * - liveness is the session (the core's EngineSession, fed by ./session.ts): a holder that dies
 *   (or is cut off) loses its znodes when the server expires its session, `sessionTimeoutMs` after
 *   it last heard from it. Locally a grant is valid until the last contact the LEADER is known
 *   to have heard of (a write answered after a later one: see ./session.ts; a follower cut off
 *   from the leader still answers reads) plus the session timeout, minus drift, so the deadline
 *   runs about half the timeout ahead of the clock, not a whole one: disconnected, it stops
 *   advancing (`sessionState` is `suspended`) and `lease.isHeld()` turns false no later than
 *   the server could expire the session; at the deadline (or when the server reports the
 *   session expired) the session is `lost` and every `Grant.session` it carried aborts;
 * - a release survives a lost connection: while the session lives its delete is sent again once
 *   the client reconnects (to any server), and release() resolves then (false if the session
 *   ends first: its znodes go with it);
 * - handoff in about one round trip: a release deletes one znode and the next waiter's watch
 *   fires; a waiter whose predecessor was the holder takes the turn without reading the queue
 *   again, because the watch on its own znode would have told it first if that znode had gone
 *   (deleted by someone else, or with the session): ZooKeeper delivers a session's watch events
 *   in the order of the changes. A waiter whose own znode goes queues again, at the back, on the
 *   current session;
 * - waiting costs nothing while the lock does not change hands (no polling; heartbeats are per
 *   session, and only when it is otherwise idle);
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
 * - wait, retry or back off by itself: each method is one step; the core's wait loop does the rest;
 * - support sequence numbers past 2^31 per parent (ZooKeeper's counter overflows); the parent
 *   is recreated whenever a key's queue empties, which resets it.
 *
 * Client choice: node-zookeeper-client (pure JavaScript, no native build, works on every Node
 * version and platform) rather than `zookeeper` (bindings to the C client, compiled at install).
 * It lacks a read timeout, visible ping replies and container nodes; ./session.ts makes up for
 * the first two, and empty parents are deleted by hand. Its queued requests survive reconnects,
 * its watches are re-registered after them, and multi (check/create/setData/delete) is supported.
 */
import { monotonicNow } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { validateMs } from '../../core/validate.js';
import { ClosedError, InvalidArgumentError, NoSuchDatabaseError, UnavailableError, isDlockError } from '../../errors.js';
import { SessionListeners } from '../driver.js';
import type {
  Admission,
  ForceReleased,
  KeyPage,
  KeyState,
  QueuedClaim,
  AcquireRequest,
  DriverInfo,
  ExtendItem,
  GoneResult,
  Grant,
  LockState,
  QueueDriver,
  QueueEntry,
  QueueView,
  SessionSource,
  SessionState,
  TryResult,
} from '../driver.js';
import type { MarkStore } from '../id-store.js';
import type { Stat } from 'node-zookeeper-client';
import { childPrefix, encodeName, normalizeRoot, parseChild, queueOf, type Contender } from './paths.js';
import { holdersOf, sharesKey, viewAdmits } from '../../core/admission.js';
import { Code, MultiError, SessionEndedError, ZkSession, czxidOf, zkClient, zkCode, type ZnodeWatch } from './session.js';

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
  /**
   * Default true: create the root and its `locks`/`marks` parents when missing. `false` (read-only
   * tools: `dlock inspect`, `dlock ls`): never create them; reads under a missing root find no
   * locks, and a lock or mark write there throws {@link NoSuchDatabaseError}.
   */
  create?: boolean;
}

const DEFAULT_ROOT = '/dlock';
const DEFAULT_SESSION_TIMEOUT_MS = 10_000;
const DEFAULT_SPIN_DELAY_MS = 500;
const DEFAULT_CLEANUP_DELAY_MS = 1000;
const PERSISTENT = 0;
const EPHEMERAL_SEQUENTIAL = 3;
/** Attempts at a compare-and-set of a mark that concurrent raises can undo. */
const MAX_ATTEMPTS = 5;
/** How many of the first contenders inspect() reads at once (the holder may go between two reads). */
const INSPECT_READS = 4;

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
}

/** Our znode in a key's queue (what the core hands back to the driver's queue steps). */
export interface ZkEntry extends QueueEntry {
  /** @internal The session that created it (it lives as long as that session). */
  readonly session: ZkSession;
  /** The key's parent znode. */
  readonly dir: string;
  /** The znode's name under `dir`. */
  readonly name: string;
  /** Its creation zxid (the token), learnt from the reads of the znode. */
  token: bigint | undefined;
  /** @internal The watch on the znode itself: set by the first read of the queue, kept while it waits. */
  own: ZnodeWatch | undefined;
  /** Set when that watch fired: the znode went (deleted by someone, or with the session). */
  gone: boolean;
  /** @internal Told when `gone` is set (the waitGone in progress). */
  onGone: (() => void) | undefined;
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
export class ZooKeeperDriver implements QueueDriver<ZkEntry>, SessionSource, MarkStore {
  readonly kind = 'queue' as const;
  readonly info: DriverInfo = {
    name: 'zookeeper',
    liveness: 'session',
    fair: true,
    scope: 'distributed',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'fifo',
  };
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
  /** waitGone() calls in progress. */
  private watching = 0;
  private closed = false;
  private readonly cleanupDelayMs: number;
  /** Whether the root and its parents may be created (see {@link ZooKeeperDriverOptions.create}). */
  private readonly create: boolean;
  /** Key parents to delete when empty, `cleanupDelayMs` after a release. */
  private readonly sweep = new Set<string>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Our znodes in queues (not granted, not withdrawn): their parents must not be swept. */
  private readonly queued = new Set<ZkEntry>();
  /** Owners whose last create failed with the connection: it may have been applied. */
  private readonly uncertain = new Set<string>();

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
    if (options.create !== undefined && typeof options.create !== 'boolean') throw new InvalidArgumentError(`create must be a boolean, got ${typeof options.create}.`);
    this.create = options.create ?? true;
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

  /** Waits watching a znode, and watch callbacks still registered (0 and 0 when idle). */
  get waitResidue(): {
    /** Waits in progress. */
    waits: number;
    /** Watch callbacks registered on the session. */
    watchCallbacks: number;
  } {
    return { waits: this.watching, watchCallbacks: this.session?.watchCount ?? 0 };
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

  /**
   * The live session, once it has connected (requests made while it reconnects wait for it): a
   * new one when there is none (the previous one ended). The first connection may take up to the
   * session timeout (the session's deadline ends it then).
   */
  private async connected(what: string): Promise<ZkSession> {
    if (this.closed) throw new ClosedError(what);
    let s = this.session;
    // Past its deadline, but its timer has not run yet (a starved event loop): end it now.
    if (s?.engine.isOver) void s.engine.end('expired');
    if (!s || s.isEnded) {
      s = new ZkSession({
        connectionString: this.connectionString,
        sessionTimeoutMs: this.sessionTimeoutMs,
        spinDelayMs: this.spinDelayMs,
        onState: (session, state) => this.onState(session, state),
      });
      this.session = s;
    }
    await s.ready;
    return s;
  }

  private onState(s: ZkSession, state: SessionState): void {
    if (state === 'lost') {
      this.endedRequests += s.requests;
      s.requests = 0;
    }
    if (s !== this.session) return;
    this.logger?.debug?.('dlock: zookeeper session state', { state, connectionString: this.connectionString });
    this.stateListeners.emit(state);
  }

  /** The current session if it can carry requests now (never opens one). */
  private liveSession(): ZkSession | undefined {
    const s = this.session;
    return s && !s.isEnded && s.hasConnected ? s : undefined;
  }

  /** A dlock error for a failure of `what`. */
  private failure(what: string, e: unknown): Error {
    if (isDlockError(e)) return e;
    if (this.closed && e instanceof SessionEndedError && e.how === 'closed') return new ClosedError(what);
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
      if (!this.create) {
        throw new NoSuchDatabaseError(`zookeeper://${this.connectionString}${this.root}`, `the znode ${path.slice(0, path.lastIndexOf('/'))} does not exist and this driver was told to create nothing (create: false): check the root in the URL, or connect without create: false`);
      }
      await this.ensurePath(s, path.slice(0, path.lastIndexOf('/')));
      await this.ensurePath(s, path);
    }
  }

  /**
   * Join `dir`'s queue: create our EPHEMERAL_SEQUENTIAL znode (the key's parent first when it is
   * missing: a second NONODE, a parent swept again meanwhile, is an error the core retries). A
   * create that failed with the connection may still have been applied: the next call looks for
   * our own znode (its name carries the owner id) before creating again.
   */
  private async createEntry(s: ZkSession, dir: string, owner: string, admission?: Admission): Promise<ZkEntry> {
    if (this.uncertain.delete(owner)) {
      const found = await this.findOwn(s, dir, owner);
      if (found) return this.entryOf(s, dir, found);
    }
    const path = `${dir}/${childPrefix(owner, admission)}`;
    const create = (): Promise<string> =>
      s.create(path, null, EPHEMERAL_SEQUENTIAL).catch((e: unknown) => {
        if (zkCode(e) === Code.CONNECTION_LOSS) this.uncertain.add(owner);
        throw e;
      });
    let created: string;
    try {
      created = await create();
    } catch (e) {
      if (zkCode(e) !== Code.NO_NODE) throw e;
      await this.ensurePath(s, dir);
      created = await create();
    }
    return this.entryOf(s, dir, created.slice(dir.length + 1));
  }

  private entryOf(s: ZkSession, dir: string, name: string): ZkEntry {
    const seq = BigInt(name.slice(-10));
    const entry: ZkEntry = { id: `${dir}/${name}`, seq, session: s, dir, name, token: undefined, own: undefined, gone: false, onGone: undefined };
    this.queued.add(entry);
    return entry;
  }

  /** The name of `owner`'s znode under `dir`, if there is one. */
  private async findOwn(s: ZkSession, dir: string, owner: string): Promise<string | undefined> {
    try {
      return (await s.getChildren(dir)).find((c) => parseChild(c)?.owner === owner);
    } catch (e) {
      if (zkCode(e) === Code.NO_NODE) return undefined;
      throw e;
    }
  }

  /**
   * Delete our znode; resolves whether it was there. A delete that cannot reach the server is
   * sent again once the session reconnects (ZkSession.removeLater): in the background, or
   * (`across`, a release) before this resolves, `false` if the session ended first or the node
   * was gone (possibly by the lost delete itself: see removeLater). The key's
   * parent is deleted later if it is empty then.
   */
  private removeOwn(s: ZkSession, path: string, dir: string, across = false): Promise<boolean> {
    const own = s.remove(path).then(
      () => true,
      (e: unknown) => {
        if (zkCode(e) === Code.NO_NODE) return false;
        const later = s.removeLater(path);
        if (across && (s.isEnded || zkCode(e) === Code.CONNECTION_LOSS)) return later;
        later.catch(() => undefined);
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
    const s = this.liveSession();
    if (!s) return;
    const busy = new Set<string>();
    for (const e of this.queued) busy.add(e.dir);
    for (const h of this.held.values()) busy.add(h.path.slice(0, h.path.lastIndexOf('/')));
    for (const dir of this.sweep) {
      if (!busy.has(dir)) s.remove(dir).catch(() => undefined);
    }
    this.sweep.clear();
  }

  /** The queue before `entry` as `children` show it (`alive`: our znode is there, on its session). */
  private viewOf(req: AcquireRequest, entry: ZkEntry, children: readonly string[], alive: boolean, sentAt: number): QueueView {
    const queue: Contender[] = queueOf(children);
    const index = queue.findIndex((c) => c.name === entry.name);
    const mine = index >= 0 && alive;
    const ahead = queue[index - 1];
    const claim = (c: Contender): QueuedClaim => ({ id: `${entry.dir}/${c.name}`, seq: BigInt(c.seq), owner: c.owner, admission: c.admission });
    return {
      mine,
      ahead: Math.max(0, index),
      predecessor: ahead ? { id: `${entry.dir}/${ahead.name}`, seq: BigInt(ahead.seq) } : undefined,
      sentAt,
      ...(sharesKey(req) && index > 0 ? { before: queue.slice(0, index).map(claim) } : {}),
    };
  }

  /** Whether `stat` is our znode's on its live session; learns the token from it. */
  private ours(entry: ZkEntry, stat: Stat | null): boolean {
    if (!stat || entry.session.isEnded || !stat.ephemeralOwner.equals(entry.session.sessionId)) return false;
    entry.token = czxidOf(stat);
    return true;
  }

  // ------------------------------------------------------------------ contract

  /** Enqueue; keep the znode if it is first, else withdraw it before answering busy. */
  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    const what = `Trying lock "${req.key}"`;
    let entry: ZkEntry | undefined;
    try {
      const s = await this.connected(what);
      entry = await this.createEntry(s, this.lockPath(req.key), req.owner, req.admission);
      const view = await this.look(req, entry);
      const grant = view.mine && viewAdmits(req, view) ? this.grant(req, entry, view.sentAt) : null;
      if (grant) return { ok: true, grant };
    } catch (e) {
      void this.withdraw(req, entry);
      throw this.failure(what, e);
    }
    // Busy: withdraw before answering, so that the queue holds only real contenders.
    await this.withdraw(req, entry);
    return { ok: false, retryAfterMs: -1 };
  }

  /** Create our znode, then read the queue and our znode's stat (pipelined: one round trip). */
  async enqueue(req: AcquireRequest): Promise<{
    /** Our znode. */
    entry: ZkEntry;
    /** The queue before it. */
    view: QueueView;
  }> {
    const what = `Acquiring lock "${req.key}"`;
    try {
      const s = await this.connected(what);
      const entry = await this.createEntry(s, this.lockPath(req.key), req.owner, req.admission);
      return { entry, view: await this.look(req, entry) };
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /**
   * One round trip: the key's children; the first time also our znode's stat, read with a watch
   * on it that stays while the entry waits (pipelined). Later reads need no stat: that watch
   * says when our znode goes.
   */
  async look(req: AcquireRequest, entry: ZkEntry): Promise<QueueView> {
    const s = entry.session;
    const sentAt = monotonicNow();
    const gone: QueueView = { mine: false, ahead: 0, predecessor: undefined, sentAt };
    if (s.isEnded || entry.gone) return gone;
    try {
      const watching = entry.own !== undefined;
      const [children, stat] = await Promise.all([s.getChildren(entry.dir), watching ? undefined : this.watchOwn(entry)]);
      return this.viewOf(req, entry, children, watching ? !entry.gone : this.ours(entry, stat ?? null), sentAt);
    } catch (e) {
      // The key's parent is gone (so is our znode), or the session ended under the read.
      if (zkCode(e) === Code.NO_NODE || s.isEnded) return gone;
      throw this.failure(`Reading the queue of lock "${req.key}"`, e);
    }
  }

  /** Watch our own znode for as long as the entry waits: resolves its stat once the watch is set. */
  private watchOwn(entry: ZkEntry): Promise<Stat | null> {
    const own = entry.session.watch(entry.id, () => {
      entry.gone = true;
      entry.onGone?.();
    });
    entry.own = own;
    return own.ready.then(
      (stat) => {
        if (!stat) entry.own = undefined;
        return stat;
      },
      (e: unknown) => {
        // Not set (the connection dropped): the next read sets it again.
        own.cancel();
        entry.own = undefined;
        throw e;
      },
    );
  }

  /**
   * Watch the znode ahead (one request). Our own znode is watched since the read that found it
   * alive, so its going reaches this session before the predecessor's does (watch events come
   * in the order of the changes, and before any later reply).
   */
  waitGone(req: AcquireRequest, watched: QueueEntry, mine: ZkEntry, signal: AbortSignal): Promise<GoneResult> {
    return this.waitAnyGone(req, [watched], mine, signal);
  }

  /** {@link waitGone} over several znodes (a semaphore waiter: any holder that goes may admit it). */
  waitAnyGone(req: AcquireRequest, watched: readonly QueueEntry[], mine: ZkEntry, signal: AbortSignal): Promise<GoneResult> {
    const s = mine.session;
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (s.isEnded || mine.gone) return Promise.resolve('mine-gone');
    if (!mine.own) return Promise.resolve('look');
    this.watching += 1;
    return new Promise<GoneResult>((resolve, reject) => {
      let done = false;
      const finish = (result: GoneResult | Error): void => {
        if (done) return;
        done = true;
        this.watching -= 1;
        for (const w of aheads) w.cancel();
        mine.onGone = undefined;
        s.engine.signal.removeEventListener('abort', onEnded);
        signal.removeEventListener('abort', onAbort);
        if (result instanceof Error) reject(result);
        else resolve(mine.gone && result === 'gone' ? 'mine-gone' : result);
      };
      const onAbort = (): void => finish(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
      const onEnded = (): void => finish('mine-gone');
      mine.onGone = () => finish('mine-gone');
      const aheads = watched.map((w) => s.watch(w.id, () => finish('gone')));
      s.engine.signal.addEventListener('abort', onEnded, { once: true });
      signal.addEventListener('abort', onAbort, { once: true });
      for (const ahead of aheads) {
        ahead.ready.then(
          (stat) => {
            if (stat === null) finish('gone');
          },
          (e: unknown) => {
            const code = zkCode(e);
            if (s.isEnded || code === Code.SESSION_EXPIRED) finish('mine-gone');
            // The watch may not be set: read the queue again (it waits for the connection).
            else if (code === Code.CONNECTION_LOSS) finish('look');
            else finish(this.failure(`Watching the queue of lock "${req.key}"`, e));
          },
        );
      }
    });
  }

  /** The turn is ours: the grant, riding on the znode's session (null when it is no longer usable). */
  grant(req: AcquireRequest, entry: ZkEntry, sentAt: number): Grant | null {
    const s = entry.session;
    if (s.isEnded || s.engine.isOver || entry.token === undefined) return null;
    this.queued.delete(entry);
    entry.own?.cancel();
    this.held.set(req.owner, { key: req.key, path: entry.id, token: entry.token, session: s });
    return { token: entry.token, sentAt, session: s.engine.grantSignal(req.key, req.owner), validUntil: () => s.engine.validUntil() };
  }

  /**
   * Delete our znode (on its own session, or the current one when that ended: any session may
   * delete it, and the server would keep it until it expires the old one). Without an entry,
   * the znode a create lost with the connection may have made. Errors are absorbed: the
   * session's end removes the znode at the latest.
   */
  async withdraw(req: AcquireRequest, entry: ZkEntry | undefined): Promise<void> {
    if (entry) {
      this.queued.delete(entry);
      entry.own?.cancel();
    }
    const s = entry && !entry.session.isEnded ? entry.session : this.liveSession();
    if (!s) return;
    try {
      if (entry) {
        await this.removeOwn(s, entry.id, entry.dir);
      } else if (this.uncertain.delete(req.owner)) {
        const dir = this.lockPath(req.key);
        const name = await this.findOwn(s, dir, req.owner);
        if (name) await this.removeOwn(s, `${dir}/${name}`, dir);
      }
    } catch {
      // the session's end removes it
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
          if (!ok && this.held.get(it.owner) === h) {
            this.held.delete(it.owner);
            h.session.engine.forget(it.owner);
          }
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
        h.session.engine.forget(owner);
        if (h.session.isEnded) return false;
        // Sent before anything else this call could await: later requests on this session see it
        // done. Carried across a lost connection while the session lives (the node stays with it):
        // a release on a briefly cut connection completes once reconnected, not with an error.
        return await this.removeOwn(h.session, h.path, dir, true);
      }
      // Not granted through this driver: find the owner's znode on the engine.
      const s = await this.connected(what);
      const queue = queueOf(await this.childrenOf(s, dir));
      const index = queue.findIndex((c) => c.owner === owner);
      const mine = queue[index];
      if (!mine) return false;
      const wasHolder = holdersOf(queue).holders.includes(mine);
      const removed = await this.removeOwn(s, `${dir}/${mine.name}`, dir);
      return removed && wasHolder;
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** The children of a key's parent znode; none when the parent is gone (nobody queues there). */
  private async childrenOf(s: ZkSession, dir: string): Promise<string[]> {
    try {
      return await s.getChildren(dir);
    } catch (e) {
      if (zkCode(e) === Code.NO_NODE) return [];
      throw e;
    }
  }

  /**
   * The holder: the first contender still there. The holder may release between the read of the
   * children and the read of its znode, so the first few znodes are read at once (one round trip).
   */
  async inspect(key: string): Promise<LockState | null> {
    const what = `Inspecting lock "${key}"`;
    const dir = this.lockPath(key);
    try {
      const s = await this.connected(what);
      const first = queueOf(await this.childrenOf(s, dir)).slice(0, INSPECT_READS);
      if (first.length === 0) return null;
      const stats = await Promise.all(first.map((c) => s.exists(`${dir}/${c.name}`)));
      const i = stats.findIndex((st) => st !== null);
      const holder = first[i];
      const stat = stats[i];
      if (holder && stat) return { owner: holder.owner, token: czxidOf(stat), remainingMs: -1, ...(holder.admission ? { admission: holder.admission } : {}) };
      if (first.length < INSPECT_READS) return null;
      throw new Error(`the queue of ${dir} changed faster than it could be read`);
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** Every holder (the queue's admitted prefix, by the rule) with its token, and the waiters behind them. */
  async keyState(key: string): Promise<KeyState> {
    const what = `Inspecting lock "${key}"`;
    const dir = this.lockPath(key);
    try {
      const s = await this.connected(what);
      const { holders, waiting } = holdersOf(queueOf(await this.childrenOf(s, dir)));
      const stats = await Promise.all(holders.map((c) => s.exists(`${dir}/${c.name}`)));
      const out: LockState[] = [];
      holders.forEach((c, i) => {
        const st = stats[i];
        if (st) out.push({ owner: c.owner, token: czxidOf(st), remainingMs: -1, ...(c.admission ? { admission: c.admission } : {}) });
      });
      return { holders: out, waiters: waiting.length };
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /**
   * One page of held keys: the children of `<root>/locks` (ZooKeeper has no paged listing of
   * children), decoded, filtered by `prefix`, sorted; then the queues of at most `limit` of them
   * (read at once) keep those with a holder. The cursor is the last key examined.
   */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    const what = `Listing locks "${prefix}*"`;
    try {
      const s = await this.connected(what);
      const after = page.cursor;
      const keys = (await this.childrenOf(s, `${this.root}/locks`))
        .map(decodeKey)
        .filter((k): k is string => k !== undefined && k.startsWith(prefix) && (after === undefined || k > after))
        .sort();
      const examined = keys.slice(0, page.limit);
      const queues = await Promise.all(examined.map((k) => this.childrenOf(s, this.lockPath(k))));
      const held = examined.filter((_, i) => holdersOf(queueOf(queues[i] ?? [])).holders.length > 0);
      return examined.length < keys.length ? { keys: held, cursor: examined[examined.length - 1]! } : { keys: held };
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /**
   * Delete every holder's znode of `key` in one multi (any session may delete another's
   * ephemeral znode); the waiter behind watches the znode ahead of it, so it takes the turn. The
   * evicted holder's next `extend()` finds its znode gone. Tokens are creation zxids, global and
   * only growing: nothing to keep. `fence`: the highest evicted token, or for a free key the
   * parent's `pzxid` (the zxid of the last change of its children, at least every token it ever
   * carried).
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    const what = `Force-releasing lock "${key}"`;
    const dir = this.lockPath(key);
    try {
      const s = await this.connected(what);
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const { holders } = holdersOf(queueOf(await this.childrenOf(s, dir)));
        if (holders.length === 0) return { released: 0, fence: await this.childrenZxid(s, dir) };
        const stats = await Promise.all(holders.map((c) => s.exists(`${dir}/${c.name}`)));
        if (stats.some((st) => st === null)) continue; // a holder went meanwhile: read again
        try {
          await s.multi(holders.map((c) => ({ op: 'remove', path: `${dir}/${c.name}`, version: -1 }) as const));
        } catch (e) {
          if (e instanceof MultiError && e.codes.includes(Code.NO_NODE)) continue;
          throw e;
        }
        this.scheduleSweep(dir);
        const fence = stats.reduce((max, st) => (st && czxidOf(st) > max ? czxidOf(st) : max), 0n);
        return { released: holders.length, fence };
      }
      throw new Error(`the queue of ${dir} kept changing while it was force-released`);
    } catch (e) {
      throw this.failure(what, e);
    }
  }

  /** The zxid of the last change of `dir`'s children (of `<root>/locks` when `dir` is gone; 0n without either). */
  private async childrenZxid(s: ZkSession, dir: string): Promise<bigint> {
    const stat = (await s.exists(dir)) ?? (await s.exists(`${this.root}/locks`));
    return stat ? stat.pzxid.readBigInt64BE(0) : 0n;
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

/** A key from its parent znode's name (undefined for names this driver cannot have written). */
function decodeKey(name: string): string | undefined {
  try {
    return decodeURIComponent(name);
  } catch {
    return undefined;
  }
}
