/**
 * One small surface over the two Redis clients people use, `ioredis` (Redis and Cluster) and
 * `redis` (node-redis v4+), so the driver is written once. Only what the driver needs: run a Lua
 * script (EVALSHA, falling back to EVAL once on NOSCRIPT), and a dedicated subscriber connection.
 * Both libraries are optional peer dependencies; neither is imported here.
 */
import type { LuaScript } from './script.js';

/** A connection in subscriber mode. */
export interface Subscriber {
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  close(): Promise<void>;
}

export interface RedisAdapter {
  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown>;
  /** A duplicate connection for SUBSCRIBE; `onMessage` receives every channel message. */
  subscriber(onMessage: (channel: string, message: string) => void, onError: (e: unknown) => void): Promise<Subscriber>;
  /** Close the connection if this adapter created it; leave a caller's client alone. */
  close(): Promise<void>;
}

/** Structural view of an ioredis `Redis` or `Cluster`. */
export interface IoRedisLike {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  duplicate(): IoRedisLike;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  on(event: string, listener: (...args: never[]) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(): void;
  status?: string;
}

/** Structural view of a node-redis client (v4 and later). */
export interface NodeRedisLike {
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  duplicate(): NodeRedisLike;
  connect(): Promise<unknown>;
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  on(event: string, listener: (...args: never[]) => void): unknown;
  quit?(): Promise<unknown>;
  close?(): Promise<unknown>;
  isOpen?: boolean;
}

export function isNodeRedis(c: unknown): c is NodeRedisLike {
  return typeof c === 'object' && c !== null && typeof (c as NodeRedisLike).evalSha === 'function';
}

export function isIoRedis(c: unknown): c is IoRedisLike {
  return typeof c === 'object' && c !== null && typeof (c as IoRedisLike).evalsha === 'function';
}

/** ioredis `Cluster` (isCluster) or a node-redis cluster client (has `masters`). */
export function isClusterClient(c: unknown): boolean {
  if (typeof c !== 'object' || c === null) return false;
  return (c as { isCluster?: unknown }).isCluster === true || Array.isArray((c as { masters?: unknown }).masters);
}

function isNoScript(e: unknown): boolean {
  return e instanceof Error && e.message.includes('NOSCRIPT');
}

export class IoRedisAdapter implements RedisAdapter {
  constructor(
    private readonly client: IoRedisLike,
    private readonly owned: boolean,
  ) {}

  async run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(script.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!isNoScript(e)) throw e;
      return this.client.eval(script.source, keys.length, ...keys, ...args);
    }
  }

  subscriber(onMessage: (channel: string, message: string) => void, onError: (e: unknown) => void): Promise<Subscriber> {
    const sub = this.client.duplicate();
    sub.on('error', onError);
    sub.on('message', (channel: never, message: never) => onMessage(channel, message));
    return Promise.resolve({
      subscribe: async (channel) => {
        await sub.subscribe(channel);
      },
      unsubscribe: async (channel) => {
        await sub.unsubscribe(channel);
      },
      close: () => quitIoRedis(sub),
    });
  }

  async close(): Promise<void> {
    if (this.owned) await quitIoRedis(this.client);
  }
}

export class NodeRedisAdapter implements RedisAdapter {
  constructor(
    private readonly client: NodeRedisLike,
    private readonly owned: boolean,
  ) {}

  async run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const options = { keys: [...keys], arguments: args.map(String) };
    try {
      return await this.client.evalSha(script.sha, options);
    } catch (e) {
      if (!isNoScript(e)) throw e;
      return this.client.eval(script.source, options);
    }
  }

  async subscriber(onMessage: (channel: string, message: string) => void, onError: (e: unknown) => void): Promise<Subscriber> {
    const sub = this.client.duplicate();
    sub.on('error', onError);
    await sub.connect();
    return {
      subscribe: async (channel) => {
        await sub.subscribe(channel, (message, ch) => onMessage(ch, message));
      },
      unsubscribe: async (channel) => {
        await sub.unsubscribe(channel);
      },
      close: async () => {
        await closeNodeRedis(sub);
      },
    };
  }

  async close(): Promise<void> {
    if (this.owned) await closeNodeRedis(this.client);
  }
}

/** QUIT, and resolve only once the socket is gone (ioredis resolves quit() on the server's OK). */
function quitIoRedis(c: IoRedisLike): Promise<void> {
  if (c.status === 'end') return Promise.resolve();
  return new Promise<void>((resolve) => {
    c.on('end', () => resolve());
    c.quit().catch(() => c.disconnect());
  });
}

async function closeNodeRedis(c: NodeRedisLike): Promise<void> {
  if (c.isOpen === false) return;
  if (typeof c.close === 'function') await c.close().catch(() => undefined);
  else await c.quit?.().catch(() => undefined);
}
