/**
 * One small surface over the two Redis clients people use, `ioredis` (Redis and Cluster) and
 * `redis` (node-redis v4+), so the driver is written once. Only what the driver needs: run a Lua
 * script (EVALSHA, falling back to EVAL once on NOSCRIPT), and a dedicated subscriber connection.
 * Both libraries are optional peer dependencies; neither is imported here.
 */
import { OutOfRangeError } from '../../errors.js';
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

/** One master to SCAN ({@link RedisAdapter.scanNodes}). */
export interface ScanNode {
  /** `host:port` (a single node or Sentinel's master: `node`): names it in a listing cursor. */
  readonly address: string;
  /** `SCAN cursor MATCH match COUNT count TYPE string` on this node. */
  scan(cursor: string, match: string, count: number): Promise<{ readonly cursor: string; readonly keys: readonly string[] }>;
}

export interface RedisAdapter {
  /** The masters to SCAN for a listing, sorted by address: the one node, or every master of a cluster. */
  scanNodes(): Promise<readonly ScanNode[]>;
  /**
   * Run a script. With `failFast` (see {@link ConnectionHealth}) it rejects at once while the
   * connection is down, and also when the connection fails while the script is pending; the
   * client may still run it after a reconnect, and `onLate` then receives its reply (so a grant
   * nobody waits for any more can be given back).
   */
  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[], onLate?: (reply: unknown) => void): Promise<unknown>;
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

/** The fields of ioredis `Redis#options` the adapter reads. */
function connectionOptions(c: IoRedisLike): { db?: unknown; host?: unknown; port?: unknown; sentinels?: unknown } | undefined {
  return c.options;
}

/** Clients dlock is closing itself: an 'end' of theirs is not the Sentinel race below. */
const closing = new WeakSet<IoRedisLike>();
/** How soon a client ended by the Sentinel race connects again. */
const REVIVE_MS = 50;

/**
 * Work around an ioredis 6 race with Sentinels and `failoverDetector` (dlock's URL clients set it):
 * the failover detector of an earlier connection hears `+switch-master` while the client is
 * reconnecting and calls the connector's `disconnect()`; the connect in progress then rejects
 * ("Connection is closed.") and ioredis sets the client to `end` for good, so every later command
 * fails although the promoted replica serves. Seen in test/drivers/redis-sentinel.test.ts under
 * load: a holder's renewals all failed with "Connection is closed." and it lost its lock 59 s
 * after the failover. A client dlock owns (one it opened from a URL, or the subscriber it
 * duplicated) that ends that way (straight from `connecting`, not closed by anyone) connects
 * again; `onRevived` runs once it is ready (the subscriber subscribes to its channels again:
 * ioredis restores subscriptions only across its own reconnects). Clients passed in are the
 * caller's to manage and are left alone.
 */
function reviveAfterSentinelRace(c: IoRedisLike, onRevived?: () => void): void {
  if (connectionOptions(c)?.sentinels === undefined) return;
  let last = '';
  for (const status of ['connecting', 'connect', 'ready', 'close', 'reconnecting']) c.on(status, () => (last = status));
  c.on('end', () => {
    const raced = last === 'connecting' && (c as { manuallyClosing?: boolean }).manuallyClosing !== true && !closing.has(c);
    last = 'end';
    if (!raced || typeof c.connect !== 'function') return;
    setTimeout(() => {
      if (c.status !== 'end' || closing.has(c)) return;
      c.connect?.().then(
        () => onRevived?.(),
        () => undefined, // it ends again or keeps retrying; its 'error' listener hears why
      );
    }, REVIVE_MS).unref();
  });
}

/** Structural view of an ioredis `Redis` or `Cluster`. */
export interface IoRedisLike {
  /** EVALSHA. */
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  /** EVAL (after NOSCRIPT). */
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  /** A new connection with the same options (the subscriber). */
  duplicate(): IoRedisLike;
  /** SUBSCRIBE. */
  subscribe(...channels: string[]): Promise<unknown>;
  /** UNSUBSCRIBE. */
  unsubscribe(...channels: string[]): Promise<unknown>;
  /** Event listener (`error`, `message`, `end`). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Close gracefully. */
  quit(): Promise<unknown>;
  /** Close at once. */
  disconnect(): void;
  /** A pipeline (script and `WAIT` on one connection). */
  pipeline(): IoRedisPipelineLike;
  /** Any command (ioredis `Redis#call`): used for the one-time `SELECT` check of a db > 0. */
  call?(command: string, ...args: (string | number)[]): Promise<unknown>;
  /**
   * ioredis `Redis#options`: `db`, `host` and `port` are read from it (a Cluster has no `db`). Typed
   * `object` so that a `Cluster`, whose options share none of these names, is accepted too.
   */
  options?: object;
  /** Connection status (`ready`, `end`, ...). */
  status?: string;
  /** ioredis `Redis#connect`: connects again a client that ended (dlock does so after an ioredis Sentinel race, see adapter.ts). */
  connect?(): Promise<unknown>;
  /** ioredis `Cluster#nodes(role)`: a client per node (listing SCANs every master). */
  nodes?(role: 'master'): IoRedisLike[];
}

/** The part of an ioredis `Pipeline` the driver uses. */
export interface IoRedisPipelineLike {
  /** Queue EVALSHA. */
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): IoRedisPipelineLike;
  /** Queue EVAL. */
  eval(script: string, numKeys: number, ...args: (string | number)[]): IoRedisPipelineLike;
  /** Queue any command. */
  call(command: string, ...args: (string | number)[]): IoRedisPipelineLike;
  /** Send the queued commands; one `[error, reply]` per command. */
  exec(): Promise<Array<[Error | null, unknown]> | null>;
}

/** A node of a node-redis cluster client (`cluster.masters`), as the listing reads it. */
export interface NodeRedisNode {
  /** `host:port`. */
  readonly address: string;
}

/** Structural view of a node-redis client (v4 and later). */
export interface NodeRedisLike {
  /** EVALSHA. */
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** EVAL (after NOSCRIPT). */
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** A new client with the same options (the subscriber). */
  duplicate(): NodeRedisLike;
  /** Open the connection. */
  connect(): Promise<unknown>;
  /** SUBSCRIBE with a listener. */
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  /** UNSUBSCRIBE. */
  unsubscribe(channel: string): Promise<unknown>;
  /** Event listener (`error`, `end`). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Close gracefully (node-redis 4). */
  quit?(): Promise<unknown>;
  /** Close gracefully (node-redis 5). */
  close?(): Promise<unknown>;
  /** Client: `sendCommand(args)`; cluster client: `sendCommand(firstKey, isReadonly, args)`. */
  sendCommand(...args: unknown[]): Promise<unknown>;
  /** Cluster client (node-redis 5.x and later): the connection to the node serving `key`'s slot. */
  getNodeClientForKey?(key: string, isReadonly: boolean): NodeRedisLike | Promise<NodeRedisLike>;
  /** Whether the connection is open. */
  isOpen?: boolean;
  /** Whether the connection is open and ready for commands (node-redis 4+; absent on clusters). */
  isReady?: boolean;
  /** Cluster client: its masters (listing SCANs every one). */
  readonly masters?: readonly NodeRedisNode[];
  /** Cluster client (node-redis 5 and later): the connection to one of its nodes. */
  nodeClient?(node: NodeRedisNode): NodeRedisLike | Promise<NodeRedisLike>;
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

/** The arguments of one listing SCAN. */
function scanArgs(cursor: string, match: string, count: number): string[] {
  return ['SCAN', cursor, 'MATCH', match, 'COUNT', String(count), 'TYPE', 'string'];
}

/** A SCAN reply `[cursor, [key...]]` (strings or Buffers). */
function scanReply(reply: unknown): { cursor: string; keys: string[] } {
  const [cursor, keys] = Array.isArray(reply) ? (reply as [unknown, unknown]) : [];
  if ((typeof cursor !== 'string' && !Buffer.isBuffer(cursor)) || !Array.isArray(keys)) throw new Error(`dlock: unexpected SCAN reply ${JSON.stringify(reply)}`);
  return { cursor: cursor.toString(), keys: keys.map((k: unknown) => (Buffer.isBuffer(k) ? k.toString() : String(k))) };
}

function byAddress(nodes: ScanNode[]): ScanNode[] {
  return nodes.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

function waitOutcome(ok: boolean, value: unknown): WaitOutcome {
  if (ok) return { acked: Number(value) };
  return isErrorReply(value) ? { refused: value } : { failed: value };
}

/**
 * Whether a client's connection is down, from the client's own events: the last connection
 * error since the last 'ready'. While it is down, commands fail at once with that error (the
 * client's own: ECONNREFUSED, ENOTFOUND, ...) instead of waiting in the client's offline queue
 * through its reconnect attempts (ioredis: `maxRetriesPerRequest` times its retry delay, 20 by
 * default: seconds), and a client-side "gave up" error (ioredis `MaxRetriesPerRequestError`,
 * "Connection is closed.", node-redis `ClientClosedError`...) is replaced by that cause.
 *
 * A command pending when the connection fails (written, or queued by the client before the
 * first error was seen) is reported failed with that error at once ({@link guard}); the client
 * may still resend it after a reconnect, and its late reply then goes to `onLate`. Attaching an
 * 'error' listener also silences ioredis's "Unhandled error event" print on a client passed in;
 * `detach()` removes it.
 */
export class ConnectionHealth {
  private lastError: Error | undefined;
  private readonly detachers: Array<() => void> = [];
  /** Rejecters of the commands in flight. */
  private readonly pending = new Set<(e: Error) => void>();

  constructor(
    client: IoRedisLike | NodeRedisLike,
    private readonly isUp: () => boolean,
  ) {
    const listen = (event: string, fn: (e: unknown) => void): void => {
      client.on(event, fn);
      // Both clients are EventEmitters (left out of the structural types: their overloads differ).
      this.detachers.push(() => (client as unknown as { removeListener(e: string, f: typeof fn): unknown }).removeListener(event, fn));
    };
    listen('error', (e: unknown) => {
      // An error while connected is a command's or a subscriber's business, not the link's; so
      // is a server's refusal during the handshake (a SELECT of a db it lacks: see checkDb).
      if (this.isUp() || isErrorReply(e)) return;
      const error = e instanceof Error ? e : new Error(`Redis connection error: ${String(e)}`);
      this.lastError = error;
      for (const fail of [...this.pending]) fail(error);
    });
    listen('ready', () => {
      this.lastError = undefined;
    });
  }

  /** The connection error to fail a command with now, or undefined when the link may be up. */
  get down(): Error | undefined {
    if (this.lastError === undefined || this.isUp()) return undefined;
    return this.lastError;
  }

  /** `e` from a command, or the connection error behind it when `e` only says the client gave up. */
  explain(e: unknown): unknown {
    const cause = this.down;
    if (cause === undefined || isErrorReply(e)) return e;
    return cause;
  }

  /** `work`, rejected early with the connection error if the link fails while it is pending. */
  guard<T>(work: Promise<T>, onLate: ((value: T) => void) | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let failed = false;
      const fail = (e: Error): void => {
        failed = true;
        this.pending.delete(fail);
        reject(e);
      };
      this.pending.add(fail);
      work.then(
        (v) => {
          this.pending.delete(fail);
          if (failed) onLate?.(v);
          else resolve(v);
        },
        (e: unknown) => {
          this.pending.delete(fail);
          if (failed) return;
          const error = this.explain(e);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  detach(): void {
    for (const d of this.detachers.splice(0)) d();
  }
}

/** Run `work` unless the link is known down (then fail at once); fail it early if the link fails meanwhile. */
function guarded<T>(health: ConnectionHealth | undefined, work: () => Promise<T>, onLate: ((value: T) => void) | undefined): Promise<T> {
  if (!health) return work();
  const down = health.down;
  if (down !== undefined) return Promise.reject(down);
  return health.guard(work(), onLate);
}

/** Options of the adapters. */
export interface AdapterOptions {
  /** Fail commands at once while the connection is known down (see {@link ConnectionHealth}). */
  readonly failFast?: boolean;
}

/**
 * The error of a `SELECT <db>` the server refused: ioredis only emits it as an 'error' event
 * during its handshake and then goes on in db 0, which would put the locks in the wrong database.
 */
function databaseError(db: number, where: string, cause: Error): OutOfRangeError {
  return new OutOfRangeError(
    'db',
    `Redis database ${db} cannot be used on ${where} (SELECT ${db} answered "${cause.message}"): the server has fewer ` +
      'databases (its `databases` setting, 16 by default), or an ACL forbids SELECT. Use a db number below that in the ' +
      'URL (redis://host:port/<db>) or the client\'s `db` option, or raise `databases` in the server\'s configuration.',
    { cause },
  );
}

export class IoRedisAdapter implements RedisAdapter {
  private readonly health: ConnectionHealth | undefined;
  /** A db > 0 not yet confirmed by the server (see {@link checkDb}); undefined once confirmed or for db 0. */
  private db: number | undefined;
  private dbCheck: Promise<void> | undefined;

  constructor(
    private readonly client: IoRedisLike,
    private readonly owned: boolean,
    options: AdapterOptions = {},
  ) {
    if (options.failFast) this.health = new ConnectionHealth(client, () => client.status === 'ready');
    if (owned) reviveAfterSentinelRace(client);
    const db = isClusterClient(client) ? undefined : connectionOptions(client)?.db;
    if (typeof db === 'number' && db > 0 && typeof client.call === 'function') this.db = db;
  }

  /**
   * Before the first script on a db > 0: `SELECT <db>` once. A server without that db refuses it,
   * and every command then rejects with an {@link OutOfRangeError} (`option: 'db'`) instead of
   * running in db 0. A connection failure is not cached (the next command checks again).
   */
  private checkDb(db: number): Promise<void> {
    this.dbCheck ??= (this.client.call?.('SELECT', db) ?? Promise.resolve()).then(
      () => {
        this.db = undefined;
      },
      (e: unknown) => {
        if (!isErrorReply(e)) {
          this.dbCheck = undefined;
          throw e;
        }
        const o = connectionOptions(this.client);
        const port = typeof o?.port === 'number' || typeof o?.port === 'string' ? o.port : 6379;
        throw databaseError(db, typeof o?.host === 'string' ? `${o.host}:${port}` : 'this server', e);
      },
    );
    return this.dbCheck;
  }

  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[], onLate?: (reply: unknown) => void): Promise<unknown> {
    return guarded(this.health, () => this.exec(script, keys, args), onLate);
  }

  // A promise chain, not an async function: one microtask less per lock operation on the hot path.
  private exec(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const db = this.db;
    if (db !== undefined) return this.checkDb(db).then(() => this.exec(script, keys, args));
    const retry = (e: unknown): Promise<unknown> => {
      if (!isNoScript(e)) throw e;
      return this.client.eval(script.source, keys.length, ...keys, ...args);
    };
    return this.client.evalsha(script.sha, keys.length, ...keys, ...args).catch(retry);
  }

  async runAndWait(
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
    replicas: number,
    timeoutMs: number,
  ): Promise<{ reply: unknown; wait: WaitOutcome }> {
    const down = this.health?.down;
    if (down !== undefined) throw down;
    if (this.db !== undefined) await this.checkDb(this.db);
    // A pipeline: one write, one connection (on a Cluster, the node of keys[0]'s slot).
    const once = async (p: IoRedisPipelineLike): Promise<Array<[Error | null, unknown]>> =>
      (await p.call('WAIT', replicas, timeoutMs).exec()) ?? [];
    let results = await once(this.client.pipeline().evalsha(script.sha, keys.length, ...keys, ...args));
    if (isNoScript(results[0]?.[0])) results = await once(this.client.pipeline().eval(script.source, keys.length, ...keys, ...args));
    const [ran, waited] = results;
    if (!ran) throw new Error('dlock: the pipeline returned no script reply');
    if (ran[0]) throw this.health ? this.health.explain(ran[0]) : ran[0];
    if (!waited) return { reply: ran[1], wait: { failed: new Error('the pipeline returned no WAIT reply') } };
    return { reply: ran[1], wait: waited[0] ? waitOutcome(false, waited[0]) : waitOutcome(true, waited[1]) };
  }

  async scanNodes(): Promise<readonly ScanNode[]> {
    const down = this.health?.down;
    if (down !== undefined) throw down;
    if (this.db !== undefined) await this.checkDb(this.db);
    const scanner = (c: IoRedisLike, address: string): ScanNode => ({
      address,
      scan: async (cursor, match, count) => {
        if (typeof c.call !== 'function') throw new Error('dlock: this ioredis client has no call(): SCAN needs ioredis 5 or later');
        return scanReply(await c.call(...(scanArgs(cursor, match, count) as [string, ...string[]])));
      },
    });
    if (!isClusterClient(this.client)) return [scanner(this.client, 'node')];
    const masters = this.client.nodes?.('master') ?? [];
    return byAddress(
      masters.map((m) => {
        const o = connectionOptions(m);
        return scanner(m, `${String(o?.host)}:${String(o?.port)}`);
      }),
    );
  }

  subscriber(onMessage: (channel: string, message: string) => void, onError: (e: unknown) => void): Promise<Subscriber> {
    const sub = this.client.duplicate();
    const channels = new Set<string>();
    sub.on('error', onError);
    sub.on('message', (channel: unknown, message: unknown) => onMessage(String(channel), String(message)));
    reviveAfterSentinelRace(sub, () => {
      if (channels.size > 0) sub.subscribe(...channels).catch(onError);
    });
    return Promise.resolve({
      subscribe: async (channel) => {
        channels.add(channel);
        await sub.subscribe(channel);
      },
      unsubscribe: async (channel) => {
        channels.delete(channel);
        await sub.unsubscribe(channel);
      },
      close: () => quitIoRedis(sub),
    });
  }

  async close(): Promise<void> {
    this.health?.detach();
    if (this.owned) await quitIoRedis(this.client);
  }
}

export class NodeRedisAdapter implements RedisAdapter {
  private readonly cluster: boolean;
  private readonly health: ConnectionHealth | undefined;
  constructor(
    private readonly client: NodeRedisLike,
    private readonly owned: boolean,
    options: AdapterOptions = {},
  ) {
    this.cluster = isClusterClient(client);
    // Cluster clients have no isReady: their per-node clients reconnect on their own.
    if (options.failFast && typeof client.isReady === 'boolean') this.health = new ConnectionHealth(client, () => client.isReady === true);
  }

  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[], onLate?: (reply: unknown) => void): Promise<unknown> {
    return guarded(this.health, () => this.exec(script, keys, args), onLate);
  }

  private async exec(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
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

  scanNodes(): Promise<readonly ScanNode[]> {
    const down = this.health?.down;
    if (down !== undefined) return Promise.reject(down);
    const scanner = (address: string, c: () => NodeRedisLike | Promise<NodeRedisLike>): ScanNode => ({
      address,
      scan: async (cursor, match, count) => scanReply(await (await c()).sendCommand(scanArgs(cursor, match, count))),
    });
    if (!this.cluster) return Promise.resolve([scanner('node', () => this.client)]);
    const client = this.client;
    if (typeof client.nodeClient !== 'function') return Promise.reject(new Error('dlock: listing locks on a node-redis cluster needs node-redis 5 or later (nodeClient)'));
    return Promise.resolve(byAddress((client.masters ?? []).map((m) => scanner(m.address, () => client.nodeClient!(m)))));
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
    this.health?.detach();
    if (this.owned) await closeNodeRedis(this.client);
  }
}

/**
 * QUIT when connected, and resolve only once the socket is gone (ioredis resolves quit() on the
 * server's OK); drop the connection at once when it is not ready (a QUIT would wait in the
 * offline queue while ioredis keeps reconnecting to a server that is gone). Bounded either way.
 */
function quitIoRedis(c: IoRedisLike): Promise<void> {
  closing.add(c);
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
    const status = c.status;
    if (status === 'ready') c.quit().catch(() => c.disconnect());
    else c.disconnect();
    // Between reconnect attempts there is no socket: disconnect() only cancels the next attempt,
    // and no 'end' follows.
    if (status === 'reconnecting' || status === 'close') {
      clearTimeout(timer);
      resolve();
    }
  });
}

async function closeNodeRedis(c: NodeRedisLike): Promise<void> {
  if (c.isOpen === false) return;
  if (typeof c.close === 'function') await c.close().catch(() => undefined);
  else await c.quit?.().catch(() => undefined);
}
