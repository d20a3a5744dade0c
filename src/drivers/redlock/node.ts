/**
 * One independent Redis node of a Redlock driver: its command connection (lock operations
 * batched per tick into one `redlock-ops.lua` call, see ../redis/batch.ts), and a subscriber
 * connection opened on the first wait.
 *
 * Nodes the driver opens from a URL fail fast while disconnected (`enableOfflineQueue: false`):
 * a dead node answers "unreachable" at once instead of holding a round up until its deadline,
 * and ioredis keeps reconnecting in the background. A client passed in keeps its own settings.
 */
import type { Logger } from '../../core/renewal.js';
import { InvalidArgumentError, OutOfRangeError } from '../../errors.js';
import { importIoredis } from '../redis/peer.js';
import {
  IoRedisAdapter,
  NodeRedisAdapter,
  isIoRedis,
  type ScanNode,
  isNodeRedis,
  type IoRedisLike,
  type NodeRedisLike,
  type RedisAdapter,
  type Subscriber,
} from '../redis/adapter.js';
import { OpBatcher, type OpCode } from '../redis/batch.js';
import type { LuaScript } from '../redis/script.js';
import * as scripts from '../redis/scripts.generated.js';

type IoRedis = import('ioredis').Redis;

/** A node of {@link RedlockDriver}: a `redis://` / `rediss://` URL, or a client (ioredis or node-redis). */
export type RedlockNodeSpec = string | IoRedisLike | NodeRedisLike;

/** Called with the channel of every message a node's subscriber receives. */
export type OnMessage = (channel: string) => void;

export class RedlockNode {
  private adapter: RedisAdapter | undefined;
  private readonly ready: Promise<RedisAdapter>;
  private readonly batcher = new OpBatcher(scripts.redlockOps, (script, keys, args) => this.run(script, keys, args));
  private sub: Promise<Subscriber> | undefined;
  /** ioredis connections this node opened (URL nodes), closed in {@link close}. */
  private readonly owned: IoRedis[] = [];

  constructor(
    private readonly spec: RedlockNodeSpec,
    /** `host:port` (URL nodes) or `node<i>`: names the node in errors. */
    readonly label: string,
    private readonly timeoutMs: number,
    private readonly logger: Logger | undefined,
  ) {
    if (typeof spec === 'string') {
      this.ready = this.open(spec);
      this.ready.catch(() => undefined);
    } else if (isNodeRedis(spec)) {
      this.adapter = new NodeRedisAdapter(spec, false);
      this.ready = Promise.resolve(this.adapter);
    } else if (isIoRedis(spec)) {
      this.adapter = new IoRedisAdapter(spec, false);
      this.ready = Promise.resolve(this.adapter);
    } else {
      throw new InvalidArgumentError(`Redlock node ${label} must be a redis:// URL, an ioredis client or a node-redis client.`);
    }
  }

  /** One lock operation of `redlock-ops.lua`; joins this tick's batch. Resolves its answer line. */
  op(code: OpCode, lock: string, owner: string, arg: string): Promise<string> {
    return this.batcher.submit('', code, lock, owner, arg);
  }

  /** Run a script on this node (lock operations queued before it go first). */
  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    if (script !== scripts.redlockOps) this.batcher.flush();
    const ran = this.adapter ? this.adapter.run(script, keys, args) : this.ready.then((a) => a.run(script, keys, args));
    return ran.catch(this.onError);
  }

  /** This node as a listing SCANs it (see `scanPage` in redis/scan.ts). */
  async scanNode(): Promise<ScanNode> {
    this.batcher.flush();
    const adapter = this.adapter ?? (await this.ready);
    const [node] = await adapter.scanNodes().catch(this.onError);
    if (!node) throw new Error(`dlock redlock: node ${this.label} has nothing to scan`);
    return node;
  }

  /**
   * Set once the node refused the URL's db (`SELECT`, see `IoRedisAdapter`): every command on it
   * fails with this error from then on.
   */
  dbError: OutOfRangeError | undefined;

  private readonly onError = (e: unknown): never => {
    if (e instanceof OutOfRangeError && e.option === 'db') this.dbError = e;
    throw e;
  };

  /** The node's subscriber connection (opened once). */
  subscriber(onMessage: OnMessage): Promise<Subscriber> {
    if (!this.sub) {
      const onError = (error: unknown): void => this.logger?.warn?.(`dlock redlock: subscriber error on ${this.label}`, { error });
      const sub =
        typeof this.spec === 'string'
          ? Promise.resolve(this.openSubscriber(this.spec, onMessage, onError))
          : this.ready.then((a) => a.subscriber((channel) => onMessage(channel), onError));
      sub.catch(() => {
        if (this.sub === sub) this.sub = undefined;
      });
      this.sub = sub;
    }
    return this.sub;
  }

  async close(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    // First let every connection this node is opening come into existence, then close them all.
    await sub?.then((s) => s.close()).catch(() => undefined);
    await this.ready.then((a) => a.close()).catch(() => undefined);
    await Promise.all(this.owned.map(closeIoRedis));
  }

  private async open(url: string): Promise<RedisAdapter> {
    const { Redis } = await importIoredis();
    const client = new Redis(url, {
      lazyConnect: true,
      // Fail fast while disconnected: a dead node must not hold a quorum round up.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: this.timeoutMs,
      retryStrategy: (times) => Math.min(times * 50, 1000),
    });
    client.on('error', (error: unknown) => this.logger?.warn?.(`dlock redlock: connection error on ${this.label}`, { error }));
    this.owned.push(client);
    // The first connection attempt is awaited (commands before it would fail); after a failure
    // ioredis keeps reconnecting in the background and commands fail fast until it is back.
    await client.connect().catch(() => undefined);
    this.adapter = new IoRedisAdapter(client, false);
    return this.adapter;
  }

  private openSubscriber(url: string, onMessage: OnMessage, onError: (e: unknown) => void): Subscriber {
    // A dedicated connection (the URL client is in fail-fast mode; a subscription may wait for a
    // node that is down, and ioredis re-subscribes after a reconnect).
    const create = async (): Promise<IoRedis> => {
      const { Redis } = await importIoredis();
      const sub = new Redis(url, { connectTimeout: this.timeoutMs, retryStrategy: (times) => Math.min(times * 50, 1000) });
      sub.on('error', onError);
      sub.on('message', (channel: unknown) => onMessage(String(channel)));
      this.owned.push(sub);
      return sub;
    };
    const conn = create();
    conn.catch(() => undefined);
    return {
      subscribe: async (channel) => {
        await (await conn).subscribe(channel);
      },
      unsubscribe: async (channel) => {
        await (await conn).unsubscribe(channel);
      },
      // Closed with the node's other connections (see close()); here, only wait until it exists.
      close: async () => {
        await conn.catch(() => undefined);
      },
    };
  }
}

/**
 * QUIT when connected (waiting, at most 1 s, for the socket to end); between reconnection
 * attempts there is no socket, so just cancel the next attempt (ioredis emits no 'end' then).
 */
function closeIoRedis(c: IoRedis): Promise<void> {
  if (c.status === 'end') return Promise.resolve();
  if (c.status !== 'ready' && c.status !== 'connect' && c.status !== 'connecting') {
    c.disconnect();
    return Promise.resolve();
  }
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      c.disconnect();
      resolve();
    }, 1000);
    c.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
    if (c.status === 'ready') c.quit().catch(() => c.disconnect());
    else c.disconnect();
  });
}
