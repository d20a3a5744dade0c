/**
 * Redis driver: one Redis node (or a Redis Cluster), through `ioredis` or `redis` (node-redis).
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
 *   most one TTL, and nothing polls at a fixed interval. Arrivals may still take a lock that
 *   expired (rather than being released) before the queue's head re-tries: FIFO on release only.
 * - A lock's keys share a hash tag (`dlock:{key}`, `dlock:{key}:fence`) so they stay in one
 *   Redis Cluster slot.
 * Does not:
 * - survive a failover or a restart without persistence: replication is asynchronous, so a
 *   promoted replica may not have the lock, and a restarted node without AOF forgets it (and may
 *   reset the fence counter and the id counters of `allocateRange`, so segment ids could repeat).
 *   Use fencing on the resource, or the Redlock driver; for ids, `appendonly yes` + `appendfsync always`.
 * - Fence counters stay in Redis (one small key per lock name ever used).
 * - A waiter that dies while queued can still be handed the lock until its queue entry lapses
 *   (the holder's remaining TTL + 2 s after its last try); the lock then idles until its TTL.
 */
import { LatchWatch } from '../../core/change-watch.js';
import { monotonicNow } from '../../core/clock.js';
import { parseOwner } from '../../core/owner.js';
import type { Logger } from '../../core/renewal.js';
import { TrySetWaitQueue } from '../../core/try-set-wait.js';
import { ClosedError, IdsExhaustedError, InvalidArgumentError } from '../../errors.js';
import type {
  AcquireRequest,
  ChangeWatch,
  DriverInfo,
  ExtendItem,
  Grant,
  LockDriver,
  LockState,
  TryResult,
  WaitContext,
} from '../driver.js';
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
import { OpBatcher, type OpCode } from './batch.js';
import type { LuaScript } from './script.js';
import * as scripts from './scripts.generated.js';

export { FencedRedisHash } from './fenced.js';
export type { IoRedisLike, NodeRedisLike } from './adapter.js';

/** Options of {@link RedisDriver}. Give exactly one of `client` or `url`. */
export interface RedisDriverOptions {
  /**
   * An `ioredis` Redis or Cluster instance, or a connected node-redis client. The driver never
   * closes a client you pass (it closes only the subscriber connection it duplicates from it).
   */
  client?: IoRedisLike | NodeRedisLike;
  /** `redis://[user:pass@]host:port[/db]` or `rediss://...`: the driver opens its own ioredis connection. */
  url?: string;
  /** Prefix of every key and channel. Default `dlock`. */
  prefix?: string;
  /**
   * Whether `client` is a Redis Cluster client (detected for ioredis `Cluster` and node-redis
   * cluster clients). Batched operations are then grouped per lock so each batch stays in one slot.
   */
  cluster?: boolean;
  logger?: Logger;
}

/** The Redis names used for one lock. */
export interface RedisLockKeys {
  /** Holds `<owner>|<token>` with a PX expiry. */
  readonly lock: string;
  /** The fencing counter (never expires). */
  readonly fence: string;
  /** Durable high-water mark (worker-id leases); never expires. */
  readonly mark: string;
  /** Waiting owners in arrival order (a list). */
  readonly queue: string;
  /** Each waiting owner's "<expiry ms> <ttl ms>" (a hash). */
  readonly queueInfo: string;
}

/** See the file header for what it guarantees. */
export class RedisDriver implements LockDriver {
  readonly info: DriverInfo = { name: 'redis', liveness: 'lease', fair: false, scope: 'distributed' };
  private adapter: RedisAdapter | undefined;
  private readonly adapterReady: Promise<RedisAdapter>;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly waiter = new TrySetWaitQueue(this);
  private readonly batcher = new OpBatcher(scripts.ops, (script, keys, args) => this.run(script, keys, args));
  /** Batches are grouped per lock key on a cluster (one slot each), else one group. */
  private readonly cluster: boolean;
  /** Client channels subscribed (normally one: this driver's client). */
  private readonly clientChannels = new Map<string, Promise<void>>();
  /** Open waits by owner id: a handoff names the owner it granted. */
  private readonly waiting = new Map<string, LatchWatch>();
  private sub: Promise<Subscriber> | undefined;
  private closed = false;

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
    this.cluster = options.cluster ?? isClusterClient(client);
    if (client !== undefined) {
      if (isNodeRedis(client)) this.adapter = new NodeRedisAdapter(client, false);
      else if (isIoRedis(client)) this.adapter = new IoRedisAdapter(client, false);
      else throw new InvalidArgumentError('client must be an ioredis Redis/Cluster or a node-redis client.');
      this.adapterReady = Promise.resolve(this.adapter);
    } else {
      if (typeof url !== 'string' || !/^rediss?:\/\//i.test(url)) {
        throw new InvalidArgumentError(`url must look like redis://host:port, got ${JSON.stringify(url)}.`);
      }
      this.adapterReady = this.open(url);
      this.adapterReady.catch(() => undefined);
    }
  }

  /** The Redis names of the lock `key` (all in one cluster slot). */
  keysFor(key: string): RedisLockKeys {
    const base = `${this.prefix}:{${key}}`;
    return { lock: base, fence: `${base}:fence`, mark: `${base}:mark`, queue: `${base}:q`, queueInfo: `${base}:qw` };
  }

  async tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    const k = this.keysFor(req.key);
    const sentAt = monotonicNow();
    const r = await this.op(req.key, queue ? 'q' : 'a', k.lock, req.owner, String(req.ttlMs));
    if (r.charCodeAt(0) === 49 /* '1' */) return { ok: true, grant: { token: BigInt(r.slice(1)), sentAt } };
    return { ok: false, retryAfterMs: Number(r.slice(1)) };
  }

  acquire(req: AcquireRequest, wait: WaitContext): Promise<Grant | null> {
    return this.waiter.acquire(req, wait);
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    // Joins the tick's batch (one script per cluster slot group).
    return Promise.all(
      items.map(async (it) => (await this.op(it.key, 'e', this.keysFor(it.key).lock, it.owner, String(it.ttlMs))) === '1'),
    );
  }

  async release(key: string, owner: string): Promise<boolean> {
    return (await this.op(key, 'r', this.keysFor(key).lock, owner, '')) === '1';
  }

  async inspect(key: string): Promise<LockState | null> {
    const r = (await this.run(scripts.inspect, [this.keysFor(key).lock], [])) as [string, number] | null;
    if (!r) return null;
    // "<owner>|<token>", with "|w" appended once someone waits (see ops.lua).
    const [owner = '', token = '0'] = String(r[0]).split('|');
    return { owner, token: BigInt(token), remainingMs: Number(r[1]) };
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
      subscribing.catch(() => {
        if (this.clientChannels.get(name) === subscribing) this.clientChannels.delete(name);
      });
      ready = subscribing;
    }
    await ready;
    const watch: LatchWatch = new LatchWatch(() => {
      if (this.waiting.get(owner) === watch) this.waiting.delete(owner);
    });
    this.waiting.set(owner, watch);
    return watch;
  }

  /** The waiter `owner` gives up: leave the queue, passing on a handoff that raced with it. */
  async cancel(key: string, owner: string): Promise<void> {
    await this.op(key, 'c', this.keysFor(key).lock, owner, '');
  }

  /** Number of waits with an open watch (lets tests check that finished waits leave nothing). */
  get openWatches(): number {
    return this.waiting.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Waits aborted by the client's close leave the server's queue before the connection goes.
    await this.waiter.drain(2000);
    this.closed = true;
    this.clientChannels.clear();
    this.waiting.clear();
    const sub = this.sub;
    this.sub = undefined;
    await Promise.all([
      sub?.then((s) => s.close()).catch(() => undefined),
      this.adapterReady.then((a) => a.close()).catch(() => undefined),
    ]);
  }

  private clientChannel(owner: string): string {
    // ops.lua derives the same name from the owner id.
    return `${this.prefix}:c:${parseOwner(owner)?.clientId ?? owner}`;
  }

  private subscriber(): Promise<Subscriber> {
    this.sub ??= this.adapterReady.then((a) =>
      a.subscriber(
        (_channel, message) => {
          // "<owner>|<token>": the lock was handed to that waiter.
          const bar = message.lastIndexOf('|');
          this.waiting.get(message.slice(0, bar))?.granted(BigInt(message.slice(bar + 1)));
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

  private run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new ClosedError('redis driver'));
    // Queued lock operations go first: a release followed by an inspect must be seen in that order.
    if (script !== scripts.ops) this.batcher.flush();
    if (this.adapter) return this.adapter.run(script, keys, args);
    return this.adapterReady.then((a) => a.run(script, keys, args));
  }

  private async open(url: string): Promise<RedisAdapter> {
    const { Redis } = await import('ioredis');
    const client = new Redis(url, {
      // No enableAutoPipelining: measured with `npm run bench` (ioredis 6), it made handoff p50
      // ~1.4x slower (a setImmediate and a Pipeline per command) and uncontended throughput ~1.5x
      // lower (the 64 loops fall into lockstep batches). Concurrent commands are still pipelined.
      maxRetriesPerRequest: 2,
      connectTimeout: 5000,
    });
    client.on('error', (error: unknown) => this.logger?.warn?.('dlock redis: connection error', { error }));
    this.adapter = new IoRedisAdapter(client, true);
    return this.adapter;
  }
}
