/**
 * N independent redis-server nodes for the Redlock driver (tests and benchmarks; no vitest here).
 * Each node is a private server (test/support/redis.ts: random free loopback port, temp dir,
 * stopped by pid, exit hook). With `persistence: 'fsync-always'` each node keeps its data in a
 * directory of its own (`appendonly yes`, `appendfsync always`) that survives kill -9 and restart.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { removeDir, tempDir } from './processes.js';
import { startRedis, type RedisServer } from './redis.js';

export interface RedlockNodeHandle {
  /** 0-based position in the redlock URL. */
  readonly index: number;
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Pid of the current server process (changes on restart); undefined while stopped. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGTERM and wait. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL and wait: no chance to write anything more. Idempotent. */
  kill9(): Promise<void>;
  /** SIGSTOP / SIGCONT: the node keeps its sockets but answers nothing. */
  pause(): void;
  resume(): void;
  /**
   * Start the node again on the same port (stopping it first if needed). With persistence it
   * reloads its data unless `empty` (then its data directory is wiped first: a node that forgot).
   */
  restart(opts?: { empty?: boolean }): Promise<void>;
}

export interface RedlockNodes {
  /** `redlock://127.0.0.1:p1,127.0.0.1:p2,...` */
  readonly url: string;
  readonly nodes: readonly RedlockNodeHandle[];
  /** Current pids of the running nodes. */
  pids(): number[];
  /** Stop every node and remove the data directories. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRedlockOptions {
  /** Number of nodes. Default 3. */
  nodes?: number;
  /** `none` (default): in memory only; `fsync-always`: AOF with an fsync per write. */
  persistence?: 'none' | 'fsync-always';
  /** Extra redis-server arguments for every node. */
  args?: readonly string[];
}

/** Start `nodes` independent redis-servers (in parallel) for a Redlock driver. */
export async function startRedlock(opts: StartRedlockOptions = {}): Promise<RedlockNodes> {
  const count = opts.nodes ?? 3;
  const handles = await Promise.all(Array.from({ length: count }, (_, i) => startNode(i, opts)));
  return {
    url: `redlock://${handles.map((h) => `127.0.0.1:${h.port}`).join(',')}`,
    nodes: handles,
    pids: () => handles.flatMap((h) => (h.pid === undefined ? [] : [h.pid])),
    stop: async () => {
      await Promise.all(handles.map((h) => h.stop()));
      for (const h of handles) h.dispose();
    },
  };
}

async function startNode(index: number, opts: StartRedlockOptions): Promise<RedlockNodeHandle & { dispose(): void }> {
  const persistent = opts.persistence === 'fsync-always';
  // Removed by stop() (dispose), or by the exit hook of processes.ts as a last resort.
  const dataDir = persistent ? tempDir('dlock-redlock-data-') : undefined;
  const args = [
    '--save', '',
    '--loglevel', 'warning',
    ...(dataDir ? ['--dir', dataDir, '--appendonly', 'yes', '--appendfsync', 'always'] : []),
    ...(opts.args ?? []),
  ];
  let server: RedisServer | undefined = await startRedis({ args });
  const port = server.port;
  const url = server.url;
  return {
    index,
    port,
    url,
    get pid() {
      return server?.pid;
    },
    get running() {
      return server !== undefined;
    },
    stop: async () => {
      const s = server;
      server = undefined;
      await s?.stop();
    },
    kill9: async () => {
      const s = server;
      server = undefined;
      await s?.kill9();
    },
    pause: () => server?.pause(),
    resume: () => server?.resume(),
    restart: async (o = {}) => {
      const s = server;
      server = undefined;
      await s?.kill9();
      if (o.empty && dataDir) {
        rmSync(dataDir, { recursive: true, force: true });
        mkdirSync(dataDir, { recursive: true });
      }
      server = await startRedis({ port, args });
    },
    dispose: () => {
      if (dataDir) removeDir(dataDir);
    },
  };
}
