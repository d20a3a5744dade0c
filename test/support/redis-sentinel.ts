/**
 * A private Redis master with replicas under Sentinel, for tests and benchmarks (no vitest
 * imports): one master and `replicas` replicas (`--replicaof`) started by {@link startRedis}, and
 * `sentinels` `redis-server <conf> --sentinel` processes with a generated sentinel.conf, each on
 * random free loopback ports in temp dirs. Ready once every replica's link is up and every
 * Sentinel knows every replica. Replicas accept direct writes (`replica-read-only no`) so a test
 * can emulate replication lag by deleting, on the replicas, a key the master has.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';
import { startRedis, withRedisClient, type RedisServer } from './redis.js';

export interface RedisSentinelSetup {
  /** The master name Sentinel monitors (`mymaster`). */
  readonly name: string;
  /** `redis+sentinel://127.0.0.1:S1,.../mymaster` (what `connect()` takes). */
  readonly url: string;
  readonly sentinels: ReadonlyArray<{ host: string; port: number }>;
  /** The master as started (after a failover, see {@link currentMaster}). */
  readonly master: RedisServer;
  readonly replicas: readonly RedisServer[];
  /** Sentinel process ids. */
  sentinelPids(): number[];
  /** The master's port as Sentinel reports it now. */
  currentMaster(): Promise<number>;
  /**
   * Wait until Sentinel names a master other than `oldPort` and that server answers ROLE master;
   * resolves its port.
   */
  waitForFailover(oldPort: number, timeoutMs?: number): Promise<number>;
  /** Stop everything (Sentinels first), remove the temp dirs. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRedisSentinelOptions {
  /** Replicas of the master. Default 1. */
  replicas?: number;
  /** Sentinel processes (1 to 5). Default 3, quorum a majority. */
  sentinels?: number;
  /**
   * `sentinel down-after-milliseconds`. Default 1000: below that, on a loaded 2-core machine the
   * Sentinels can declare the freshly promoted master down too and fail over back and forth.
   */
  downAfterMs?: number;
  /** `sentinel failover-timeout`. Default 5000. */
  failoverTimeoutMs?: number;
  /** How long to wait until ready, in ms. Default 30,000. */
  readyTimeoutMs?: number;
}

const NAME = 'mymaster';

const query = <T>(port: number, fn: (c: Redis) => Promise<T>): Promise<T> => withRedisClient(port, fn, 1000);

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(50);
  }
}

/** sentinel.conf for a Sentinel on `bind:port` watching master `NAME` at `masterHost:masterPort` (the partition lab uses it too). */
export function sentinelConf(o: {
  port: number;
  bind: string;
  dir: string;
  masterHost: string;
  masterPort: number;
  quorum: number;
  downAfterMs: number;
  failoverTimeoutMs: number;
}): string {
  return [
    `port ${o.port}`,
    `bind ${o.bind}`,
    'daemonize no',
    `dir ${o.dir}`,
    `logfile ${join(o.dir, 'sentinel.log')}`,
    `sentinel monitor ${NAME} ${o.masterHost} ${o.masterPort} ${o.quorum}`,
    `sentinel down-after-milliseconds ${NAME} ${o.downAfterMs}`,
    `sentinel failover-timeout ${NAME} ${o.failoverTimeoutMs}`,
    `sentinel parallel-syncs ${NAME} 1`,
    '',
  ].join('\n');
}

interface SentinelProcess {
  readonly port: number;
  readonly proc: ServerProcess;
  readonly dir: string;
}

async function startSentinel(bin: string, masterPort: number, quorum: number, opts: Required<StartRedisSentinelOptions>): Promise<SentinelProcess> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const port = await freePort();
    const dir = tempDir('dlock-sentinel-');
    const conf = join(dir, 'sentinel.conf');
    // Sentinel rewrites this file as it learns the topology, so it lives in a writable temp dir.
    writeFileSync(conf, sentinelConf({ port, bind: '127.0.0.1', dir, masterHost: '127.0.0.1', masterPort, quorum, ...opts }));
    const proc = new ServerProcess();
    const child = proc.adopt(spawn(bin, [conf, '--sentinel'], { stdio: 'ignore' }));
    const s: SentinelProcess = { port, proc, dir };
    try {
      await until(`sentinel on ${port}`, 10_000, async () => {
        if (child.exitCode !== null) throw new Error('exited');
        return (await query(port, (c) => c.ping())) === 'PONG';
      });
      return s;
    } catch {
      const log = (() => {
        try {
          return readFileSync(join(dir, 'sentinel.log'), 'utf8');
        } catch {
          return '';
        }
      })();
      await stopSentinel(s);
      if (/address already in use/i.test(log)) continue;
      throw new Error(`redis sentinel did not start on port ${port}:\n${log.split('\n').slice(-10).join('\n')}`);
    }
  }
  throw new Error('Could not find a free port for redis sentinel after 8 attempts.');
}

async function stopSentinel(s: SentinelProcess): Promise<void> {
  await s.proc.stop('SIGKILL');
  removeDir(s.dir);
}

/** Start a master, its replicas and Sentinels (see the module header). */
export async function startRedisSentinel(options: StartRedisSentinelOptions = {}): Promise<RedisSentinelSetup> {
  const opts: Required<StartRedisSentinelOptions> = {
    replicas: options.replicas ?? 1,
    sentinels: options.sentinels ?? 3,
    downAfterMs: options.downAfterMs ?? 1000,
    failoverTimeoutMs: options.failoverTimeoutMs ?? 5000,
    readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
  };
  if (opts.sentinels < 1 || opts.sentinels > 5) throw new Error('sentinels must be 1 to 5');
  const bin = await ensureBinary('redis-server', 'redis-server');
  // Diskless full syncs without the default 5 s delay: replicas are in sync within milliseconds.
  const common = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0'];
  const servers: RedisServer[] = [];
  const sentinels: SentinelProcess[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(sentinels.map(stopSentinel));
    await Promise.allSettled(servers.map((s) => s.kill9()));
  };
  try {
    const master = await startRedis({ args: common });
    servers.push(master);
    const replicas: RedisServer[] = [];
    for (let i = 0; i < opts.replicas; i++) {
      const r = await startRedis({ args: [...common, '--replicaof', '127.0.0.1', String(master.port), '--replica-read-only', 'no'] });
      servers.push(r);
      replicas.push(r);
    }
    await until('replicas in sync', opts.readyTimeoutMs, async () => {
      const links = await Promise.all(replicas.map((r) => query(r.port, (c) => c.info('replication'))));
      return links.every((info) => /master_link_status:up/.test(info));
    });
    const quorum = Math.floor(opts.sentinels / 2) + 1;
    for (let i = 0; i < opts.sentinels; i++) sentinels.push(await startSentinel(bin, master.port, quorum, opts));
    await until('sentinels to know every replica and each other', opts.readyTimeoutMs, async () => {
      const views = await Promise.all(
        sentinels.map((s) =>
          query(s.port, async (c) => {
            const [info] = (await c.call('SENTINEL', 'MASTERS')) as string[][];
            const field = (f: string): number => Number(info?.[(info?.indexOf(f) ?? -2) + 1]);
            return field('num-slaves') === opts.replicas && field('num-other-sentinels') === opts.sentinels - 1;
          }),
        ),
      );
      return views.every(Boolean);
    });
    const nodes = sentinels.map((s) => ({ host: '127.0.0.1', port: s.port }));
    const currentMaster = async (): Promise<number> => {
      for (const s of sentinels) {
        try {
          const addr = (await query(s.port, (c) => c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', NAME))) as [string, string] | null;
          if (addr) return Number(addr[1]);
        } catch {
          // try the next one
        }
      }
      throw new Error('no sentinel answered');
    };
    let stopped = false;
    return {
      name: NAME,
      url: `redis+sentinel://${nodes.map((n) => `${n.host}:${n.port}`).join(',')}/${NAME}`,
      sentinels: nodes,
      master,
      replicas,
      sentinelPids: () => sentinels.map((s) => s.proc.pid ?? 0),
      currentMaster,
      waitForFailover: async (oldPort, timeoutMs = 30_000) => {
        let port = oldPort;
        await until(`a failover away from ${oldPort}`, timeoutMs, async () => {
          port = await currentMaster();
          if (port === oldPort) return false;
          const role = (await query(port, (c) => c.call('ROLE'))) as [string];
          return role[0] === 'master';
        });
        return port;
      },
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await Promise.allSettled(sentinels.map(stopSentinel));
        await Promise.allSettled(servers.map((s) => s.stop()));
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
