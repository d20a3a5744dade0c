/**
 * The engines the chaos suite runs on (no vitest here): each starts a private server (random
 * loopback port, temp dir) the first time a case needs it, and gives two URLs: one for forked
 * workers (short sessions, so that a killed worker's session ends within about a second) and one
 * for clients in the test process (longer sessions: a busy 2-core machine can starve a 1 s
 * keep-alive). What an engine grants is read from its driver's `info` (modes, fairness,
 * liveness) once it runs, never from a list here: drivers gain modes independently.
 */
import { join } from 'node:path';
import { connect } from '../../src/connect.js';
import { LockClient, type LockClientOptions } from '../../src/core/client.js';
import type { DriverInfo } from '../../src/drivers/driver.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { startEtcd } from '../support/etcd.js';
import { startMysql } from '../support/mysql.js';
import { startPostgres } from '../support/postgres.js';
import { removeDir, tempDir } from '../support/processes.js';
import { startRedis } from '../support/redis.js';
import { startRedlock } from '../support/redlock.js';
import { startZooKeeper } from '../support/zookeeper.js';

/** A started engine. */
export interface RunningEngine {
  /** URL for forked workers; undefined for a process-local engine (memory). */
  readonly workerUrl: string | undefined;
  /** URL for clients in this process. */
  readonly localUrl: string;
  /** The driver's declaration (modes, fairness, liveness). */
  readonly info: DriverInfo;
  /**
   * How long after a worker dies its hold may still block others: its lease TTL (lease
   * engines) or its session timeout (1 s for ZooKeeper and etcd workers); 0 for engines that
   * free a dead session's locks when its connection closes (SQL session locks).
   */
  freeBoundMs(ttlMs: number): number;
  stop(): Promise<void>;
}

export interface ChaosEngine {
  readonly name: string;
  /** Started once (memoized); stopped by {@link stopEngines}. */
  start(): Promise<RunningEngine>;
}

type Starter = () => Promise<Omit<RunningEngine, 'info'>>;

const WORKER_SESSION_MS = 1000;

const starters: Record<string, Starter> = {
  memory: () => Promise.resolve({ workerUrl: undefined, localUrl: 'memory:', freeBoundMs: (ttl) => ttl, stop: () => Promise.resolve() }),
  sqlite: () => {
    const dir = tempDir('dlock-chaos-sqlite-');
    const url = `sqlite:${join(dir, 'locks.db')}`;
    return Promise.resolve({ workerUrl: url, localUrl: url, freeBoundMs: (ttl) => ttl, stop: () => Promise.resolve(removeDir(dir)) });
  },
  redis: async () => {
    const s = await startRedis();
    return { workerUrl: s.url, localUrl: s.url, freeBoundMs: (ttl) => ttl, stop: () => s.stop() };
  },
  redlock: async () => {
    const s = await startRedlock({ nodes: 3 });
    return { workerUrl: s.url, localUrl: s.url, freeBoundMs: (ttl) => ttl, stop: () => s.stop() };
  },
  zookeeper: async () => {
    const s = await startZooKeeper();
    return {
      workerUrl: `${s.url}?sessionTimeoutMs=${WORKER_SESSION_MS}`,
      localUrl: `${s.url}?sessionTimeoutMs=4000`,
      freeBoundMs: () => WORKER_SESSION_MS,
      stop: () => s.stop(),
    };
  },
  etcd: async () => {
    const s = await startEtcd();
    const base = `etcd://127.0.0.1:${s.clientPort}`;
    return { workerUrl: `${base}?leaseTtlS=1`, localUrl: `${base}?leaseTtlS=5`, freeBoundMs: () => WORKER_SESSION_MS, stop: () => s.dispose() };
  },
  ...Object.fromEntries(
    (['session', 'table'] as const).flatMap((mode) => [
      [
        `postgres-${mode}`,
        async () => {
          const s = await startPostgres();
          const url = `${s.url}?mode=${mode}`;
          return { workerUrl: url, localUrl: url, freeBoundMs: (ttl: number) => (mode === 'session' ? 0 : ttl), stop: () => s.stop() };
        },
      ],
      [
        `mysql-${mode}`,
        async () => {
          const s = await startMysql();
          const url = `${s.url}?mode=${mode}`;
          return { workerUrl: url, localUrl: url, freeBoundMs: (ttl: number) => (mode === 'session' ? 0 : ttl), stop: () => s.stop() };
        },
      ],
    ]),
  ),
};

/** Every engine, in a fixed order (the fast slice rotates over it). */
export const ENGINE_NAMES = [
  'memory',
  'sqlite',
  'redis',
  'redlock',
  'zookeeper',
  'etcd',
  'postgres-session',
  'postgres-table',
  'mysql-session',
  'mysql-table',
] as const;

const running = new Map<string, Promise<RunningEngine>>();

async function startOne(name: string): Promise<RunningEngine> {
  const starter = starters[name];
  if (!starter) throw new Error(`no chaos engine "${name}"`);
  const r = await starter();
  const probe = await connect(r.localUrl);
  try {
    return { ...r, info: probe.driver.info };
  } finally {
    await probe.close();
  }
}

export function chaosEngine(name: string): ChaosEngine {
  return {
    name,
    start: () => {
      let p = running.get(name);
      if (!p) {
        p = startOne(name);
        running.set(name, p);
      }
      return p;
    },
  };
}

/** Stop every engine this process started. */
export async function stopEngines(): Promise<void> {
  const all = [...running.values()];
  running.clear();
  await Promise.allSettled(all.map(async (p) => (await p).stop()));
}

/** The one memory engine of this process: every memory client shares it, as clients of one server do. */
const memory = new MemoryDriver();

/**
 * A client in this process on the engine (memory: a view of the process's one engine whose
 * close() leaves the engine to the other clients).
 */
export function localClient(engine: RunningEngine, options?: LockClientOptions): Promise<LockClient> {
  if (engine.info.name !== 'memory') return connect(engine.localUrl, options);
  const view = Object.assign(Object.create(memory) as MemoryDriver, { close: () => Promise.resolve() });
  return Promise.resolve(new LockClient(view, options));
}
