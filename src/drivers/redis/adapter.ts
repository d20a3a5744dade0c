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

/**
 * What `WAIT` answered after a script: the number of replicas that acknowledged, or the error
 * reply of a server that refuses WAIT (`refused`), or another failure (connection lost...).
 */
export type WaitOutcome = { readonly acked: number } | { readonly refused: Error } | { readonly failed: unknown };

export interface RedisAdapter {
  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown>;
  /**
   * Run `script` and `WAIT replicas timeoutMs` right behind it, pipelined on the SAME connection
   * (WAIT only counts that connection's writes; on a cluster both are routed by `keys[0]`), so a
   * reconnect between the two cannot make WAIT vouch for a write it never saw. Rejects only when
   * the script itself fails.
   */
  runAndWait(
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
    replicas: number,
    timeoutMs: number,
  ): Promise<{ reply: unknown; wait: WaitOutcome }>;
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
  // `any[]`, as ioredis declares it: `Cluster.on` takes `(...args: any[]) => void`, which
  // neither `never[]` nor `unknown[]` would accept, and a Cluster must be assignable here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  on(event: string, listener: (...args: any[]) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(): void;
  pipeline(): IoRedisPipelineLike;
  status?: string;
}

/** The part of an ioredis `Pipeline` the driver uses. */
export interface IoRedisPipelineLike {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): IoRedisPipelineLike;
  eval(script: string, numKeys: number, ...args: (string | number)[]): IoRedisPipelineLike;
  call(command: string, ...args: (string | number)[]): IoRedisPipelineLike;
  exec(): Promise<Array<[Error | null, unknown]> | null>;
}

/** Structural view of a node-redis client (v4 and later). */
export interface NodeRedisLike {
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  duplicate(): NodeRedisLike;
  connect(): Promise<unknown>;
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  // `any[]` as node-redis declares it (see IoRedisLike.on).
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  on(event: string, listener: (...args: any[]) => void): unknown;
  quit?(): Promise<unknown>;
  close?(): Promise<unknown>;
  /** Client: `sendCommand(args)`; cluster client: `sendCommand(firstKey, isReadonly, args)`. */
  sendCommand(...args: unknown[]): Promise<unknown>;
  /** Cluster client (node-redis 5.x and later): the connection to the node serving `key`'s slot. */
  getNodeClientForKey?(key: string, isReadonly: boolean): NodeRedisLike | Promise<NodeRedisLike>;
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

/** An error reply of the server (as opposed to a connection or client failure). */
function isErrorReply(e: unknown): e is Error {
  if (!(e instanceof Error)) return false;
  return e.name === 'ReplyError' || e.name === 'ErrorReply' || /^[A-Z][A-Z_]+ /.test(e.message);
}

function waitOutcome(ok: boolean, value: unknown): WaitOutcome {
  if (ok) return { acked: Number(value) };
  return isErrorReply(value) ? { refused: value } : { failed: value };
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

  async runAndWait(
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
    replicas: number,
    timeoutMs: number,
  ): Promise<{ reply: unknown; wait: WaitOutcome }> {
    // A pipeline: one write, one connection (on a Cluster, the node of keys[0]'s slot).
    const once = async (p: IoRedisPipelineLike): Promise<Array<[Error | null, unknown]>> =>
      (await p.call('WAIT', replicas, timeoutMs).exec()) ?? [];
    let results = await once(this.client.pipeline().evalsha(script.sha, keys.length, ...keys, ...args));
    if (isNoScript(results[0]?.[0])) results = await once(this.client.pipeline().eval(script.source, keys.length, ...keys, ...args));
    const [ran, waited] = results;
    if (!ran) throw new Error('dlock: the pipeline returned no script reply');
    if (ran[0]) throw ran[0];
    if (!waited) return { reply: ran[1], wait: { failed: new Error('the pipeline returned no WAIT reply') } };
    return { reply: ran[1], wait: waited[0] ? waitOutcome(false, waited[0]) : waitOutcome(true, waited[1]) };
  }

  subscriber(onMessage: (channel: string, message: string) => void, onError: (e: unknown) => void): Promise<Subscriber> {
    const sub = this.client.duplicate();
    sub.on('error', onError);
    sub.on('message', (channel: string, message: string) => onMessage(channel, message));
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
  private readonly cluster: boolean;
  constructor(
    private readonly client: NodeRedisLike,
    private readonly owned: boolean,
  ) {
    this.cluster = isClusterClient(client);
  }

  async run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const options = { keys: [...keys], arguments: args.map(String) };
    try {
      return await this.client.evalSha(script.sha, options);
    } catch (e) {
      if (!isNoScript(e)) throw e;
      return this.client.eval(script.source, options);
    }
  }

  async runAndWait(
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
    replicas: number,
    timeoutMs: number,
  ): Promise<{ reply: unknown; wait: WaitOutcome }> {
    // On a cluster client, WAIT is sent to EVERY master and answers the minimum (its command
    // tips say all_shards / agg_min): it must go to the node of the lock's slot instead, on the
    // connection the script used. So both run on that node's own client.
    let node = this.client;
    if (this.cluster) {
      const key = keys[0] ?? '';
      if (typeof this.client.getNodeClientForKey !== 'function') {
        const refused = new Error('this node-redis cluster client cannot send WAIT to one node (getNodeClientForKey needs node-redis 5 or later)');
        return { reply: await this.run(script, keys, args), wait: { refused } };
      }
      node = await this.client.getNodeClientForKey(key, false);
    }
    const options = { keys: [...keys], arguments: args.map(String) };
    const waitArgs = ['WAIT', String(replicas), String(timeoutMs)];
    // Issued in one tick on one client, node-redis writes both on its socket in this order.
    const once = (evaluate: () => Promise<unknown>): Promise<[PromiseSettledResult<unknown>, PromiseSettledResult<unknown>]> =>
      Promise.allSettled([evaluate(), node.sendCommand(waitArgs)]);
    let [r, w] = await once(() => node.evalSha(script.sha, options));
    if (r.status === 'rejected' && isNoScript(r.reason)) [r, w] = await once(() => node.eval(script.source, options));
    if (r.status === 'rejected') {
      // The slot moved (resharding, failover): the node client does not follow redirects. Run the
      // script through the cluster client, which does (and refreshes its slot map); its writes
      // then count as unacknowledged.
      if (!this.cluster || !/^(MOVED|ASK) /.test(String((r.reason as Error)?.message))) throw r.reason;
      return { reply: await this.run(script, keys, args), wait: { failed: r.reason } };
    }
    return { reply: r.value, wait: w.status === 'fulfilled' ? waitOutcome(true, w.value) : waitOutcome(false, w.reason) };
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

/**
 * QUIT when connected, and resolve only once the socket is gone (ioredis resolves quit() on the
 * server's OK); drop the connection at once when it is not ready (a QUIT would wait in the
 * offline queue while ioredis keeps reconnecting to a server that is gone). Bounded either way.
 */
function quitIoRedis(c: IoRedisLike): Promise<void> {
  if (c.status === 'end') return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      c.disconnect();
      resolve();
    }, 2000);
    c.on('end', () => {
      clearTimeout(timer);
      resolve();
    });
    if (c.status === 'ready') c.quit().catch(() => c.disconnect());
    else c.disconnect();
  });
}

async function closeNodeRedis(c: NodeRedisLike): Promise<void> {
  if (c.isOpen === false) return;
  if (typeof c.close === 'function') await c.close().catch(() => undefined);
  else await c.quit?.().catch(() => undefined);
}
