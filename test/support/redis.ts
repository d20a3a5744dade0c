import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';

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

interface Tracked {
  child: ChildProcess;
  dir: string;
  paused: boolean;
}

/** Every server started by this process and not yet stopped. */
const running = new Set<Tracked>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // Last resort (a test that forgot to stop, an aborted run): nothing may outlive the process.
  process.on('exit', () => {
    for (const t of running) {
      if (t.child.exitCode === null && t.child.signalCode === null && t.child.pid !== undefined) {
        try {
          process.kill(t.child.pid, 'SIGCONT');
          process.kill(t.child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(t.dir, { recursive: true, force: true });
    }
    running.clear();
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => child.once('exit', () => resolve()));
}

/** PING once with a throwaway connection; true when the server answered PONG. */
async function pingOnce(port: number): Promise<boolean> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startOn(bin: string, port: number, opts: StartRedisOptions): Promise<RedisServer | 'port-taken'> {
  const dir = mkdtempSync(join(tmpdir(), 'dlock-redis-'));
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
  const child = spawn(bin, args, { stdio: 'ignore' });
  // The exit hook (not a ref'd handle) guarantees cleanup, so the child must not keep us alive.
  child.unref();
  const tracked: Tracked = { child, dir, paused: false };
  running.add(tracked);
  hookExit();
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));

  const cleanup = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      if (tracked.paused) child.kill('SIGCONT');
      child.kill(signal);
      const gone = await Promise.race([exited(child).then(() => true), delay(5000).then(() => false)]);
      if (!gone) {
        child.kill('SIGKILL');
        await exited(child);
      }
    }
    running.delete(tracked);
    rmSync(dir, { recursive: true, force: true });
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
    pause: () => {
      tracked.paused = true;
      child.kill('SIGSTOP');
    },
    resume: () => {
      tracked.paused = false;
      child.kill('SIGCONT');
    },
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
