import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';

/** A redis-server this process started. */
export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** SIGTERM, wait for the exit, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, wait for the exit, remove the temp dir. Idempotent. */
  kill9(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
}

export interface StartRedisOptions {
  /** Use this port instead of a random free one (no retry on bind failure then). */
  port?: number;
  /** Extra redis-server arguments. */
  args?: readonly string[];
  /** How long to wait for PING, in ms. Default 15,000. */
  readyTimeoutMs?: number;
}

/**
 * Run `fn` on a throwaway connection to 127.0.0.1:`port` (no retries, no offline queue), closed
 * afterwards; rejects when the server does not answer within `connectTimeoutMs`.
 */
export async function withRedisClient<T>(port: number, fn: (c: Redis) => Promise<T>, connectTimeoutMs = 1000): Promise<T> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: connectTimeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

/** PING once with a throwaway connection; true when the server answered PONG. */
async function pingOnce(port: number): Promise<boolean> {
  return withRedisClient(port, async (c) => (await c.ping()) === 'PONG').catch(() => false);
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startOn(bin: string, port: number, opts: StartRedisOptions): Promise<RedisServer | 'port-taken'> {
  const dir = tempDir('dlock-redis-');
  const logfile = join(dir, 'redis.log');
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    '--daemonize', 'no',
    '--logfile', logfile,
    ...(opts.args ?? []),
  ];
  const proc = new ServerProcess();
  const child = proc.adopt(spawn(bin, args, { stdio: 'ignore' }));
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));

  const cleanup = async (signal: NodeJS.Signals): Promise<void> => {
    await proc.stop(signal, 5000);
    removeDir(dir);
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  for (;;) {
    if (spawnError) {
      await cleanup('SIGKILL');
      throw new Error(`Could not start ${bin}: ${spawnError.message}`);
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = readLog(logfile);
      await cleanup('SIGKILL');
      if (/address already in use/i.test(log)) return 'port-taken';
      throw new Error(`redis-server exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${log}`);
    }
    if (await pingOnce(port)) break;
    if (Date.now() > deadline) {
      const log = readLog(logfile);
      await cleanup('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer PING in time:\n${log}`);
    }
    await delay(50);
  }

  const pid = child.pid;
  if (pid === undefined) throw new Error('redis-server has no pid');
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid,
    stop: () => cleanup('SIGTERM'),
    kill9: () => cleanup('SIGKILL'),
    pause: () => proc.pause(),
    resume: () => proc.resume(),
  };
}

/**
 * Start a private redis-server (Debian package `redis-server`, installed on demand) on a random
 * free loopback port in a fresh temp dir, without persistence, and wait until it answers PING.
 * If another process grabs the port first, retry with a new one.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer> {
  const bin = await ensureBinary('redis-server', 'redis-server');
  for (let attempt = 0; attempt < 8; attempt++) {
    const port = opts.port ?? (await freePort());
    const server = await startOn(bin, port, opts);
    if (server !== 'port-taken') return server;
    if (opts.port !== undefined) throw new Error(`Port ${opts.port} is taken; cannot restart redis-server on it.`);
  }
  throw new Error('Could not find a free port for redis-server after 8 attempts.');
}
