/**
 * A private 3-master Redis Cluster for tests and benchmarks (no vitest imports): three
 * `redis-server --cluster-enabled yes` processes started by {@link startRedis} on random free
 * loopback ports, joined with `redis-cli --cluster create` (Debian `redis-tools`, installed on
 * demand), ready once every node reports `cluster_state:ok` and agrees on all 16384 slots.
 *
 * Each node's cluster config file lives in a directory owned by this harness (not in the
 * server's own temp dir), so {@link RedisCluster.stop}/`restart` can take the whole cluster down
 * and bring the same nodes back on the same ports: the data is gone (no persistence) but the
 * slots are served again.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, tempDir } from './processes.js';
import { startRedis, withRedisClient, type RedisServer } from './redis.js';

const run = promisify(execFile);

export interface RedisCluster {
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (what `connect()` takes). */
  readonly url: string;
  /** Seed nodes for `new Cluster(nodes)` / `createCluster({ rootNodes })`. */
  readonly nodes: ReadonlyArray<{ host: string; port: number }>;
  readonly ports: readonly number[];
  /** The node processes, in port order. */
  pids(): number[];
  /** SIGTERM every node and remove every temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGTERM every node but keep the cluster config, so that {@link restart} brings it back. */
  takeDown(): Promise<void>;
  /** Start the nodes again on the same ports (empty data) and wait for `cluster_state:ok`. */
  restart(): Promise<void>;
  /** Which port serves `key`'s slot (CLUSTER KEYSLOT + the slot map). */
  portOf(key: string): Promise<number>;
  /** Sum of EVAL/EVALSHA calls over the masters (INFO commandstats). */
  scriptCalls(): Promise<number>;
  /** The server process on `port` (to pause or kill one node). */
  server(port: number): RedisServer;
  /** Ports of the replicas of the master on `masterPort` (with `replicasPerMaster`). */
  replicasOf(masterPort: number): Promise<number[]>;
}

export interface StartRedisClusterOptions {
  /** Masters (default 3; at least 3, which `redis-cli --cluster create` requires). */
  masters?: number;
  /** Replicas of each master (default 0). */
  replicasPerMaster?: number;
  /** `cluster-node-timeout` in ms (default 5000). */
  nodeTimeoutMs?: number;
  /** How long to wait for `cluster_state:ok`, in ms. Default 30,000. */
  readyTimeoutMs?: number;
}

function nodeArgs(confDir: string, port: number, nodeTimeoutMs: number): string[] {
  return [
    '--cluster-enabled', 'yes',
    '--cluster-config-file', join(confDir, `nodes-${port}.conf`),
    '--cluster-node-timeout', String(nodeTimeoutMs),
    // A node that was down may come back before the others have noticed; never refuse reads/writes
    // for a slot range just because one peer looks unreachable for a moment.
    '--cluster-require-full-coverage', 'no',
  ];
}

const withClient = <T>(port: number, fn: (c: Redis) => Promise<T>): Promise<T> => withRedisClient(port, fn, 2000);

/** Every node says cluster_state:ok and maps all slots to the same masters; replicas are in sync. */
async function converged(ports: readonly number[], masters: number): Promise<boolean> {
  try {
    const roles = await Promise.all(ports.map((p) => withClient(p, (c) => c.info('replication'))));
    if (roles.some((info) => /role:slave/.test(info) && !/master_link_status:up/.test(info))) return false;
    const views = await Promise.all(
      ports.map((p) =>
        withClient(p, async (c) => {
          const info = String(await c.call('CLUSTER', 'INFO'));
          if (!/cluster_state:ok/.test(info) || !/cluster_slots_assigned:16384/.test(info)) return undefined;
          const slots = (await c.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
          return slots
            .map(([from, to, [, port]]) => `${from}-${to}@${port}`)
            .sort()
            .join(',');
        }),
      ),
    );
    const first = views[0];
    return first !== undefined && views.every((v) => v === first) && first.split(',').length >= masters;
  } catch {
    return false;
  }
}

async function waitConverged(ports: readonly number[], masters: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await converged(ports, masters))) {
    if (Date.now() > end) throw new Error(`Redis Cluster on ports ${ports.join(',')} did not reach cluster_state:ok in ${timeoutMs} ms`);
    await delay(100);
  }
}

/**
 * Start a private Redis Cluster of `masters` nodes (no replicas) and wait until it serves every
 * slot. Stop it with `stop()` (the exit hook of test/support/redis.ts kills leftovers).
 */
export async function startRedisCluster(opts: StartRedisClusterOptions = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const replicasPerMaster = opts.replicasPerMaster ?? 0;
  if (masters < 3) throw new Error('redis-cli --cluster create needs at least 3 masters');
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 5000;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  const cli = await ensureBinary('redis-cli', 'redis-tools');
  const confDir = tempDir('dlock-redis-cluster-');
  let servers: RedisServer[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicasPerMaster); i++) {
      // Port chosen by startRedis (retries on a taken port); the config file is named after it.
      servers.push(await startClusterNode(confDir, undefined, nodeTimeoutMs));
    }
    const ports = servers.map((s) => s.port).sort((a, b) => a - b);
    servers.sort((a, b) => a.port - b.port);
    await run(cli, ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], {
      timeout: readyTimeoutMs,
    });
    await waitConverged(ports, masters, readyTimeoutMs);
    const nodes = ports.map((port) => ({ host: '127.0.0.1', port }));
    const cluster: RedisCluster = {
      url: `redis+cluster://${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
      nodes,
      ports,
      pids: () => servers.map((s) => s.pid),
      server: (port) => {
        const found = servers.find((s) => s.port === port);
        if (!found) throw new Error(`no cluster node on port ${port}`);
        return found;
      },
      replicasOf: async (masterPort) => {
        const info = await withClient(masterPort, (c) => c.info('replication'));
        return [...info.matchAll(/^slave\d+:ip=[^,]+,port=(\d+)/gm)].map((m) => Number(m[1]));
      },
      takeDown: async () => {
        await Promise.all(servers.map((s) => s.stop()));
      },
      restart: async () => {
        servers = [];
        for (const port of ports) servers.push(await startClusterNode(confDir, port, nodeTimeoutMs));
        await waitConverged(ports, masters, readyTimeoutMs);
      },
      stop: async () => {
        await Promise.all(servers.map((s) => s.stop()));
        removeDir(confDir);
      },
      portOf: async (key) => {
        const first = ports[0] ?? 0;
        return withClient(first, async (c) => {
          const slot = Number(await c.call('CLUSTER', 'KEYSLOT', key));
          const slots = (await c.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
          const range = slots.find(([from, to]) => slot >= from && slot <= to);
          if (!range) throw new Error(`no node serves slot ${slot}`);
          return range[2][1];
        });
      },
      scriptCalls: async () => {
        let calls = 0;
        // Replicas replay scripts as their effects, so only masters count EVAL/EVALSHA calls.
        for (const port of ports) {
          const stats = await withClient(port, (c) => c.info('commandstats'));
          for (const m of stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(m[2]);
        }
        return calls;
      },
    };
    return cluster;
  } catch (e) {
    await Promise.allSettled(servers.map((s) => s.kill9()));
    removeDir(confDir);
    throw e;
  }
}

/** Start one node; without `port`, on a free one (retried when someone takes it first). */
async function startClusterNode(confDir: string, port: number | undefined, nodeTimeoutMs: number): Promise<RedisServer> {
  // The config file is named after the port, so the port is chosen here rather than by startRedis.
  if (port !== undefined) return startRedis({ port, args: nodeArgs(confDir, port, nodeTimeoutMs) });
  let lastError: unknown;
  for (let attempt = 0; attempt < 8; attempt++) {
    const free = await freePort();
    try {
      return await startRedis({ port: free, args: nodeArgs(confDir, free, nodeTimeoutMs) });
    } catch (e) {
      lastError = e;
      if (!/is taken/.test(String(e))) throw e;
    }
  }
  throw new Error(`Could not start a cluster node on a free port: ${String(lastError)}`);
}
