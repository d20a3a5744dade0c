/**
 * etcd driver: fair (FIFO) locks on an etcd v3 cluster, through `etcd3` (gRPC), the way etcd's own
 * `clientv3/concurrency` Mutex works. A queue engine ({@link QueueDriver}): it does the steps
 * (enqueue, read the queue, watch an entry, withdraw); the core's wait loop runs the algorithm.
 *
 * Guarantees:
 * - Liveness by one etcd lease per driver (its session: the core's EngineSession, kept alive by
 *   ./session.ts): every key it creates is attached to that lease, so the locks of a process that
 *   dies are freed by etcd when the lease's TTL runs out (`leaseTtlS`). When the lease is lost
 *   (etcd says it is gone, or its local deadline passes while keep-alives go unanswered), every
 *   grant it carried is told at once (`Grant.session` aborts) and the next acquisition opens a
 *   new lease.
 * - Queue: each acquisition creates its own key `<prefix>lock/<key>/<owner>` (the owner id is
 *   unique per acquisition, so several owners of one driver queue independently) in one
 *   transaction (create revision compare = 0) that also reads the newest keys: the lowest create
 *   revision under the lock's prefix holds the lock (an uncontended acquire is one round trip).
 *   A waiter watches the key created just before its own, and its own key, for deletion (no herd:
 *   a release wakes exactly one waiter); grants follow arrival order across processes and hosts
 *   (`info.fair`). `tryAcquire` is one transaction that creates the key only when nobody holds or
 *   waits (a compare over the whole prefix), so it never barges and leaves nothing to withdraw.
 * - Handoff in about one round trip: a waiter whose predecessor was the holder takes the turn
 *   when the predecessor's deletion arrives, without reading the queue again: its own key was
 *   read alive (attached to its lease) after both watches were in place, the watches share one
 *   stream whose events come in revision order (its own key going would be seen first), and the
 *   grant is refused once the lease is past its local deadline, which comes before etcd could
 *   expire it. So no grant rides on a key that is gone (etcd issue #11456: a lock granted after
 *   its lease had expired). A waiter whose own key goes (deleted by someone else, or with its
 *   lease) enqueues again, at the back.
 * - Fencing: the token is the holder key's create revision, which only grows (it is etcd's global
 *   revision). {@link EtcdDriver.fenceCompare} gives a compare to put in your own etcd transaction
 *   so that a write lands only while the lease still holds the lock.
 * - Linearizable: every read and write goes through the Raft leader; a minority partition grants
 *   nothing.
 *
 * Does not:
 * - free a dead process's locks before its lease TTL (`leaseTtlS`, default 10 s; etcd raises TTLs
 *   below its minimum, ceil(1.5 x election timeout), e.g. 2 s with default server settings);
 * - keep the queue position of a waiter whose lease was lost: it enqueues again, at the end;
 * - let etcd bound a lock by `ttlMs`: a holder's key lives as long as its lease. The core gives a
 *   lock back when its lease runs out locally (`ttlMs` without a renewal, `maxHoldMs`), and a
 *   renewal (`extend`) confirms in one read that each key still exists with this driver's lease;
 * - poll: a waiter sends nothing while its predecessor holds (keep-alives are per driver, not
 *   per waiter); a failed watch stream makes waiters read the queue again and watch again;
 * - wait, retry or back off by itself: each method is one step; the core's wait loop does the
 *   rest (the id-store operations `raiseMark` and `allocateRange` retry their compare-and-set
 *   when another writer moved the value).
 */
import type { Etcd3, IKeyValue, IRequestOp, ITxnResponse, ICompare } from 'etcd3';
import { etcd3 } from './peer.js';
import { settleWithin } from '../../core/abort.js';
import { holdersOf, sharesKey, viewAdmits } from '../../core/admission.js';
import { monotonicNow } from '../../core/clock.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError, IdsExhaustedError, InvalidArgumentError, OutOfRangeError, UnavailableError } from '../../errors.js';
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
import type { MarkStore, RangeStore } from '../id-store.js';
import { type ClosingConnection, openConnections } from './connections.js';
import { LeaseSession } from './session.js';
import { DeletionWatches } from './watch.js';

/** Options of {@link EtcdDriver}. Give exactly one of `client`, `hosts` or `url`. */
export interface EtcdDriverOptions {
  /** An `etcd3` client. The driver never closes a client you pass. */
  client?: Etcd3;
  /** Endpoints such as `http://127.0.0.1:2379` (one or several members of one cluster). */
  hosts?: string | readonly string[];
  /**
   * `etcd://host:port[,host:port...][?leaseTtlS=10&prefix=dlock/&timeoutMs=5000]`; query options
   * override the ones given here.
   */
  url?: string;
  /**
   * TTL of the driver's etcd lease, in whole seconds (>= 1): how long the locks of a process that
   * died (or lost its connection) outlive it. Default 10. etcd raises it to its minimum,
   * ceil(1.5 x election timeout) (2 s with default server settings).
   */
  leaseTtlS?: number;
  /** Prefix of every key the driver writes. Default `dlock/`. */
  prefix?: string;
  /** Deadline of each request (not of waits or streams), in ms. Default 5000. */
  timeoutMs?: number;
  /** Diagnostics; silent when omitted. */
  logger?: Logger;
  /**
   * Accepted for the same options on every driver (`connect(url, { create: false })`): etcd has
   * no tables or parent keys, and no read of this driver writes, so it changes nothing.
   */
  create?: boolean;
}

/** Anything that names a held lock: a core `Lease`, or `{ key, owner, token }`. */
export interface HeldLockRef {
  /** The lock key. */
  readonly key: string;
  /** The owner id. */
  readonly owner: string;
  /** The fencing token (the holder key's create revision). */
  readonly token: bigint;
}

const DEFAULT_LEASE_TTL_S = 10;
const DEFAULT_PREFIX = 'dlock/';
const DEFAULT_TIMEOUT_MS = 5000;
/** etcd's default `--max-txn-ops`: renewal batches are split into transactions of this size. */
const MAX_TXN_OPS = 128;
const MAX_INT64 = 2n ** 63n - 1n;
/** Optimistic retries of a read-modify-write (marks, counters) before giving up. */
const CAS_ATTEMPTS = 32;
/** Bound on how long close() waits for the server to close the driver's connections. */
const CONNECTION_CLOSE_WAIT_MS = 1000;
/** Numbers the drivers' own clients (see the `dlock.connection` channel option). */
let driverSeq = 0;

/** What a key's value records (JSON), for `inspect` and operators reading etcd. */
interface Contender {
  owner: string;
  ttlMs: number;
  /** How it claims the key; absent: exclusive. */
  admission?: Admission;
}

/** Our key in a lock's queue (what the core hands back to the driver's queue steps). */
export interface EtcdEntry extends QueueEntry {
  /** The key itself (`id` as bytes). */
  readonly key: Buffer;
  /** @internal The lease it is attached to. */
  readonly lease: LeaseSession;
}

/**
 * See the file header for what it guarantees.
 *
 * @example
 * ```ts
 * import { LockClient } from 'dlock';
 * import { EtcdDriver } from 'dlock/etcd';
 * const locks = new LockClient(new EtcdDriver({ url: 'etcd://10.0.0.1:2379,10.0.0.2:2379?leaseTtlS=5' }));
 * await locks.using('invoices:2024-06', async (lease) => {
 *   // exclusive; lease.token is the holder key's create revision
 * });
 * await locks.close();
 * ```
 */
export class EtcdDriver implements QueueDriver<EtcdEntry>, SessionSource, MarkStore, RangeStore {
  readonly kind = 'queue' as const;
  readonly info: DriverInfo = {
    name: 'etcd',
    liveness: 'session',
    fair: true,
    scope: 'distributed',
    modes: ['exclusive', 'shared', 'permits'],
    fairness: 'fifo',
  };
  /** The etcd3 client (yours when you passed `client`). */
  readonly client: Etcd3;
  /** The key prefix. */
  readonly prefix: string;
  /** The lease TTL asked of etcd, in seconds. */
  readonly leaseTtlS: number;
  private readonly ownsClient: boolean;
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  private closePromise: Promise<void> | undefined;
  /** Set once close() began: no new work. */
  private closed = false;
  /** Set once close() is done with the client. */
  private closedFully = false;
  private opening: Promise<LeaseSession> | undefined;
  private live: LeaseSession | undefined;
  private readonly listeners = new SessionListeners();
  /** Background lease revokes (close() waits for them). */
  private readonly busy = new Set<Promise<unknown>>();
  /** Deletion watches of waiters (one stream). */
  private readonly watches: DeletionWatches;
  /** Last value and mod revision seen per counter, so that an allocation is usually one request. */
  private readonly counters = new Map<string, { value: bigint; mod: string }>();

  constructor(options: EtcdDriverOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('EtcdDriver needs options: { url }, { hosts } or { client }.');
    }
    etcd3(); // MissingPeerError (npm install etcd3) here rather than at the first lock
    const given = [options.client, options.hosts, options.url].filter((v) => v !== undefined).length;
    if (given !== 1) {
      throw new InvalidArgumentError('EtcdDriver needs exactly one of { url }, { hosts } or { client }.');
    }
    const fromUrl = options.url === undefined ? undefined : parseEtcdUrl(options.url);
    this.leaseTtlS = wholeNumber('leaseTtlS', fromUrl?.leaseTtlS ?? options.leaseTtlS, 1, 2 ** 31 - 1, DEFAULT_LEASE_TTL_S);
    this.timeoutMs = wholeNumber('timeoutMs', fromUrl?.timeoutMs ?? options.timeoutMs, 1, 2 ** 31 - 1, DEFAULT_TIMEOUT_MS);
    const prefix = fromUrl?.prefix ?? options.prefix ?? DEFAULT_PREFIX;
    if (typeof prefix !== 'string') throw new InvalidArgumentError('prefix must be a string.');
    this.prefix = prefix;
    this.logger = options.logger;
    if (options.create !== undefined && typeof options.create !== 'boolean') throw new InvalidArgumentError(`create must be a boolean, got ${typeof options.create}.`);
    if (options.client !== undefined) {
      if (typeof (options.client as Partial<Etcd3>).kv?.txn !== 'function') throw new InvalidArgumentError('client must be an etcd3 Etcd3 instance.');
      this.client = options.client;
      this.ownsClient = false;
    } else {
      const hosts = fromUrl?.hosts ?? (typeof options.hosts === 'string' ? [options.hosts] : [...(options.hosts ?? [])]);
      if (hosts.length === 0 || hosts.some((h) => typeof h !== 'string' || h.length === 0)) {
        throw new InvalidArgumentError('hosts must name at least one endpoint, such as http://127.0.0.1:2379.');
      }
      // A channel option of its own: grpc-js then gives this client its own connection instead of
      // sharing one with other clients in the process, so that close() can wait for it to end.
      // HTTP/2 keep-alive pings while a call is open: a member cut off by a partition (no RST, no
      // FIN) is then dropped within ~7 s and the call moves to another member. Without them a
      // waiter whose watch stream sat on that member never heard the holder's key go and waited
      // out its whole waitMs although the majority had freed the lock (test/chaos/partition-etcd,
      // 2/1 split). 5 s is etcd's default --grpc-keepalive-min-time: pings more often are refused.
      this.client = new (etcd3().Etcd3)({
        hosts: [...hosts],
        grpcOptions: { 'dlock.connection': `etcd-driver-${++driverSeq}`, 'grpc.keepalive_time_ms': 5000, 'grpc.keepalive_timeout_ms': 2000 },
      });
      this.ownsClient = true;
    }
    this.watches = new DeletionWatches(this.client);
  }

  // ------------------------------------------------------------------ session

  /** The state of the current lease (`lost` before the first acquisition and after close). */
  get sessionState(): SessionState {
    return this.live?.state ?? 'lost';
  }

  /** Hear every change of {@link sessionState}; returns an unsubscribe function. */
  onSessionState(listener: (state: SessionState) => void): () => void {
    return this.listeners.add(listener);
  }

  /** The current lease id in hex (as `etcdctl lease list` shows it), or undefined. */
  get leaseId(): string | undefined {
    return this.live?.hexId;
  }

  /** Number of watches opened for waits and not yet cancelled (0 when nobody waits). */
  get openWatches(): number {
    return this.watches.size;
  }

  /** The live session, or a new one (one grant shared by concurrent callers). */
  private session(): Promise<LeaseSession> {
    if (this.closed) return Promise.reject(new ClosedError('Using the etcd driver'));
    const live = this.live;
    if (live && this.usable(live)) return Promise.resolve(live);
    this.opening ??= LeaseSession.open(this.client, this.leaseTtlS, this.timeoutMs, (s, state) => {
      // The lease revoke of a session that ended on its own: close() waits for it.
      if (state === 'lost') this.track(s.end('lost'));
      if (this.live !== s) return; // not (or no longer) the current session
      if (state === 'lost') {
        this.live = undefined;
        this.logger?.warn?.('dlock: etcd lease lost', { lease: s.hexId, reason: s.session.signal.reason });
      }
      this.listeners.emit(state);
    }).then(
      (s) => {
        this.opening = undefined;
        if (this.closed) {
          // Granted after close() began: give it back at once.
          this.track(s.end('closed'));
          throw new ClosedError('Using the etcd driver');
        }
        if (s.state === 'lost') throw new UnavailableError('Opening an etcd lease', { cause: s.session.signal.reason });
        this.live = s;
        this.listeners.emit('connected');
        return s;
      },
      (e: unknown) => {
        this.opening = undefined;
        throw e;
      },
    );
    return this.opening;
  }

  /**
   * Whether grants may still ride on `lease`. Its deadline can pass before its timer runs (a
   * starved event loop): end it now, as the timer would (the revoke deletes its keys).
   */
  private usable(lease: LeaseSession): boolean {
    if (lease.state !== 'lost' && !lease.session.isOver) return true;
    this.track(lease.end('expired'));
    return false;
  }

  /** A write refused for our lease id: etcd no longer knows the lease. End it (a new one is granted next). */
  private leaseGone(lease: LeaseSession, e: unknown): void {
    if (e instanceof etcd3().EtcdLeaseInvalidError) this.track(lease.end('lost', e));
  }

  // ------------------------------------------------------------------ keys

  /** The prefix under which the contenders for `key` queue. */
  lockPrefix(key: string): string {
    return `${this.prefix}lock/${encodeURIComponent(key)}/`;
  }

  /** The etcd key of `owner`'s acquisition of `key`; its create revision is the fencing token. */
  holderKey(key: string, owner: string): string {
    return `${this.lockPrefix(key)}${encodeURIComponent(owner)}`;
  }

  /** Where the durable high-water mark of `key` lives. */
  markKey(key: string): string {
    return `${this.prefix}mark/${encodeURIComponent(key)}`;
  }

  /** Where the id counter `name` of {@link allocateRange} lives. */
  counterKey(name: string): string {
    return `${this.prefix}seq/${encodeURIComponent(name)}`;
  }

  /**
   * A compare for your own etcd transaction that holds only while `lease` still holds its lock
   * (its key exists with the create revision = the fencing token). Keys you write in the same
   * transaction are then written only by the current holder: a holder that lost its lock
   * (paused past its lease, partitioned) can no longer write.
   *
   * @example
   * ```ts
   * const driver = new EtcdDriver({ url: 'etcd://127.0.0.1:2379' });
   * const locks = new LockClient(driver);
   * const lease = await locks.acquire('orders');
   * const r = await driver.client.kv.txn({
   *   compare: [driver.fenceCompare(lease)],
   *   success: [{ request_put: { key: Buffer.from('orders/total'), value: Buffer.from('42') } }],
   * });
   * if (!r.succeeded) throw new Error('lost the lock: nothing written');
   * // or with etcd3's builder:
   * // await driver.client.if(driver.holderKey(lease.key, lease.owner), 'Create', '==', lease.token.toString())
   * //   .then(driver.client.put('orders/total').value('42')).commit();
   * ```
   */
  fenceCompare(lease: HeldLockRef): ICompare {
    return {
      key: Buffer.from(this.holderKey(lease.key, lease.owner)),
      target: etcd3().CompareTarget.Create,
      result: etcd3().CompareResult.Equal,
      create_revision: lease.token.toString(),
    };
  }

  // ------------------------------------------------------------------ lock operations

  /** One transaction: take the lock if nobody holds or waits for it; never queues. */
  async tryAcquire(req: AcquireRequest): Promise<TryResult> {
    if (sharesKey(req)) return this.tryShared(req);
    const lease = await this.session();
    const sentAt = monotonicNow();
    const prefix = Buffer.from(this.lockPrefix(req.key));
    const r = await this.txn({
      // Nobody under the prefix: neither a holder nor a waiter (arrivals never barge past the queue).
      compare: [{ key: prefix, range_end: prefixEnd(prefix), target: etcd3().CompareTarget.Create, result: etcd3().CompareResult.Equal, create_revision: 0 }],
      success: [this.putContender(req, lease)],
      failure: [],
    }).catch((e: unknown) => {
      this.leaseGone(lease, e);
      throw e;
    });
    if (!r.succeeded) return { ok: false, retryAfterMs: -1 };
    // A lease past its deadline is revoked (usable() ends it), and the key we just created with it.
    const grant = this.grant(req, this.entryOf(req, lease, BigInt(r.header.revision)), sentAt);
    return grant ? { ok: true, grant } : { ok: false, retryAfterMs: -1 };
  }

  /** One try of a claim that may share the key: enqueue, keep the key when the rule admits it, else withdraw. */
  private async tryShared(req: AcquireRequest): Promise<TryResult> {
    const { entry, view } = await this.enqueue(req);
    const grant = view.mine && viewAdmits(req, view) ? this.grant(req, entry, view.sentAt) : null;
    if (grant) return { ok: true, grant };
    await this.withdraw(req, entry);
    return { ok: false, retryAfterMs: -1 };
  }

  /**
   * Create our key (if absent) attached to the lease, and in the same transaction read the two
   * newest keys (ours, and the one just before it) and how many there are. Retried after an
   * error, it finds its own key; a key of ours from an earlier lease is removed and created anew.
   */
  async enqueue(req: AcquireRequest): Promise<{
    /** Our key. */
    entry: EtcdEntry;
    /** The queue before it. */
    view: QueueView;
  }> {
    const lease = await this.session();
    const first = await this.create(req, lease);
    if ('entry' in first) return first;
    const kv = first.existing;
    if (kv?.lease === lease.id) {
      // A retried enqueue whose first attempt had been applied: our place is kept.
      const entry = this.entryOf(req, lease, BigInt(kv.create_revision));
      return { entry, view: await this.look(req, entry) };
    }
    // Our key from a lease that ended: it no longer counts as ours. Remove it and enqueue anew.
    if (kv) await this.deleteEntry(kv.key, kv.create_revision);
    const again = await this.create(req, lease);
    if ('entry' in again) return again;
    throw new UnavailableError(`Enqueueing for lock "${req.key}" kept finding a stale key ${this.holderKey(req.key, req.owner)}`);
  }

  /** The enqueue transaction; `existing`: our key was there already (create revision compare failed). */
  private async create(req: AcquireRequest, lease: LeaseSession): Promise<{ entry: EtcdEntry; view: QueueView } | { existing: IKeyValue | undefined }> {
    const key = Buffer.from(this.holderKey(req.key, req.owner));
    const prefix = Buffer.from(this.lockPrefix(req.key));
    const sentAt = monotonicNow();
    const shares = sharesKey(req);
    const r = await this.txn({
      compare: [{ key, target: etcd3().CompareTarget.Create, result: etcd3().CompareResult.Equal, create_revision: 0 }],
      success: [
        this.putContender(req, lease),
        shares
          ? // A claim that may share the key: every entry with its value, the rule needs them all.
            { request_range: { key: prefix, range_end: prefixEnd(prefix), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Ascend } }
          : { request_range: { key: prefix, range_end: prefixEnd(prefix), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Descend, limit: 2, keys_only: true } },
      ],
      failure: [{ request_range: { key, keys_only: true } }],
    }).catch((e: unknown) => {
      this.leaseGone(lease, e);
      throw e;
    });
    if (!r.succeeded) return { existing: kvsOf(r, 0)[0] };
    const range = r.responses[1]?.response_range;
    if (shares) {
      const ahead = (range?.kvs ?? []).filter((kv) => !kv.key.equals(key)).map((kv) => this.claimOf(kv, prefix.length));
      return { entry: this.entryOf(req, lease, BigInt(r.header.revision)), view: { mine: true, ahead: ahead.length, predecessor: ahead.at(-1), sentAt, before: ahead } };
    }
    const before = range?.kvs[1];
    // Ours is the newest key under the prefix: every other one is ahead of it.
    return {
      entry: this.entryOf(req, lease, BigInt(r.header.revision)),
      view: { mine: true, ahead: Math.max(0, Number(range?.count ?? 1) - 1), predecessor: before ? refOf(before) : undefined, sentAt },
    };
  }

  /**
   * One read: the newest key created before ours (and whether there are more) and our own key,
   * which must still be there with the create revision and lease of `entry`.
   */
  async look(req: AcquireRequest, entry: EtcdEntry): Promise<QueueView> {
    const sentAt = monotonicNow();
    if (entry.lease.state === 'lost') return { mine: false, ahead: 0, predecessor: undefined, sentAt };
    const prefix = Buffer.from(this.lockPrefix(req.key));
    const shares = sharesKey(req);
    const r = await this.txn({
      compare: [],
      success: [
        {
          request_range: shares
            ? { key: prefix, range_end: prefixEnd(prefix), max_create_revision: (entry.seq - 1n).toString(), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Ascend }
            : {
                key: prefix,
                range_end: prefixEnd(prefix),
                max_create_revision: (entry.seq - 1n).toString(),
                sort_target: etcd3().SortTarget.Create,
                sort_order: etcd3().SortOrder.Descend,
                limit: 1,
                keys_only: true,
              },
        },
        { request_range: { key: entry.key, keys_only: true } },
      ],
      failure: [],
    });
    const range = r.responses[0]?.response_range;
    if (shares) {
      const ahead = (range?.kvs ?? []).map((kv) => this.claimOf(kv, prefix.length));
      return { mine: this.isEntry(kvsOf(r, 1)[0], entry), ahead: ahead.length, predecessor: ahead.at(-1), sentAt, before: ahead };
    }
    const before = range?.kvs[0];
    return {
      mine: this.isEntry(kvsOf(r, 1)[0], entry),
      // etcd counts the range before its revision filter: `more` says whether others are ahead.
      ahead: before ? (range?.more ? 2 : 1) : 0,
      predecessor: before ? refOf(before) : undefined,
      sentAt,
    };
  }

  /** Whether `kv` is still `entry`: same create revision, on its lease, which lives. */
  private isEntry(kv: IKeyValue | undefined, entry: EtcdEntry): boolean {
    return kv !== undefined && kv.lease === entry.lease.id && BigInt(kv.create_revision) === entry.seq && entry.lease.state !== 'lost';
  }

  /**
   * Watch the predecessor's key and ours for deletion (one stream: events in revision order),
   * then, with both watches in place, read both once: gone before the watches started? 'gone' is
   * answered only once our own key was read alive after its watch was in place.
   */
  waitGone(req: AcquireRequest, watched: QueueEntry, mine: EtcdEntry, signal: AbortSignal): Promise<GoneResult> {
    return this.waitAnyGone(req, [watched], mine, signal);
  }

  /** {@link waitGone} over several keys (a semaphore waiter: any holder that goes may admit it). */
  waitAnyGone(_req: AcquireRequest, watched: readonly QueueEntry[], mine: EtcdEntry, signal: AbortSignal): Promise<GoneResult> {
    const lease = mine.lease;
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (lease.state === 'lost') return Promise.resolve('mine-gone');
    return new Promise<GoneResult>((resolve, reject) => {
      let done = false;
      const finish = (settle: () => void): void => {
        if (done) return;
        done = true;
        own.cancel();
        for (const a of aheads) a.cancel();
        lease.session.signal.removeEventListener('abort', onEnded);
        signal.removeEventListener('abort', onAbort);
        settle();
      };
      const onAbort = (): void => finish(() => reject(signal.reason as Error));
      const onEnded = (): void => finish(() => resolve('mine-gone'));
      const failed = (e: unknown): void => finish(() => reject(e instanceof Error ? e : new Error(String(e))));
      const own = this.watches.watch(mine.key, (deleted) => finish(() => resolve(deleted ? 'mine-gone' : 'look')));
      const keys = watched.map((w) => Buffer.from(w.id));
      const aheads = keys.map((k) =>
        this.watches.watch(k, (deleted) => {
          if (!deleted) finish(() => resolve('look'));
          else void alive.then((ok) => finish(() => resolve(ok ? 'gone' : 'mine-gone')), failed);
        }),
      );
      lease.session.signal.addEventListener('abort', onEnded, { once: true });
      signal.addEventListener('abort', onAbort, { once: true });
      const check = Promise.all([own.ready, ...aheads.map((a) => a.ready)]).then(() =>
        this.txn({ compare: [], success: [{ request_range: { key: mine.key, keys_only: true } }, ...keys.map((key) => ({ request_range: { key, keys_only: true } }))], failure: [] }),
      );
      const alive = check.then((r) => this.isEntry(kvsOf(r, 0)[0], mine));
      // Used only if a deletion comes; a failed read is reported once, by check's handler below.
      // Left alone, its rejection went unhandled and ended the process (a read timed out while
      // partitioned from a member: test/chaos/partition-etcd, 2/1 split).
      alive.catch(noop);
      check.then((r) => {
        if (!this.isEntry(kvsOf(r, 0)[0], mine)) return finish(() => resolve('mine-gone'));
        // Gone, or a newer key of the same name (behind us now).
        watched.forEach((w, i) => {
          const before = kvsOf(r, i + 1)[0];
          if (!before || BigInt(before.create_revision) !== w.seq) finish(() => resolve('gone'));
        });
      }, failed);
    });
  }

  /** The turn is ours: the grant, riding on the key's lease (null once that is past its deadline). */
  grant(req: AcquireRequest, entry: EtcdEntry, sentAt: number): Grant | null {
    if (!this.usable(entry.lease)) return null;
    const s = entry.lease.session;
    // A grant rides on the lease: its validity is the lease's (a write attached to a lease does
    // not refresh the lease, so only keep-alive answers move that deadline).
    return { token: entry.seq, sentAt, session: s.grantSignal(req.key, req.owner), validUntil: () => s.validUntil() };
  }

  /**
   * Delete our key: only the entry we were given (a newer enqueue of the same owner has another
   * create revision); without one, whatever the failed enqueue may have created. Errors are
   * absorbed: the lease frees the key at the latest.
   */
  async withdraw(req: AcquireRequest, entry: EtcdEntry | undefined): Promise<void> {
    await this.deleteEntry(Buffer.from(this.holderKey(req.key, req.owner)), entry?.seq.toString()).catch(noop);
  }

  /** Delete `key`, only while its create revision is `createRevision` when one is given. */
  private async deleteEntry(key: Buffer, createRevision: string | undefined): Promise<void> {
    const compare: ICompare[] = createRevision === undefined ? [] : [{ key, target: etcd3().CompareTarget.Create, result: etcd3().CompareResult.Equal, create_revision: createRevision }];
    await this.txn({ compare, success: [{ request_delete_range: { key } }], failure: [] });
  }

  private entryOf(req: AcquireRequest, lease: LeaseSession, rev: bigint): EtcdEntry {
    const id = this.holderKey(req.key, req.owner);
    return { id, key: Buffer.from(id), seq: rev, lease };
  }

  /**
   * Confirm, in one transaction per batch, that each key still exists with this driver's live
   * lease. `false` where the key is gone or belongs to another (or an earlier) lease.
   */
  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    if (items.length === 0) return [];
    const session = this.live;
    if (!session || session.state === 'lost') return items.map(() => false);
    const chunks: ExtendItem[][] = [];
    for (let i = 0; i < items.length; i += MAX_TXN_OPS) chunks.push(items.slice(i, i + MAX_TXN_OPS));
    const answers = await Promise.all(
      chunks.map(async (chunk) => {
        const r = await this.txn({
          compare: [],
          success: chunk.map((it) => ({ request_range: { key: Buffer.from(this.holderKey(it.key, it.owner)), keys_only: true } })),
          failure: [],
        });
        return chunk.map((_, i) => kvsOf(r, i)[0]?.lease === session.id);
      }),
    );
    return answers.flat().map((ok) => ok && session.state !== 'lost');
  }

  /** Delete `owner`'s key of `key` (held or queued). `true` when it was there. */
  async release(key: string, owner: string): Promise<boolean> {
    if (this.closedFully) throw new ClosedError(`Releasing lock "${key}"`);
    this.live?.session.forget(owner);
    const r = await this.client.kv.deleteRange({ key: Buffer.from(this.holderKey(key, owner)) }, this.callOptions());
    return r.deleted !== '0';
  }

  /**
   * The holder: the first-created key under the lock's prefix. `remainingMs` is -1 (as on every
   * session driver): the key lives as long as its holder's etcd lease (`leaseTtlS`), which etcd
   * reports in whole seconds only.
   */
  async inspect(key: string): Promise<LockState | null> {
    const prefix = Buffer.from(this.lockPrefix(key));
    const r = await this.client.kv.range(
      { key: prefix, range_end: prefixEnd(prefix), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Ascend, limit: 1 },
      this.callOptions(),
    );
    const kv = r.kvs[0];
    if (!kv) return null;
    const c = parseContender(kv, prefix.length);
    return { owner: c.owner, token: BigInt(kv.create_revision), remainingMs: -1, ...(c.admission ? { admission: c.admission } : {}) };
  }

  /** Every holder (the queue's admitted prefix, by the rule) and the number of waiters behind them. */
  async keyState(key: string): Promise<KeyState> {
    const prefix = Buffer.from(this.lockPrefix(key));
    const r = await this.client.kv.range(
      { key: prefix, range_end: prefixEnd(prefix), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Ascend },
      this.callOptions(),
    );
    const { holders, waiting } = holdersOf(r.kvs.map((kv) => ({ ...this.claimOf(kv, prefix.length), kv })));
    return {
      holders: holders.map((h) => ({ owner: h.owner, token: h.seq, remainingMs: -1, ...(h.admission ? { admission: h.admission } : {}) })),
      waiters: waiting.length,
    };
  }

  /**
   * One page of held keys: one keys-only range over `<prefix>lock/<encoded prefix>` with a limit
   * of `limit` queue keys (a key with several contenders takes several of them). Every queue key
   * lives on a lease, and the first of each key's queue holds it, so each key seen is held. The
   * cursor is the last key seen; the next page starts after all of its queue.
   */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    if (this.closedFully) throw new ClosedError(`Listing locks "${prefix}*"`);
    const base = `${this.prefix}lock/`;
    const under = Buffer.from(base + encodeURIComponent(prefix));
    const start = page.cursor === undefined ? under : prefixEnd(Buffer.from(`${base}${encodeURIComponent(page.cursor)}/`));
    const r = await this.client.kv.range({ key: start, range_end: prefixEnd(under), limit: page.limit, keys_only: true }, this.callOptions());
    const keys: string[] = [];
    for (const kv of r.kvs) {
      const rest = kv.key.subarray(base.length).toString();
      const slash = rest.indexOf('/');
      let key: string;
      try {
        key = decodeURIComponent(slash < 0 ? rest : rest.slice(0, slash));
      } catch {
        continue; // not written by dlock
      }
      if (key.startsWith(prefix) && keys[keys.length - 1] !== key) keys.push(key);
    }
    const last = keys[keys.length - 1];
    return r.more && last !== undefined ? { keys, cursor: last } : { keys };
  }

  /**
   * Delete every holder's queue key of `key` in one transaction, on the condition that each is
   * still the one read (create revision compares; retried when the queue moved). The waiter
   * behind watches its predecessor's key, so it takes the turn; the evicted holder's next
   * `extend()` finds its key gone. Tokens are create revisions (etcd's global revision, which
   * never goes back): the `fence` is the highest evicted token (for a free key, the revision of
   * the read); every waiter queued behind, and every later arrival, has a greater one.
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    if (this.closedFully) throw new ClosedError(`Force-releasing lock "${key}"`);
    const prefix = Buffer.from(this.lockPrefix(key));
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const r = await this.client.kv.range(
        { key: prefix, range_end: prefixEnd(prefix), sort_target: etcd3().SortTarget.Create, sort_order: etcd3().SortOrder.Ascend },
        this.callOptions(),
      );
      const { holders } = holdersOf(r.kvs.map((kv) => ({ ...this.claimOf(kv, prefix.length), kv })));
      if (holders.length === 0) return { released: 0, fence: BigInt(r.header.revision) };
      const t = await this.txn({
        compare: holders.map((h) => ({ key: h.kv.key, target: etcd3().CompareTarget.Create, result: etcd3().CompareResult.Equal, create_revision: h.kv.create_revision })),
        success: holders.map((h) => ({ request_delete_range: { key: h.kv.key } })),
        failure: [],
      });
      // The highest evicted token: a waiter queued behind the holders has a greater create revision.
      if (t.succeeded) return { released: holders.length, fence: holders.reduce((max, h) => (h.seq > max ? h.seq : max), 0n) };
    }
    throw new UnavailableError(`Force-releasing lock "${key}": its queue kept changing`);
  }

  /** A queue key as the claim it makes. */
  private claimOf(kv: IKeyValue, prefixLength: number): QueuedClaim {
    const c = parseContender(kv, prefixLength);
    return { ...refOf(kv), owner: c.owner, admission: c.admission };
  }

  // ------------------------------------------------------------------ marks and counters

  /** The durable high-water mark of `key` (0n when never written). */
  async readMark(key: string): Promise<bigint> {
    const r = await this.client.kv.range({ key: Buffer.from(this.markKey(key)) }, this.callOptions());
    const kv = r.kvs[0];
    return kv ? BigInt(kv.value.toString()) : 0n;
  }

  /**
   * Set the mark of `key` to max(current, `mark`) only while `owner` holds `key`: one read, then
   * one transaction whose compares say "owner's key is still the first under the lock's prefix and
   * the mark did not change since the read" (retried when only the mark changed).
   */
  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    if (typeof mark !== 'bigint' || mark < 0n || mark > MAX_INT64) throw new OutOfRangeError('mark', `mark must be a bigint in [0, 2^63 - 1], got ${String(mark)}.`);
    const mine = Buffer.from(this.holderKey(key, owner));
    const markKey = Buffer.from(this.markKey(key));
    const prefix = Buffer.from(this.lockPrefix(key));
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const read = await this.txn({ compare: [], success: [{ request_range: { key: mine, keys_only: true } }, { request_range: { key: markKey } }], failure: [] });
      const held = kvsOf(read, 0)[0];
      if (!held) return false;
      const current = kvsOf(read, 1)[0];
      const value = current ? BigInt(current.value.toString()) : 0n;
      const r = await this.txn({
        compare: [
          { key: mine, target: etcd3().CompareTarget.Create, result: etcd3().CompareResult.Equal, create_revision: held.create_revision },
          // Every key under the prefix was created at or after ours: ours is the first, the holder.
          {
            key: prefix,
            range_end: prefixEnd(prefix),
            target: etcd3().CompareTarget.Create,
            result: etcd3().CompareResult.Greater,
            create_revision: (BigInt(held.create_revision) - 1n).toString(),
          },
          { key: markKey, target: etcd3().CompareTarget.Mod, result: etcd3().CompareResult.Equal, mod_revision: current?.mod_revision ?? '0' },
        ],
        success: mark > value ? [{ request_put: { key: markKey, value: Buffer.from(mark.toString()) } }] : [],
        failure: [],
      });
      if (r.succeeded) return true;
      // Either we no longer hold the lock (the next read says so) or the mark moved: read again.
    }
    throw new UnavailableError(`Raising the mark of "${key}" kept conflicting with other writers`);
  }

  /**
   * Advance the counter `name` by `count` and resolve the new end of the range: one transaction
   * comparing the counter's mod revision with the last one seen (a read first when unknown,
   * another attempt when someone else moved it).
   */
  async allocateRange(name: string, count: bigint): Promise<bigint> {
    if (typeof count !== 'bigint' || count < 1n) throw new OutOfRangeError('count', `count must be a bigint >= 1, got ${String(count)}.`);
    const key = Buffer.from(this.counterKey(name));
    let known = this.counters.get(name);
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      if (!known) {
        const r = await this.client.kv.range({ key }, this.callOptions());
        const kv = r.kvs[0];
        known = kv ? { value: BigInt(kv.value.toString()), mod: kv.mod_revision } : { value: 0n, mod: '0' };
      }
      const next = known.value + count;
      if (next > MAX_INT64) throw new IdsExhaustedError(name, 'the etcd counter would pass 2^63 - 1');
      const r = await this.txn({
        compare: [{ key, target: etcd3().CompareTarget.Mod, result: etcd3().CompareResult.Equal, mod_revision: known.mod }],
        success: [{ request_put: { key, value: Buffer.from(next.toString()) } }],
        failure: [{ request_range: { key } }],
      });
      if (r.succeeded) {
        this.counters.set(name, { value: next, mod: r.header.revision });
        return next;
      }
      const kv = kvsOf(r, 0)[0];
      known = kv ? { value: BigInt(kv.value.toString()), mod: kv.mod_revision } : { value: 0n, mod: '0' };
    }
    this.counters.delete(name);
    throw new UnavailableError(`Allocating ids from "${name}" kept conflicting with other writers`);
  }

  // ------------------------------------------------------------------ close

  /**
   * Cancel watches, revoke the lease (etcd deletes every
   * key it carried) and close the client if the driver created it. Idempotent.
   */
  close(): Promise<void> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    // The connections open now, before anything below may replace one (see the end of close()).
    const connections = new Map<ClosingConnection, Promise<void>>();
    const collect = (): void => {
      for (const c of openConnections(this.client)) {
        if (!connections.has(c)) connections.set(c, new Promise<void>((resolve) => c.once('close', resolve)));
      }
    };
    if (this.ownsClient) collect();
    const session = this.live ?? (await settleOrUndefined(this.opening, 1000));
    this.live = undefined;
    this.watches.close();
    if (session) await settleWithin(session.end('closed'), 2000);
    // Lease revokes started in the background (a session that expired or was lost).
    await settleWithin(Promise.allSettled([...this.busy]), 2000);
    this.closedFully = true;
    if (this.ownsClient) {
      // Closing is graceful: calls still in flight finish, then the server closes each connection
      // and grpc-js cleans up in the next turn. Wait for all of it (see connections.ts), so that
      // nothing of ours is pending once close() resolves, however slow the server or this machine.
      collect();
      this.client.close();
      await settleWithin(Promise.all(connections.values()), CONNECTION_CLOSE_WAIT_MS);
      await new Promise<void>((resolve) => setImmediate(resolve));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.listeners.emit('lost');
  }

  // ------------------------------------------------------------------ helpers

  /** Background work (a lease revoke) that close() waits for before it closes the client. */
  private track(work: Promise<unknown>): void {
    const settled = work.then(noop, noop);
    this.busy.add(settled);
    void settled.then(() => this.busy.delete(settled));
  }

  private callOptions(): { deadline: number } {
    // gRPC deadlines are wall-clock dates; this only bounds how long a request may hang.
    return { deadline: Date.now() + this.timeoutMs };
  }

  private txn(req: { compare: ICompare[]; success: IRequestOp[]; failure: IRequestOp[] }): Promise<ITxnResponse> {
    if (this.closedFully) return Promise.reject(new ClosedError('Using the etcd driver'));
    return this.client.kv.txn(req, this.callOptions());
  }

  private putContender(req: AcquireRequest, session: LeaseSession): IRequestOp {
    const value: Contender = { owner: req.owner, ttlMs: req.ttlMs, ...(req.admission ? { admission: req.admission } : {}) };
    return { request_put: { key: Buffer.from(this.holderKey(req.key, req.owner)), value: Buffer.from(JSON.stringify(value)), lease: session.id } };
  }
}

// -------------------------------------------------------------------- module helpers

function noop(): void {
  // nothing
}

function settleOrUndefined<T>(p: Promise<T> | undefined, ms: number): Promise<T | undefined> {
  if (!p) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      () => {
        clearTimeout(timer);
        resolve(undefined);
      },
    );
  });
}

/** A key of the queue as an entry (its create revision is its place). */
function refOf(kv: IKeyValue): QueueEntry {
  return { id: kv.key.toString(), seq: BigInt(kv.create_revision) };
}

/** The kvs of the `i`-th range answer of a transaction. */
function kvsOf(r: ITxnResponse, i: number): IKeyValue[] {
  return r.responses[i]?.response_range?.kvs ?? [];
}

/** A stored admission, checked (values written by other tools are ignored). */
function admissionOf(v: unknown): Admission | undefined {
  const a = v as { mode?: unknown; permits?: unknown; limit?: unknown } | null | undefined;
  if (a?.mode === 'shared') return { mode: 'shared' };
  if (a?.mode === 'permits' && typeof a.permits === 'number' && typeof a.limit === 'number') return { mode: 'permits', permits: a.permits, limit: a.limit };
  return undefined;
}

/** The end of the key range holding every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function parseContender(kv: IKeyValue, prefixLength: number): Contender {
  try {
    const v = JSON.parse(kv.value.toString()) as Partial<Contender>;
    if (typeof v.owner === 'string' && typeof v.ttlMs === 'number') return { owner: v.owner, ttlMs: v.ttlMs, ...(admissionOf(v.admission) ? { admission: admissionOf(v.admission)! } : {}) };
  } catch {
    // not written by dlock: fall back to the key name
  }
  return { owner: decodeURIComponent(kv.key.subarray(prefixLength).toString()), ttlMs: -1 };
}

function wholeNumber(option: string, value: unknown, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new OutOfRangeError(option, `${option} must be a whole number in [${min}, ${max}], got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** What an `etcd://` URL says. */
export interface EtcdUrl {
  /** `http://host:port` endpoints. */
  readonly hosts: string[];
  /** From `leaseTtlS=N`. */
  readonly leaseTtlS?: number;
  /** From `prefix=...`. */
  readonly prefix?: string;
  /** From `timeoutMs=N`. */
  readonly timeoutMs?: number;
}

/**
 * Parse `etcd://host:port[,host:port...][/][?leaseTtlS=10&prefix=dlock/&timeoutMs=5000]`.
 * Hosts default to port 2379. Unknown query options are refused (a typo must not be ignored).
 */
export function parseEtcdUrl(url: string): EtcdUrl {
  const m = /^etcd:\/\/([^/?#]*)\/?(?:\?([^#]*))?$/i.exec(url);
  if (!m) throw new InvalidArgumentError(`"${url}" is not an etcd URL: use etcd://HOST:PORT[,HOST:PORT...][?leaseTtlS=10].`);
  const hosts = (m[1] ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h.length > 0)
    .map((h) => (/:\d+$/.test(h) || /^\[.*\]:\d+$/.test(h) ? h : `${h}:2379`))
    .map((h) => `http://${h}`);
  if (hosts.length === 0) throw new InvalidArgumentError(`"${url}" names no etcd host: use etcd://HOST:PORT.`);
  const out: { hosts: string[]; leaseTtlS?: number; prefix?: string; timeoutMs?: number } = { hosts };
  for (const [name, raw] of new URLSearchParams(m[2] ?? '')) {
    switch (name) {
      case 'leaseTtlS':
      case 'timeoutMs': {
        const n = Number(raw);
        if (raw.trim() === '' || !Number.isInteger(n)) throw new OutOfRangeError(name, `${name} must be a whole number, got "${raw}" in ${url}.`);
        out[name] = n;
        break;
      }
      case 'prefix':
        out.prefix = raw;
        break;
      default:
        throw new InvalidArgumentError(`Unknown option "${name}" in ${url}: use leaseTtlS, prefix or timeoutMs.`);
    }
  }
  return out;
}
