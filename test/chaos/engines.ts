/**
 * The engines the chaos suite runs on (no vitest here): each starts a private server (random
 * loopback port, temp dir) the first time a case needs it, and gives two URLs: one for forked
 * workers (short sessions, so that a killed worker's session ends within about a second) and one
 * for clients in the test process (longer sessions: a busy 2-core machine can starve a 1 s
 * keep-alive). What an engine grants is read from its driver's `info` (modes, fairness,
 * liveness) once it runs, never from a list here: drivers gain modes independently.
 *
 * Each server engine also gives its {@link EngineFaults} (crash and restart with its data, its
 * ports for a proxy in front, its SQL sessions for an administrator to kill). `durable` starts
 * Redis and Redlock with `appendfsync always`, so that a crash keeps what they had granted (the
 * configuration docs/reliability.md asks for; without it a restart forgets holds and tokens).
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
import { startRedlock, type RedlockNodes } from '../support/redlock.js';
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
  /** How long a client in this process keeps a hold with no answer from the engine: the TTL, or its session's timeout. */
  localLiveMs(ttlMs: number): number;
  /** Server faults; undefined for engines without a server (memory, SQLite). */
  readonly faults?: EngineFaults;
  stop(): Promise<void>;
}

/** What the fault scenarios do to a server engine. */
export interface EngineFaults {
  /** The engine's client ports on 127.0.0.1, one per node, as they appear in its URLs. */
  readonly ports: readonly number[];
  /** kill -9 of every server process, down `downMs`, then started on the same ports with its data; resolves once it serves. */
  crash(downMs: number): Promise<void>;
  /** SQL engines: the ids of the sessions connected now (as an administrator sees them). */
  sessions?(): Promise<string[]>;
  /** SQL engines: kill these sessions (PostgreSQL `pg_terminate_backend`, MariaDB `KILL`). */
  kill?(ids: readonly string[]): Promise<void>;
}

/** `url` with each of the engine's ports replaced by `to(port)` (a proxy in front, or a port nobody listens on). */
export function withPorts(url: string, faults: EngineFaults, to: (port: number) => number): string {
  let out = url;
  for (const p of faults.ports) out = out.replace(new RegExp(`127\\.0\\.0\\.1:${p}(?!\\d)`), `127.0.0.1:${to(p)}`);
  return out;
}

export interface ChaosEngine {
  readonly name: string;
  /** Started once (memoized); stopped by {@link stopEngines}. */
  start(): Promise<RunningEngine>;
}

type Starter = (durable: boolean) => Promise<Omit<RunningEngine, 'info' | 'localLiveMs'> & { localSessionMs?: number }>;

const WORKER_SESSION_MS = 1000;
const LOCAL_ZK_SESSION_MS = 4000;
const LOCAL_ETCD_LEASE_S = 5;

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Faults of Redis-protocol nodes (redis: one node; redlock: every node, killed and restarted together). */
function redisFaults(nodes: RedlockNodes): EngineFaults {
  return {
    ports: nodes.nodes.map((n) => n.port),
    crash: async (downMs) => {
      await Promise.all(nodes.nodes.map((n) => n.kill9()));
      await pause(downMs);
      await Promise.all(nodes.nodes.map((n) => n.restart()));
    },
  };
}

const starters: Record<string, Starter> = {
  memory: () => Promise.resolve({ workerUrl: undefined, localUrl: 'memory:', freeBoundMs: (ttl) => ttl, stop: () => Promise.resolve() }),
  sqlite: () => {
    const dir = tempDir('dlock-chaos-sqlite-');
    const url = `sqlite:${join(dir, 'locks.db')}`;
    return Promise.resolve({ workerUrl: url, localUrl: url, freeBoundMs: (ttl) => ttl, stop: () => Promise.resolve(removeDir(dir)) });
  },
  redis: async (durable) => {
    const s = await startRedlock({ nodes: 1, persistence: durable ? 'fsync-always' : 'none' });
    const url = s.nodes[0]!.url;
    return { workerUrl: url, localUrl: url, freeBoundMs: (ttl) => ttl, faults: redisFaults(s), stop: () => s.stop() };
  },
  redlock: async (durable) => {
    const s = await startRedlock({ nodes: 3, persistence: durable ? 'fsync-always' : 'none' });
    return { workerUrl: s.url, localUrl: s.url, freeBoundMs: (ttl) => ttl, faults: redisFaults(s), stop: () => s.stop() };
  },
  zookeeper: async () => {
    const s = await startZooKeeper();
    const server = s.servers[0]!;
    return {
      workerUrl: `${s.url}?sessionTimeoutMs=${WORKER_SESSION_MS}`,
      localUrl: `${s.url}?sessionTimeoutMs=${LOCAL_ZK_SESSION_MS}`,
      freeBoundMs: () => WORKER_SESSION_MS,
      localSessionMs: LOCAL_ZK_SESSION_MS,
      faults: {
        ports: [server.clientPort],
        crash: async (downMs) => {
          await server.kill9();
          await pause(downMs);
          await server.restart();
          await s.waitServing(60_000);
        },
      },
      stop: () => s.stop(),
    };
  },
  etcd: async () => {
    const s = await startEtcd();
    const base = `etcd://127.0.0.1:${s.clientPort}`;
    return {
      workerUrl: `${base}?leaseTtlS=1`,
      localUrl: `${base}?leaseTtlS=${LOCAL_ETCD_LEASE_S}`,
      freeBoundMs: () => WORKER_SESSION_MS,
      localSessionMs: LOCAL_ETCD_LEASE_S * 1000,
      faults: {
        ports: [s.clientPort],
        crash: async (downMs) => {
          await s.kill9();
          await pause(downMs);
          await s.restart();
        },
      },
      stop: () => s.dispose(),
    };
  },
  ...Object.fromEntries(
    (['session', 'table'] as const).flatMap((mode) => [
      [
        `postgres-${mode}`,
        async () => {
          const s = await startPostgres();
          const url = `${s.url}?mode=${mode}`;
          const faults: EngineFaults = {
            ports: [s.port],
            crash: (downMs) => s.restart({ hard: true, downMs }),
            sessions: async () =>
              (await s.sql<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")).map((r) => String(r.pid)),
            kill: async (ids) => void (await s.sql('SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p', [ids.map(Number)])),
          };
          return { workerUrl: url, localUrl: url, freeBoundMs: (ttl: number) => (mode === 'session' ? 0 : ttl), faults, stop: () => s.stop() };
        },
      ],
      [
        `mysql-${mode}`,
        async () => {
          const s = await startMysql();
          const url = `${s.url}?mode=${mode}`;
          const faults: EngineFaults = {
            ports: [s.port],
            crash: (downMs) => s.restart({ hard: true, downMs }),
            sessions: async () =>
              ((await s.sql("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' AND USER <> 'system user'")) as Array<{ id: number }>).map((r) => String(r.id)),
            kill: async (ids) => {
              for (const id of ids) await s.sql(`KILL CONNECTION ${Number(id)}`).catch(() => undefined);
            },
          };
          return { workerUrl: url, localUrl: url, freeBoundMs: (ttl: number) => (mode === 'session' ? 0 : ttl), faults, stop: () => s.stop() };
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

async function startOne(name: string, durable: boolean): Promise<RunningEngine> {
  const starter = starters[name];
  if (!starter) throw new Error(`no chaos engine "${name}"`);
  const { localSessionMs, ...r } = await starter(durable);
  const probe = await connect(r.localUrl);
  try {
    return { ...r, localLiveMs: (ttl) => localSessionMs ?? ttl, info: probe.driver.info };
  } finally {
    await probe.close();
  }
}

/** `durable`: see the file header (Redis and Redlock only; the other engines keep their data anyway). */
export function chaosEngine(name: string, o: { durable?: boolean } = {}): ChaosEngine {
  const id = o.durable ? `${name}+durable` : name;
  return {
    name,
    start: () => {
      let p = running.get(id);
      if (!p) {
        p = startOne(name, o.durable ?? false);
        running.set(id, p);
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
