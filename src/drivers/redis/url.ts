/**
 * Redis URLs dlock understands, and how they become an `ioredis` client:
 * - `redis://[user:pass@]host:port[/db]` and `rediss://...`: one node (handed to ioredis as is,
 *   minus dlock's own query options);
 * - `redis+cluster://[user:pass@]host:port[,host:port...]`: a Redis Cluster through the given
 *   seed nodes (ioredis `Cluster`);
 * - `redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/db]`: the master that
 *   the listed Sentinels name (ioredis `Redis` with `sentinels`), followed across failovers.
 * Query options read by dlock (and removed before the rest reaches ioredis):
 * - `replicaAcks=N`: wait for N replicas to acknowledge each grant and renewal (Redis `WAIT`);
 * - `replicaAckTimeoutMs=T`: how long that wait may take (default 100);
 * - `replicaAcksOnRefused=fail|degrade`: what to do where the server refuses WAIT (default degrade).
 * User and password in the URL are the Redis (data node) credentials; Sentinels are reached
 * without auth (pass your own client for more).
 */
import { InvalidArgumentError } from '../../errors.js';
import { importIoredis } from './peer.js';
import type { IoRedisLike } from './adapter.js';

/** Wait for replicas after each grant and renewal: see {@link RedisDriverOptions.replicaAcks}. */
export interface ReplicaAcks {
  /** How many replicas must acknowledge (`WAIT numreplicas`). At least 1. */
  readonly replicas: number;
  /** How long to wait for them, in ms (`WAIT ... timeout`). Default 100. At least 1. */
  readonly timeoutMs?: number;
  /**
   * Where the server refuses `WAIT` (an ACL without it, a managed service or proxy that disables
   * it): `degrade` (default) reports it once through the logger and goes on without waiting;
   * `fail` refuses every grant instead (each acquisition fails with `UnavailableError`).
   */
  readonly onRefused?: 'degrade' | 'fail';
}

/** A Redis node address (a cluster seed or a Sentinel). */
export interface RedisNode {
  /** Host name or IP. */
  readonly host: string;
  /** TCP port. */
  readonly port: number;
}

/** What a dlock Redis URL says. */
export type ParsedRedisUrl =
  | {
      /** `redis://` or `rediss://`: one server. */
      readonly kind: 'single';
      /** The URL for ioredis / node-redis, without dlock's own parameters. */
      readonly url: string;
      /** From `replicaAcks=N` (and its companions); undefined when absent. */
      readonly replicaAcks: ReplicaAcks | undefined;
    }
  | {
      /** `redis+cluster://`: a Redis Cluster. */
      readonly kind: 'cluster';
      /** The seed nodes. */
      readonly nodes: readonly RedisNode[];
      /** Redis user from the URL. */
      readonly username: string | undefined;
      /** Redis password from the URL. */
      readonly password: string | undefined;
      /** From `replicaAcks=N` (and its companions); undefined when absent. */
      readonly replicaAcks: ReplicaAcks | undefined;
    }
  | {
      /** `redis+sentinel://`: a master followed through Sentinel. */
      readonly kind: 'sentinel';
      /** The Sentinels. */
      readonly sentinels: readonly RedisNode[];
      /** The master group name. */
      readonly name: string;
      /** Database number. */
      readonly db: number;
      /** Redis (data node) user from the URL. */
      readonly username: string | undefined;
      /** Redis (data node) password from the URL. */
      readonly password: string | undefined;
      /** From `replicaAcks=N` (and its companions); undefined when absent. */
      readonly replicaAcks: ReplicaAcks | undefined;
    };

/** The URL schemes of this module. */
export const REDIS_URL_SCHEMES = ['redis', 'rediss', 'redis+cluster', 'redis+sentinel'] as const;

const DLOCK_PARAMS = ['replicaAcks', 'replicaAckTimeoutMs', 'replicaAcksOnRefused'] as const;

/** Validate {@link ReplicaAcks}; `undefined` stays off. */
export function validateReplicaAcks(acks: ReplicaAcks | undefined): Required<ReplicaAcks> | undefined {
  if (acks === undefined) return undefined;
  if (typeof acks !== 'object' || acks === null) throw new InvalidArgumentError('replicaAcks must be an object such as { replicas: 1, timeoutMs: 100 }.');
  const { replicas, timeoutMs = 100, onRefused = 'degrade' } = acks;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 1000) {
    throw new InvalidArgumentError(`replicaAcks.replicas must be a whole number from 1 to 1000, got ${String(replicas)}.`);
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2 ** 31 - 1) {
    throw new InvalidArgumentError(`replicaAcks.timeoutMs must be a whole number of ms from 1 to 2^31-1, got ${String(timeoutMs)}.`);
  }
  if (onRefused !== 'degrade' && onRefused !== 'fail') {
    throw new InvalidArgumentError(`replicaAcks.onRefused must be "degrade" or "fail", got ${JSON.stringify(onRefused)}.`);
  }
  return { replicas, timeoutMs, onRefused };
}

function fail(url: string, why: string): never {
  throw new InvalidArgumentError(`Invalid Redis URL ${JSON.stringify(redactUrl(url))}: ${why}.`);
}

/** `url` with any password replaced by `***` (for messages). */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z+]+:\/\/[^:@/]*:)[^@/]*@/i, '$1***@');
}

function acksFrom(url: string, params: URLSearchParams): ReplicaAcks | undefined {
  const n = params.get('replicaAcks');
  const t = params.get('replicaAckTimeoutMs');
  const mode = params.get('replicaAcksOnRefused');
  if (n === null) {
    if (t !== null || mode !== null) fail(url, 'replicaAckTimeoutMs and replicaAcksOnRefused need replicaAcks=N');
    return undefined;
  }
  if (n === '0') return undefined;
  const acks = {
    replicas: /^\d+$/.test(n) ? Number(n) : Number.NaN,
    ...(t !== null ? { timeoutMs: /^\d+$/.test(t) ? Number(t) : Number.NaN } : {}),
    ...(mode !== null ? { onRefused: mode as 'degrade' | 'fail' } : {}),
  };
  try {
    return validateReplicaAcks(acks);
  } catch (e) {
    return fail(url, (e as Error).message.replace(/\.$/, ''));
  }
}

function parseNodes(url: string, list: string, defaultPort: number): RedisNode[] {
  const nodes = list.split(',').map((part): RedisNode => {
    const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(part.trim());
    const host = m?.[1] ?? m?.[2];
    const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
    if (!host || port < 1 || port > 65535) fail(url, `"${part}" is not host:port`);
    return { host, port };
  });
  if (nodes.length === 0) fail(url, 'it names no node');
  return nodes;
}

/** Parse a dlock Redis URL (see the module header); throws {@link InvalidArgumentError}. */
export function parseRedisUrl(url: string): ParsedRedisUrl {
  if (typeof url !== 'string') throw new InvalidArgumentError('url must be a string.');
  const scheme = /^([a-z+]+):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'redis' || scheme === 'rediss') {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return fail(url, 'use redis://host:port');
    }
    const replicaAcks = acksFrom(url, u.searchParams);
    if (!DLOCK_PARAMS.some((p) => u.searchParams.has(p))) return { kind: 'single', url, replicaAcks };
    // ioredis turns every query option into a client option: hand it only its own.
    for (const p of DLOCK_PARAMS) u.searchParams.delete(p);
    return { kind: 'single', url: u.toString().replace(/\?$/, ''), replicaAcks };
  }
  if (scheme !== 'redis+cluster' && scheme !== 'redis+sentinel') {
    return fail(url, `the scheme must be one of ${REDIS_URL_SCHEMES.map((s) => `${s}://`).join(', ')}`);
  }
  // Not WHATWG-parsable (a host list): split by hand.
  const m = /^[a-z+]+:\/\/(?:([^@/?#]*)@)?([^/?#]+)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(url);
  if (!m) return fail(url, `use ${scheme}://host:port[,host:port...]`);
  const [, auth, hosts = '', path = '', query = ''] = m;
  let username: string | undefined;
  let password: string | undefined;
  if (auth !== undefined) {
    const colon = auth.indexOf(':');
    const user = decodeURIComponent(colon < 0 ? auth : auth.slice(0, colon));
    username = user.length > 0 ? user : undefined;
    password = colon < 0 ? undefined : decodeURIComponent(auth.slice(colon + 1));
  }
  const params = new URLSearchParams(query);
  for (const key of params.keys()) {
    if (!(DLOCK_PARAMS as readonly string[]).includes(key)) fail(url, `unknown option "${key}" (known: ${DLOCK_PARAMS.join(', ')})`);
  }
  const replicaAcks = acksFrom(url, params);
  const segments = path.split('/').filter((s) => s.length > 0).map(decodeURIComponent);
  if (scheme === 'redis+cluster') {
    if (segments.length > 0) fail(url, 'a cluster URL takes no path (Redis Cluster has only db 0)');
    return { kind: 'cluster', nodes: parseNodes(url, hosts, 6379), username, password, replicaAcks };
  }
  const [name, dbText = '0', ...extra] = segments;
  if (!name || extra.length > 0 || !/^\d+$/.test(dbText)) fail(url, 'use redis+sentinel://host:port[,host:port...]/<master name>[/db]');
  return { kind: 'sentinel', sentinels: parseNodes(url, hosts, 26379), name, db: Number(dbText), username, password, replicaAcks };
}

/**
 * The database number a `redis://`, `rediss://`, `redis+sentinel://` or `redlock://` URL names
 * (0 when it names none, or for other schemes). Does not validate the rest of the URL.
 */
export function databaseOf(url: string): number {
  const db =
    /^(?:rediss?|redlock):\/\/[^/?#]*\/(\d+)\/?(?:[?#]|$)/i.exec(url)?.[1] ??
    /^redis\+sentinel:\/\/[^/?#]*\/[^/?#]+\/(\d+)\/?(?:[?#]|$)/i.exec(url)?.[1];
  return db === undefined ? 0 : Number(db);
}

/** Connection settings every ioredis client dlock opens gets (beside the URL's own). */
export interface IoRedisTuning {
  readonly connectTimeout?: number;
  readonly maxRetriesPerRequest?: number;
  readonly lazyConnect?: boolean;
  readonly disconnectTimeout?: number;
  /** Single nodes and Sentinel: the reconnect strategy; Cluster: `clusterRetryStrategy`. */
  readonly retryStrategy?: (times: number) => number | null;
}

/** Open the ioredis client a parsed URL names (ioredis is an optional peer: imported here only). */
export async function ioredisFor(parsed: ParsedRedisUrl, tuning: IoRedisTuning): Promise<{ client: IoRedisLike; cluster: boolean }> {
  const { Redis, Cluster } = await importIoredis();
  const { retryStrategy, ...node } = tuning;
  switch (parsed.kind) {
    case 'single':
      return { client: new Redis(parsed.url, { ...node, ...(retryStrategy ? { retryStrategy } : {}) }) as unknown as IoRedisLike, cluster: false };
    case 'sentinel':
      return {
        client: new Redis({
          ...node,
          ...(retryStrategy ? { retryStrategy } : {}),
          sentinels: parsed.sentinels.map((n) => ({ host: n.host, port: n.port })),
          name: parsed.name,
          // Hear the Sentinels' +switch-master and reconnect at once: a master cut off by a
          // partition sends no RST, so without it the client stays on the old master's dead
          // socket and a waiter never reaches the promoted replica (test/chaos/partition-sentinel).
          failoverDetector: true,
          db: parsed.db,
          ...(parsed.username !== undefined ? { username: parsed.username } : {}),
          ...(parsed.password !== undefined ? { password: parsed.password } : {}),
        }) as unknown as IoRedisLike,
        cluster: false,
      };
    case 'cluster': {
      const { lazyConnect, ...redisOptions } = node;
      const client = new Cluster(
        parsed.nodes.map((n) => ({ host: n.host, port: n.port })),
        {
          ...(lazyConnect !== undefined ? { lazyConnect } : {}),
          ...(retryStrategy ? { clusterRetryStrategy: retryStrategy } : {}),
          redisOptions: {
            ...redisOptions,
            ...(parsed.username !== undefined ? { username: parsed.username } : {}),
            ...(parsed.password !== undefined ? { password: parsed.password } : {}),
          },
        },
      );
      return { client: client as unknown as IoRedisLike, cluster: true };
    }
  }
}
