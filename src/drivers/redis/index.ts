/**
 * Redis driver: one Redis node, a Redis Cluster, or a master followed through Sentinel, through
 * `ioredis` or `redis` (node-redis).
 *
 * Guarantees:
 * - Each operation is one Lua script (src/drivers/redis/lua), atomic on the server, using only
 *   the server's clock (PX / PTTL): client clocks never decide expiry.
 * - Safe release and extend: compare-and-delete / compare-and-expire on the owner id.
 * - Fencing tokens from a per-key counter INCRed inside the acquire script; the counter never
 *   expires, so tokens strictly increase across holders and client restarts.
 * - Event-driven waiting with direct handoff: a waiter queues itself on the server (a list per
 *   lock, in arrival order) and a release hands the lock to the first live waiter with a fresh
 *   token in the same script, then PUBLISHes the grant on that waiter's client channel (one
 *   subscriber connection per client). The waiter holds the lock one hop after the release; no
 *   other waiter wakes (no herd); waiters that get the lock this way are served in FIFO order. A
 *   waiter also re-tries on its own within the holder's remaining TTL, so a lost message costs at
 *   most one TTL, and nothing polls at a fixed interval.
 * - Every admission mode (src/core/admission.ts) in the same script: shared holders and permit
 *   holders in a hash per lock (`<lock>:h`, owner -> expiry, token, mode, permits; expired ones
 *   pruned by every step that reads it), tokens from the one counter, waiters in the same queue
 *   with their mode and enqueue time. `fair: true` is strict FIFO, also when a holder expires
 *   instead of releasing (the step that sees the expiry hands the key to the queue's head);
 *   without it, a newcomer may take a free key only while the head has waited under
 *   BARGE_BOUND_MS. A release hands the key to every admissible head (FIFO: stopping at the first
 *   that does not fit). A release that leaves the key to bargers (the head not due yet) answers
 *   `'left'`: the core passes it on (`passOn`, op `k`) at its next event-loop turn unless the
 *   client asks for the key again first, so a releaser that is done never makes the head wait
 *   for its due time. A step costs O(holders + waiters) of the key, not O(permits): a
 *   1,000,000-permit semaphore costs what a 4-permit one does. The exclusive mutex keeps its own
 *   path (SET if free, handoff in place).
 * - Redis Cluster: a lock's keys share a hash tag (`dlock:{key}`, `dlock:{key}:fence`, ...) so
 *   every script touches one slot; the operations of one tick are batched per lock (one slot per
 *   batch); handoff messages use classic PUBLISH, which the cluster bus carries to every node, so
 *   the subscriber connection may sit on any node (sharded SPUBLISH would need the channel in the
 *   lock's slot: a subscription per lock and node instead of one per client).
 * - Optional `replicaAcks`: each grant and renewal is followed by `WAIT` on the same connection;
 *   a grant too few replicas acknowledged is released and reported as `UnavailableError`, a
 *   renewal likewise fails (the lease then keeps the deadline of its last acknowledged renewal).
 * Does not:
 * - survive a failover or a restart without persistence, unless `replicaAcks` is on: replication
 *   is asynchronous, so a promoted replica may not have the lock (a second holder can then get it
 *   while the first still believes it holds it, until its next renewal aborts its signal with
 *   'not-held'), and a restarted node without AOF forgets it (and may reset the fence counter
 *   and the id counters of `allocateRange`, so segment ids could repeat). Even with WAIT, Redis
 *   replication is not consensus: a failover can still pick a replica that missed the write when
 *   acks came from another one. Use fencing on the resource, or the Redlock driver; for ids,
 *   `appendonly yes` + `appendfsync always`.
 * - Fence counters stay in Redis (one small key per lock name ever used).
 * - A waiter that dies while queued can still be handed the lock until its queue entry lapses
 *   (the holder's remaining TTL + 2 s after its last try); the lock then idles until its TTL.
 */
import { LatchWatch } from '../../core/change-watch.js';
import { monotonicNow } from '../../core/clock.js';
import { parseOwner } from '../../core/owner.js';
import type { Logger } from '../../core/renewal.js';
import { ClosedError, IdsExhaustedError, InvalidArgumentError, UnavailableError } from '../../errors.js';
import { BARGE_BOUND_MS, modeOf } from '../../core/admission.js';
import type {
  AcquireRequest,
  Admission,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  ForceReleased,
  KeyPage,
  KeyState,
  TrySetDriver,
  LockState,
  TryResult,
} from '../driver.js';
import type { MarkStore, RangeStore } from '../id-store.js';
import {
  IoRedisAdapter,
  NodeRedisAdapter,
  isClusterClient,
  isIoRedis,
  isNodeRedis,
  type IoRedisLike,
  type NodeRedisLike,
  type RedisAdapter,
  type Subscriber,
} from './adapter.js';
import { lockKeyName, lockPattern, scanPage } from './scan.js';
import { OpBatcher, ReplicaAckError, type OpCode, type OpsReply } from './batch.js';
import { ioredis } from './peer.js';
import type { LuaScript } from './script.js';
import * as scripts from './scripts.generated.js';
import { ioredisFor, parseRedisUrl, redactUrl, validateReplicaAcks, type ParsedRedisUrl, type ReplicaAcks } from './url.js';

/**
 * A queue head told it is the head ("<owner>|") is due at most this long after: ops.lua's
 * HEAD_MS (= BARGE_BOUND_MS) counted from when it became the head, plus one.
 */
const HEAD_WAKE_MS = BARGE_BOUND_MS + 1;

export { FencedRedisHash } from './fenced.js';
export { ReplicaAckError } from './batch.js';
export type { IoRedisLike, IoRedisPipelineLike, NodeRedisLike, NodeRedisNode } from './adapter.js';
export { parseRedisUrl, type ParsedRedisUrl, type RedisNode, type ReplicaAcks } from './url.js';

/** Options of {@link RedisDriver}. Give exactly one of `client` or `url`. */
export interface RedisDriverOptions {
  /**
   * An `ioredis` Redis or Cluster instance, or a connected node-redis client. The driver never
   * closes a client you pass (it closes only the subscriber connection it duplicates from it).
   */
  client?: IoRedisLike | NodeRedisLike;
  /**
   * The driver opens its own ioredis connection:
   * - `redis://[user:pass@]host:port[/db]` or `rediss://...`: one node;
   * - `redis+cluster://[user:pass@]host:port[,host:port...]`: a Redis Cluster (seed nodes);
   * - `redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/db]`: the master the
   *   Sentinels name, followed across failovers.
   * Query options: `replicaAcks=N`, `replicaAckTimeoutMs=T`, `replicaAcksOnRefused=fail|degrade`
   * (see {@link replicaAcks}).
   */
  url?: string;
  /** Prefix of every key and channel. Default `dlock`. */
  prefix?: string;
  /**
   * Whether `client` is a Redis Cluster client (detected for ioredis `Cluster` and node-redis
   * cluster clients). Batched operations are then grouped per lock so each batch stays in one slot.
   */
  cluster?: boolean;
  /**
   * Off by default. Follow every grant and renewal with `WAIT replicas timeoutMs` (pipelined on
   * the same connection), so that a lock survives a failover to a replica that acknowledged it.
   * - A grant that fewer than `replicas` acknowledged in time is released at once and the
   *   acquisition fails with `UnavailableError` (cause: {@link ReplicaAckError}); `acquire()`
   *   retries within its `waitMs`. Handoffs are confirmed by the waiter (one more round trip).
   * - A renewal likewise fails: the core retries it, and the lease keeps the deadline of its last
   *   acknowledged renewal (so it is lost as 'expired' if acknowledgements stay away).
   * - While WAIT waits, the connection is blocked (up to `timeoutMs` when replicas lag or are
   *   down): keep `timeoutMs` small.
   * - Where the server refuses WAIT: see {@link ReplicaAcks.onRefused}.
   *
   * @example
   * ```ts
   * const driver = new RedisDriver({ client: new Redis({ sentinels, name: 'mymaster' }), replicaAcks: { replicas: 1, timeoutMs: 100 } });
   * ```
   */
  replicaAcks?: ReplicaAcks;
  /** Where dlock reports what it handles (connection errors, retries); it never writes to the console. */
  logger?: Logger;
}

/**
 * A key as it goes inside its name's hash tag: a key starting with `}` (after any backslashes)
 * gets one more leading backslash (see {@link RedisDriver.keysFor}).
 */
function tagOf(key: string): string {
  return /^\\*\}/.test(key) ? `\\${key}` : key;
}

/**
 * The ops.lua operation of a try: the exclusive mutex's own (`a`, `q`: SET-if-free, as fast as
 * it ever was; "<ttl>f" with fairness) or the full admission step (`g`, `w`) with
 * "<ttl> <x|s|p> <permits> <limit> <fair> <alongside>".
 */
function opFor(req: AcquireRequest, queue: boolean): [OpCode, string] {
  const a = req.admission;
  const mode = modeOf(a);
  if (mode === 'exclusive' && req.alongside === undefined) return [queue ? 'q' : 'a', req.fair === true ? `${req.ttlMs}f` : String(req.ttlMs)];
  const [m, permits, limit] = a?.mode === 'permits' ? ['p', a.permits, a.limit] : [mode === 'shared' ? 's' : 'x', 0, 0];
  return [queue ? 'w' : 'g', `${req.ttlMs} ${m} ${permits} ${limit} ${req.fair === true ? 1 : 0} ${req.alongside ?? ''}`];
}

/** A holder's admission as stored in `<lock>:h` ("s" or "p" with its permits and limit). */
function admissionOf(mode: string, permits: string, limit: string): Admission {
  return mode === 'p' ? { mode: 'permits', permits: Number(permits), limit: Number(limit) } : { mode: 'shared' };
}

/** The Redis names used for one lock. */
export interface RedisLockKeys {
  /** Holds `<owner>|<token>` of the exclusive holder with a PX expiry, or `|h` while only shared or permit holders hold. */
  readonly lock: string;
  /** Shared and permit holders: owner → "<expiry ms> <token> <s|p> <permits> <limit>" (a hash). */
  readonly holders: string;
  /** The fencing counter (never expires). */
  readonly fence: string;
  /** Durable high-water mark (worker-id leases); never expires. */
  readonly mark: string;
  /** Waiting owners in arrival order (a list). */
  readonly queue: string;
  /** Each waiting owner's "<expiry ms> <ttl ms> <x|s|p> <permits> <limit> <enqueued ms> <alongside>" (a hash). */
  readonly queueInfo: string;
}

/**
 * See the file header for what it guarantees.
 *
 * @example
 * ```ts
 * // One node, a Cluster, or a master followed through Sentinel, by URL...
 * const locks = new LockClient(new RedisDriver({ url: 'redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000' }));
 * // ...or over your own client (never closed by the driver):
 * const cluster = new Cluster([{ host: '10.0.0.1', port: 7000 }]); // ioredis; or node-redis createCluster()
 * const onCluster = new LockClient(new RedisDriver({ client: cluster }));
 * const failoverSafe = new LockClient(
 *   new RedisDriver({ client: new Redis({ sentinels, name: 'mymaster' }), replicaAcks: { replicas: 1, timeoutMs: 100 } }),
 * );
 * ```
 */
export class RedisDriver implements TrySetDriver, MarkStore, RangeStore {
  readonly kind = 'try-set' as const;
  /** Every admission mode; fair: true is strict FIFO, otherwise barging bounded at BARGE_BOUND_MS. */
  readonly info: DriverInfo = { name: 'redis', liveness: 'lease', fair: false, scope: 'distributed', modes: ['exclusive', 'shared', 'permits'], fairness: 'choice' };
  private adapter: RedisAdapter | undefined;
  private readonly adapterReady: Promise<RedisAdapter>;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly batcher: OpBatcher;
  /** Batches are grouped per lock key on a cluster (one slot each), else one group. */
  private readonly cluster: boolean;
  /** Client channels subscribed (normally one: this driver's client). */
  private readonly clientChannels = new Map<string, Promise<void>>();
  /** The channel of the last owner id seen, by its "host:pid:clientId:" stem (see clientChannel). */
  private lastChannel = { stem: '', name: '' };
  /** The lock name of the last key named (see lockName). */
  private lastLock = { key: '', name: '' };
  /** Open waits by owner id: a handoff names the owner it granted. */
  private readonly waiting = new Map<string, LatchWatch>();
  /** Client channels whose SUBSCRIBE the server confirmed (watchNow opens a watch on them at once). */
  private readonly subscribed = new Set<string>();
  private sub: Promise<Subscriber> | undefined;
  private closing: Promise<void> | undefined;
  private closed = false;
  /** Replica acknowledgements asked for (undefined: off). */
  private readonly acks: Required<ReplicaAcks> | undefined;
  /** Why the server refused WAIT, once it did. */
  private acksRefused: string | undefined;

  constructor(options: RedisDriverOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('RedisDriver needs options: { client } or { url }.');
    }
    const { client, url } = options;
    if ((client === undefined) === (url === undefined)) {
      throw new InvalidArgumentError('RedisDriver needs exactly one of `client` (ioredis or node-redis) or `url`.');
    }
    this.prefix = options.prefix ?? 'dlock';
    if (typeof this.prefix !== 'string' || this.prefix.length === 0) {
      throw new InvalidArgumentError('prefix must be a non-empty string.');
    }
    this.logger = options.logger;
    let parsed: ParsedRedisUrl | undefined;
    if (url !== undefined) {
      if (typeof url !== 'string') throw new InvalidArgumentError('url must be a string such as redis://host:port.');
      parsed = parseRedisUrl(url);
      ioredis(); // MissingPeerError (npm install ioredis) here rather than at the first lock
    }
    this.cluster = options.cluster ?? (parsed ? parsed.kind === 'cluster' : isClusterClient(client));
    this.acks = validateReplicaAcks(options.replicaAcks ?? parsed?.replicaAcks);
    this.batcher = new OpBatcher(
      scripts.ops,
      (script, keys, args, onLate) => this.run(script, keys, args, onLate),
      this.acks ? (keys, packed, writes) => this.runAcked(keys, packed, writes) : undefined,
    );
    if (client !== undefined) {
      if (isNodeRedis(client)) this.adapter = new NodeRedisAdapter(client, false, { failFast: true });
      else if (isIoRedis(client)) this.adapter = new IoRedisAdapter(client, false, { failFast: true });
      else throw new InvalidArgumentError('client must be an ioredis Redis/Cluster or a node-redis client.');
      this.adapterReady = Promise.resolve(this.adapter);
    } else if (parsed) {
      this.adapterReady = this.open(parsed, url ?? '');
      this.adapterReady.catch(() => undefined);
    } else {
      throw new InvalidArgumentError('RedisDriver needs exactly one of `client` or `url`.');
    }
  }

  /**
   * The Redis names of the lock `key`, all in one cluster slot: `<prefix>:{<key>}` and suffixes.
   * A key starting with `}` would make an empty hash tag (each name would then hash whole, to
   * different slots), so it gets a leading backslash: `}a` becomes `<prefix>:{\}a}`; so do keys
   * that start with backslashes and then `}`, so that no two keys share a name.
   */
  keysFor(key: string): RedisLockKeys {
    const base = this.lockName(key);
    return { lock: base, holders: `${base}:h`, fence: `${base}:fence`, mark: `${base}:mark`, queue: `${base}:q`, queueInfo: `${base}:qw` };
  }

  /** `keysFor(key).lock` alone: what every hot-path op names (ops.lua derives the rest). */
  private lockName(key: string): string {
    // A loop re-acquiring one key asks for the same name each time: one comparison, no regex.
    if (key === this.lastLock.key) return this.lastLock.name;
    const name = `${this.prefix}:{${key.charCodeAt(0) === 92 || key.charCodeAt(0) === 125 ? tagOf(key) : key}}`;
    this.lastLock = { key, name };
    return name;
  }

  tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    // A promise chain, not an async function: one microtask less per lock operation.
    const lock = this.lockName(req.key);
    const sentAt = monotonicNow();
    const [code, arg] = opFor(req, queue);
    return this.op(req.key, code, lock, req.owner, arg).then(
      (r): TryResult =>
        r.charCodeAt(0) === 49 /* '1' */ ? { ok: true, grant: { token: BigInt(r.slice(1)), sentAt } } : { ok: false, retryAfterMs: Number(r.slice(1)) },
      async (e: unknown) => {
        if (!(e instanceof ReplicaAckError)) throw e;
        // Granted by the master, not acknowledged by its replicas: a failover could lose it, so it
        // is not reported as held. Give it back (the next waiter may be handed it), then fail.
        await this.op(req.key, 'r', lock, req.owner, '').catch(() => undefined);
        throw new UnavailableError(`Lock "${req.key}" was granted by the Redis master but ${e.message}; it was released`, { cause: e });
      },
    );
  }


  async extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    // Joins the tick's batch (one script per cluster slot group).
    try {
      return await Promise.all(
        items.map(async (it) => (await this.op(it.key, 'e', this.lockName(it.key), it.owner, String(it.ttlMs))) === '1'),
      );
    } catch (e) {
      if (!(e instanceof ReplicaAckError)) throw e;
      // The master extended it, but a failover could fall back to the previous expiry: the lease
      // keeps the deadline of its last acknowledged renewal, and the core retries.
      throw new UnavailableError(`Renewing ${items.length} lock(s) on Redis: ${e.message}`, { cause: e });
    }
  }

  release(key: string, owner: string): Promise<boolean | 'left'> {
    // '2': released, and left to bargers while a told queue head waits for its turn (passOn).
    return this.op(key, 'r', this.lockName(key), owner, '').then((r) => (r === '2' ? 'left' : r === '1'));
  }

  async passOn(key: string): Promise<void> {
    await this.op(key, 'k', this.lockName(key), '', '');
  }

  async inspect(key: string): Promise<LockState | null> {
    return (await this.keyState(key)).holders[0] ?? null;
  }

  /** Every holder of `key` (exclusive, shared, permits), oldest grant first, and its live waiters. */
  async keyState(key: string): Promise<KeyState> {
    const r = (await this.run(scripts.keyState, [this.lockName(key)], [])) as Array<string | number>;
    const holders: LockState[] = [];
    const exclusive = String(r[0]);
    if (exclusive !== '') {
      // "<owner>|<token>" (see ops.lua)
      const bar = exclusive.lastIndexOf('|');
      holders.push({ owner: exclusive.slice(0, bar), token: BigInt(exclusive.slice(bar + 1)), remainingMs: Number(r[1]) });
    }
    for (let i = 3; i + 1 < r.length; i += 2) {
      const [remaining = '0', token = '0', mode = 's', permits = '0', limit = '0'] = String(r[i + 1]).split(' ');
      holders.push({ owner: String(r[i]), token: BigInt(token), remainingMs: Number(remaining), admission: admissionOf(mode, permits, limit) });
    }
    holders.sort((x, y) => (x.token < y.token ? -1 : x.token > y.token ? 1 : 0));
    return { holders, waiters: Number(r[2]) };
  }

  /**
   * One page of held keys: `SCAN ... MATCH <prefix>:{<key prefix>*} COUNT <limit> TYPE string` over
   * the lock keys (each held key's `<lock>` string; never KEYS), on every master of a cluster in
   * turn (sorted by address). The cursor names the node and its SCAN cursor (see `scanPage` in scan.ts).
   */
  async list(prefix: string, page: { readonly cursor?: string; readonly limit: number }): Promise<KeyPage> {
    if (this.closed) throw new ClosedError('redis driver');
    this.batcher.flush();
    const adapter = this.adapter ?? (await this.adapterReady);
    return scanPage(await adapter.scanNodes(), lockPattern(this.prefix, prefix, true), page, (name) => {
      const key = lockKeyName(this.prefix, name, true);
      return key !== undefined && key.startsWith(prefix) && this.lockName(key) === name ? key : undefined;
    });
  }

  /**
   * Evict every holder of `key` (exclusive, readers, permit holders) in one ops.lua step, which
   * then hands the key to the queue's heads (published to their clients, as a release does). The
   * fence counter (`<lock>:fence`) is never touched: the returned `fence` is its value before the
   * handover, and every later token is greater.
   */
  async forceRelease(key: string): Promise<ForceReleased> {
    const r = await this.op(key, 'f', this.lockName(key), '', '');
    const [released = '0', fence = '0'] = r.split(' ');
    return { released: Number(released), fence: BigInt(fence) };
  }

  async readMark(key: string): Promise<bigint> {
    const r = (await this.run(scripts.readMark, [this.keysFor(key).mark], [])) as string | null;
    return r === null ? 0n : BigInt(r);
  }

  async raiseMark(key: string, owner: string, mark: bigint): Promise<boolean> {
    const k = this.keysFor(key);
    return Number(await this.run(scripts.raiseMark, [k.lock, k.mark], [owner, mark.toString()])) === 1;
  }

  /** The Redis key of the id counter `name` (segment ids): `<prefix>:{ids:<name>}:seq`. */
  sequenceKey(name: string): string {
    return `${this.prefix}:{ids:${name}}:seq`;
  }

  async allocateRange(name: string, count: bigint): Promise<bigint> {
    const r = (await this.run(scripts.allocateRange, [this.sequenceKey(name)], [count.toString()])) as string | null;
    if (r === null) throw new IdsExhaustedError(name, 'the Redis counter would pass 2^63 - 1');
    return BigInt(r);
  }

  /**
   * Open a waiter's notifications: handoffs arrive on its client's channel
   * (`<prefix>:c:<clientId>`, one subscription per client, kept until close).
   */
  async watch(_key: string, owner: string): Promise<ChangeWatch> {
    if (this.closed) throw new ClosedError('redis driver');
    const name = this.clientChannel(owner);
    let ready = this.clientChannels.get(name);
    if (!ready) {
      const subscribing = this.subscriber().then((sub) => sub.subscribe(name));
      this.clientChannels.set(name, subscribing);
      subscribing.then(
        () => {
          if (this.clientChannels.get(name) === subscribing) this.subscribed.add(name);
        },
        () => {
          if (this.clientChannels.get(name) === subscribing) this.clientChannels.delete(name);
        },
      );
      ready = subscribing;
    }
    await ready;
    return this.openWatch(owner);
  }

  /** The watch of {@link watch}, opened at once once the client's channel is subscribed. */
  watchNow(_key: string, owner: string): ChangeWatch | undefined {
    if (this.closed || !this.subscribed.has(this.clientChannel(owner))) return undefined;
    return this.openWatch(owner);
  }

  private openWatch(owner: string): LatchWatch {
    const watch: LatchWatch = new LatchWatch(() => {
      if (this.waiting.get(owner) === watch) this.waiting.delete(owner);
    });
    this.waiting.set(owner, watch);
    return watch;
  }

  /** The waiter `owner` gives up: leave the queue, passing on a handoff that raced with it. */
  async cancel(key: string, owner: string): Promise<void> {
    await this.op(key, 'c', this.lockName(key), owner, '');
  }

  /**
   * Replica acknowledgements: `off`, `on`, or `refused` once the server refused WAIT (with
   * `onRefused: 'degrade'` the driver then goes on without them; see {@link RedisDriverOptions.replicaAcks}).
   */
  get replicaAcks(): {
    /** `off`: not asked for; `on`: every grant waits for replicas; `refused`: the server refuses WAIT. */
    state: 'off' | 'on' | 'refused';
    /** The server's refusal, when `refused`. */
    reason?: string;
  } {
    if (!this.acks) return { state: 'off' };
    return this.acksRefused === undefined ? { state: 'on' } : { state: 'refused', reason: this.acksRefused };
  }

  /** Number of waits with an open watch (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.waiting.size;
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    // Waits aborted by the client's close leave the server's queue before the connection goes.
    this.closed = true;
    this.clientChannels.clear();
    this.subscribed.clear();
    this.waiting.clear();
    const sub = this.sub;
    this.sub = undefined;
    await Promise.all([
      sub?.then((s) => s.close()).catch(() => undefined),
      this.adapterReady.then((a) => a.close()).catch(() => undefined),
    ]);
  }

  private clientChannel(owner: string): string {
    // Every owner id of one client shares "host:pid:clientId" before its sequence number, so the
    // last channel is kept for that stem: a lock operation then costs no owner parse.
    const last = this.lastChannel;
    if (last.stem !== '' && owner.startsWith(last.stem) && owner.indexOf(':', last.stem.length) === -1) return last.name;
    const stem = owner.slice(0, owner.lastIndexOf(':') + 1);
    const clientId = parseOwner(owner)?.clientId;
    // ops.lua derives the same name from the owner id.
    const name = `${this.prefix}:c:${clientId ?? owner}`;
    if (clientId !== undefined) this.lastChannel = { stem, name };
    return name;
  }

  private subscriber(): Promise<Subscriber> {
    this.sub ??= this.adapterReady.then((a) =>
      a.subscriber(
        (_channel, message) => {
          // "<owner>|<token>": the lock was handed to that waiter; "<owner>|": that waiter now
          // heads its queue and the key may go to bargers until its turn is due, at most
          // HEAD_WAKE_MS from now (ops.lua): try by then, not at once (the key is held or was
          // just left to a releaser that asks again; a try now would only learn when to come).
          const bar = message.lastIndexOf('|');
          const watch = this.waiting.get(message.slice(0, bar));
          if (bar === message.length - 1) watch?.changed(HEAD_WAKE_MS);
          // With replica acks the waiter confirms the handoff with a try (its write, then WAIT on
          // its own connection, covers the handoff): a plain wake-up instead of a grant.
          else if (this.acks && this.acksRefused === undefined) watch?.changed();
          else watch?.granted(BigInt(message.slice(bar + 1)));
        },
        (error) => this.logger?.warn?.('dlock redis: subscriber connection error', { error }),
      ),
    );
    const sub = this.sub;
    sub.catch(() => {
      if (this.sub === sub) this.sub = undefined;
    });
    return sub;
  }

  /** A hot-path lock operation: joins this tick's batch (see batch.ts). */
  private op(key: string, code: OpCode, lock: string, owner: string, arg: string): Promise<string> {
    if (this.closed) return Promise.reject(new ClosedError('redis driver'));
    return this.batcher.submit(this.cluster ? key : '', code, lock, owner, arg);
  }

  private run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[], onLate?: (reply: unknown) => void): Promise<unknown> {
    if (this.closed) return Promise.reject(new ClosedError('redis driver'));
    // Queued lock operations go first: a release followed by an inspect must be seen in that order.
    if (script !== scripts.ops) this.batcher.flush();
    if (this.adapter) return this.adapter.run(script, keys, args, onLate);
    return this.adapterReady.then((a) => a.run(script, keys, args, onLate));
  }

  /** Run one ops batch followed by WAIT (see {@link RedisDriverOptions.replicaAcks}). */
  private async runAcked(keys: readonly string[], packed: string, writes: boolean): Promise<OpsReply> {
    const acks = this.acks;
    if (!acks || !writes || this.acksRefused !== undefined) return { reply: await this.run(scripts.ops, keys, [packed]) };
    if (this.closed) throw new ClosedError('redis driver');
    const adapter = this.adapter ?? (await this.adapterReady);
    const { reply, wait } = await adapter.runAndWait(scripts.ops, keys, [packed], acks.replicas, acks.timeoutMs);
    if ('acked' in wait) {
      if (wait.acked >= acks.replicas) return { reply };
      return { reply, unacked: `only ${wait.acked} of ${acks.replicas} replica(s) acknowledged it within ${acks.timeoutMs} ms (WAIT)` };
    }
    if ('failed' in wait) {
      const why = wait.failed instanceof Error ? wait.failed.message : String(wait.failed);
      return { reply, unacked: `WAIT for ${acks.replicas} replica(s) failed (${why})` };
    }
    const why = wait.refused.message;
    if (acks.onRefused === 'fail') return { reply, unacked: `the server refuses WAIT (${why}), and replicaAcks.onRefused is 'fail'` };
    this.acksRefused = why;
    this.logger?.warn?.(
      `dlock redis: the server refuses WAIT (${why}); going on WITHOUT replica acknowledgements, so a failover may lose ` +
        "locks. Set replicaAcks.onRefused to 'fail' to refuse grants instead.",
      { error: wait.refused },
    );
    return { reply };
  }

  private async open(parsed: ParsedRedisUrl, url: string): Promise<RedisAdapter> {
    const { client } = await ioredisFor(parsed, {
      // No enableAutoPipelining: measured with `npm run bench` (ioredis 6), it made handoff p50
      // ~1.4x slower (a setImmediate and a Pipeline per command) and uncontended throughput ~1.5x
      // lower (the 64 loops fall into lockstep batches). Concurrent commands are still pipelined.
      maxRetriesPerRequest: 2,
      connectTimeout: 5000,
    });
    client.on('error', (error: unknown) => this.logger?.warn?.(`dlock redis: connection error (${redactUrl(url)})`, { error }));
    this.adapter = new IoRedisAdapter(client, true, { failFast: true });
    return this.adapter;
  }
}
