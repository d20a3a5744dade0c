import type { Cluster, Redis } from 'ioredis';
import { ioredisFor, parseRedisUrl, redactUrl, type ParsedRedisUrl } from '../../../drivers/redis/url.js';
import { unreachableLine } from '../../output.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';

/** Safety net: a run that dies before its cleanup leaves nothing behind for long. */
const KEY_TTL_MS = 60 * 60 * 1000;

/** One node, a Cluster (`redis+cluster://`) or a Sentinel-managed master (`redis+sentinel://`). */
type Client = Redis | Cluster;

function parse(url: string): ParsedRedisUrl {
  let parsed: ParsedRedisUrl;
  try {
    parsed = parseRedisUrl(url);
  } catch (e) {
    throw new DemoError(`"${redactUrl(url)}" is not a valid Redis URL: ${(e as Error).message}`, { cause: e });
  }
  if (parsed.kind === 'single' && new URL(parsed.url).hostname === '') throw new DemoError(`"${url}" names no host: use redis://HOST:PORT.`);
  return parsed;
}

function redacted(url: string): string {
  const parsed = parse(url);
  if (parsed.kind !== 'single') return redactUrl(url);
  const u = new URL(parsed.url);
  if (u.password) u.password = '***';
  return u.toString().replace(/\/$/, '');
}

/** Stock as a string key and orders as a list, next to the lock keys; every write is one MULTI. */
class RedisStore implements Store {
  readonly backend = 'redis';
  private readonly stockKey: string;
  private readonly ordersKey: string;
  private closed = false;

  constructor(
    private readonly redis: Client,
    item: string,
  ) {
    // One hash tag: both keys in one slot, so each MULTI also works on a Redis Cluster.
    this.stockKey = `dlock:demo:{flash-sale:${item}}:stock`;
    this.ordersKey = `dlock:demo:{flash-sale:${item}}:orders`;
  }

  async setup(stock: number): Promise<void> {
    await exec(this.redis.multi().del(this.ordersKey).set(this.stockKey, stock, 'PX', KEY_TTL_MS));
  }

  async readStock(): Promise<number> {
    const v = await this.redis.get(this.stockKey);
    if (v === null) throw new DemoError(`No stock key ${this.stockKey}: was the store set up (or did it expire)?`);
    return Number(v);
  }

  async recordSale(newStock: number, buyer: string): Promise<void> {
    await exec(
      this.redis
        .multi()
        .set(this.stockKey, newStock, 'PX', KEY_TTL_MS)
        .rpush(this.ordersKey, buyer)
        .pexpire(this.ordersKey, KEY_TTL_MS),
    );
  }

  async results(): Promise<{ stock: number; orders: number }> {
    const [stock, orders] = await Promise.all([this.readStock(), this.redis.llen(this.ordersKey)]);
    return { stock, orders };
  }

  async cleanup(): Promise<void> {
    await this.redis.del(this.stockKey, this.ordersKey);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

async function exec(multi: ReturnType<Client['multi']>): Promise<void> {
  const replies = await multi.exec();
  if (!replies) throw new DemoError('Redis aborted a MULTI transaction.');
  for (const [err] of replies) if (err) throw err;
}

export const redisStore: StoreFactory = {
  backend: 'redis',
  describe: redacted,
  async open(url, item) {
    const parsed = parse(url);
    let connected = false;
    const { client } = await ioredisFor(parsed, {
      lazyConnect: true,
      connectTimeout: 5000,
      // ioredis waits this long (default 2 s, on a timer that keeps the process alive) for a
      // socket to close after disconnect(): the CLI would hang that long after an error.
      disconnectTimeout: 200,
      maxRetriesPerRequest: 3,
      // Fail at once when the server is not there; during a run, reconnect a few times and give
      // up quickly when it is gone.
      retryStrategy: (times) => (!connected || times > 5 ? null : Math.min(times * 100, 1000)),
    });
    const redis = client as unknown as Client;
    // Without a listener, ioredis reports connection errors as unhandled 'error' events. The
    // socket error (ECONNREFUSED...) says more than connect()'s "Connection is closed".
    let socketError: Error | undefined;
    redis.on('error', (e: Error) => {
      socketError ??= e;
    });
    try {
      await redis.connect();
      connected = true;
    } catch (e) {
      redis.disconnect();
      const why = (socketError ?? (e as Error)).message.replace(/\.$/, '');
      throw new DemoError(unreachableLine('Redis', redacted(url), why), {
        cause: socketError ?? e,
      });
    }
    return new RedisStore(redis, item);
  },
};
