/**
 * engines: dlock on every engine it supports, same run, same method:
 *
 * - round trip: p50 of `inspect()` (one engine round trip on every driver) after a 5–15 ms idle
 *   pause, the situation a handoff starts from;
 * - handoff: one holder, one waiter (two clients, separate connections); time from the holder's
 *   `release()` to the waiter's `acquire()` resolving, released 5–15 ms after the waiter started,
 *   and in a second series 1–4 ms after (a waiter under the 5 ms barging bound whose holder does
 *   not come back: it must not wait out the bound); also expressed in round trips of that
 *   engine (handoff p50 / round-trip p50): the target is <= 1.5 on ZooKeeper, etcd and SQL (issue 10: a waiter whose predecessor held
 *   the lock needs no second look), one MET/MISSED line per engine;
 * - contended: `processes` forked processes loop acquire -> read a shared counter file -> write
 *   it + 1 -> release on one key for `seconds`; cycles/s, the longest wait, the share of releases
 *   after which the releaser took the lock again, and lost updates (must be 0).
 *
 * Every engine is a private server started for the run (the test harness's starters, on random
 * loopback ports in temp dirs) and stopped after it.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EngineDone, EngineToWorker } from './engines-worker.js';
import { delay, fmt, fmtSpread, msBetween, now, quantile, spread, table, type Spread, workerExecArgv } from './support.js';

type Dlock = typeof import('../src/index.js');

/** A private engine for the run. */
interface Engine {
  url: string;
  stop(): Promise<void>;
  /**
   * The engine's own wake-up mechanism without dlock, measured like the handoff (the waiter
   * starts, the holder lets go 5–15 ms later): the physical floor a handoff on it compares with.
   */
  floor?: Floor;
  /** The same floor with what a fenced grant must add on this engine (a durable token write), if any. */
  fencedFloor?: Floor;
}

/** A floor's measurement: its handoffs (ms, sorted), and the engine's bare round trip after the same idle pause (`SELECT 1`, ms, sorted). */
interface Floor {
  name: string;
  measure(n: number): Promise<{ lat: number[]; bareRtt: number[] }>;
}

interface EngineSpec {
  id: string;
  name: string;
  start(): Promise<Engine>;
}

function sqlite(): Promise<Engine> {
  const dir = mkdtempSync(join(tmpdir(), 'dlock-bench-sqlite-'));
  return Promise.resolve({ url: `sqlite:${join(dir, 'locks.db')}`, stop: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })) });
}

/** Every engine dlock drives; starters come from the test harness (test/support). */
export const ENGINES: readonly EngineSpec[] = [
  { id: 'sqlite', name: 'SQLite (embedded)', start: sqlite },
  {
    id: 'redis',
    name: 'Redis',
    start: async () => {
      const { startRedis } = await import('../test/support/redis.js');
      const s = await startRedis();
      return { url: s.url, stop: () => s.stop() };
    },
  },
  {
    id: 'redis-cluster',
    name: 'Redis Cluster (3 masters)',
    start: async () => {
      const { startRedisCluster } = await import('../test/support/redis-cluster.js');
      const s = await startRedisCluster();
      return { url: s.url, stop: () => s.stop() };
    },
  },
  {
    id: 'redlock',
    name: 'Redlock (3 nodes)',
    start: async () => {
      const { startRedlock } = await import('../test/support/redlock.js');
      const s = await startRedlock({ nodes: 3 });
      return { url: s.url, stop: () => s.stop() };
    },
  },
  {
    id: 'zookeeper',
    name: 'ZooKeeper',
    start: async () => {
      const { startZooKeeper } = await import('../test/support/zookeeper.js');
      const s = await startZooKeeper();
      return { url: s.url, stop: () => s.stop() };
    },
  },
  {
    id: 'etcd',
    name: 'etcd',
    start: async () => {
      const { startEtcd } = await import('../test/support/etcd.js');
      const s = await startEtcd();
      return { url: s.url, stop: () => s.stop() };
    },
  },
  ...(['session', 'table'] as const).map((mode) => ({
    id: mode === 'session' ? 'postgres' : 'postgres-table',
    name: `PostgreSQL (${mode})`,
    start: async (): Promise<Engine> => {
      const { startPostgres } = await import('../test/support/postgres.js');
      const s = await startPostgres();
      return { url: `${s.url}?mode=${mode}`, stop: () => s.stop() };
    },
  })),
  ...(['session', 'table'] as const).map((mode) => ({
    id: mode === 'session' ? 'mysql' : 'mysql-table',
    name: `MariaDB (${mode})`,
    start: async (): Promise<Engine> => {
      const { startMysql } = await import('../test/support/mysql.js');
      const s = await startMysql();
      return {
        url: `${s.url}?mode=${mode}`,
        stop: () => s.stop(),
        floor: mysqlFloor(s.url, mode),
        fencedFloor: mode === 'session' ? mysqlFloor(s.url, 'session-fenced') : undefined,
      };
    },
  })),
];

/**
 * MariaDB's wake-up mechanisms on two bare mysql2 connections, no dlock:
 * - session mode: a GET_LOCK blocked on the server, released by the holder's RELEASE_LOCK;
 * - table mode: a sleeping `SELECT IF(row unchanged, SLEEP, 1)` (dlock's watch statement), ended
 *   by the holder's one-batch release (`UPDATE` the row, then `KILL QUERY` the sleeper), then the
 *   waiter's one-statement grant (`UPDATE ... WHERE owner IS NULL`): the least a table-mode
 *   handoff that wakes with KILL can cost, if the release were one round trip (dlock's rule runs
 *   in the client between the step's two round trips);
 * - session mode, fenced: the same blocked GET_LOCK, and in the same batch the least a grant
 *   with a fencing token must add: the durable token upsert (`INSERT ... ON DUPLICATE KEY UPDATE
 *   token = LAST_INSERT_ID(token + 1)`, only when the lock was taken), its new value back in the
 *   OK packet. It is still one round trip for the waiter, the floor of a fenced session handoff.
 */
function mysqlFloor(url: string, mode: 'session' | 'session-fenced' | 'table'): Floor {
  return {
    name: { session: 'bare GET_LOCK handoff', 'session-fenced': 'bare GET_LOCK + token upsert in one batch', table: 'bare UPDATE + KILL QUERY wake + UPDATE grant' }[mode],
    measure: async (n) => {
      const { createConnection } = await import('mysql2/promise');
      const holder = await createConnection({ uri: url, multipleStatements: true });
      const waiter = await createConnection({ uri: url, multipleStatements: true });
      const lat: number[] = [];
      const bareRtt: number[] = [];
      try {
        const [[{ id }]] = (await waiter.query('SELECT CONNECTION_ID() AS id')) as unknown as [[{ id: number }]];
        await holder.query(
          'CREATE TABLE IF NOT EXISTS bench_floor (id INT PRIMARY KEY, owner VARCHAR(16), changes BIGINT NOT NULL) ENGINE=InnoDB; REPLACE INTO bench_floor VALUES (1, NULL, 0); ' +
            'CREATE TABLE IF NOT EXISTS bench_floor_tokens (id INT PRIMARY KEY, token BIGINT NOT NULL) ENGINE=InnoDB',
        );
        for (let i = 0; i < n + 10; i++) {
          let waiting: Promise<unknown>;
          let release: () => Promise<unknown>;
          if (mode === 'session' || mode === 'session-fenced') {
            await holder.query("DO GET_LOCK('bench_floor', 0)");
            waiting =
              mode === 'session'
                ? waiter.query("SELECT GET_LOCK('bench_floor', 30)")
                : waiter.query(
                    "SET @g = GET_LOCK('bench_floor', 30); INSERT INTO bench_floor_tokens (id, token) SELECT 1, LAST_INSERT_ID(1) FROM DUAL WHERE @g = 1 " +
                      'ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)',
                  );
            release = () => holder.query("DO RELEASE_LOCK('bench_floor')");
          } else {
            await holder.query("UPDATE bench_floor SET owner = 'h' WHERE id = 1");
            const [[{ changes }]] = (await waiter.query('SELECT changes FROM bench_floor WHERE id = 1')) as unknown as [[{ changes: string }]];
            waiting = waiter
              .query('SELECT IF((SELECT changes FROM bench_floor WHERE id = 1) <=> CAST(? AS SIGNED), SLEEP(30), 1) AS w', [changes])
              .catch(() => undefined)
              .then(() => waiter.query("UPDATE bench_floor SET owner = 'w' WHERE id = 1 AND owner IS NULL"));
            release = () => holder.query(`UPDATE bench_floor SET owner = NULL, changes = changes + 1 WHERE id = 1; KILL QUERY ${id}`);
          }
          await delay(5 + Math.random() * 10);
          const t = now();
          const released = release();
          await waiting;
          if (i >= 10) lat.push(msBetween(t, now()));
          await released;
          if (mode !== 'table') await waiter.query("DO RELEASE_LOCK('bench_floor')");
          await delay(5 + Math.random() * 10);
          const p = now();
          await holder.query('SELECT 1');
          if (i >= 10) bareRtt.push(msBetween(p, now()));
        }
      } finally {
        await Promise.allSettled([holder.end(), waiter.end()]);
      }
      return { lat: lat.sort((x, y) => x - y), bareRtt: bareRtt.sort((x, y) => x - y) };
    },
  };
}

export interface EnginesOptions {
  only: readonly string[] | undefined;
  reps: number;
  handoffs: number;
  seconds: number;
  processes: number;
  dlock: 'dist' | 'src';
  json: boolean;
  log: (s: string) => void;
}

interface Result {
  rttP50: number;
  handoffP50: number;
  handoffP90: number;
  roundTrips: number;
  /** Handoff p50 when the holder releases 1–4 ms after the waiter started (and does not come back). */
  shortWaitP50: number;
  /** The engine's bare wake-up mechanism (Engine.floor), p50 ms and in round trips; NaN without one. */
  floorP50: number;
  floorRoundTrips: number;
  /** The fenced floor (Engine.fencedFloor), p50 ms and in round trips; NaN without one. */
  fencedFloorP50: number;
  fencedFloorRoundTrips: number;
  /**
   * The engine's bare round trip (`SELECT 1` on a bare connection after the same idle pause,
   * measured with the floors), and the handoff and the fenced floor counted in it; NaN without a floor.
   */
  bareRttP50: number;
  bareRoundTrips: number;
  fencedFloorBareRoundTrips: number;
  cyclesPerSecond: number;
  maxWaitMs: number;
  retakenPct: number;
  lostUpdates: number;
}

function loadDlock(source: 'dist' | 'src'): Promise<Dlock> {
  return source === 'dist' ? (import(new URL('../dist/esm/index.js', import.meta.url).href) as Promise<Dlock>) : import('../src/index.js');
}

async function measureLatency(dlock: Dlock, url: string, handoffs: number, tag: string): Promise<Pick<Result, 'rttP50' | 'handoffP50' | 'handoffP90' | 'roundTrips' | 'shortWaitP50'>> {
  const a = await dlock.connect(url, { ttlMs: 10_000 });
  const b = await dlock.connect(url, { ttlMs: 10_000 });
  try {
    const key = `bench:engines:handoff:${tag}`;
    // Warm up both clients (connections, sessions, statements).
    for (let i = 0; i < 10; i++) await (await a.acquire(key)).release();
    for (let i = 0; i < 10; i++) await (await b.acquire(key)).release();
    const rtt: number[] = [];
    for (let i = 0; i < 60; i++) {
      await delay(5 + Math.random() * 10);
      const t = now();
      await a.inspect(key);
      rtt.push(msBetween(t, now()));
    }
    // One series of handoffs: the holder releases `holdMs()` after the waiter started waiting.
    const series = async (n: number, holdMs: () => number): Promise<number[]> => {
      const lat: number[] = [];
      for (let i = 0; i < n + 10; i++) {
        const held = await a.acquire(key);
        let gotAt: bigint | undefined;
        const waiting = b.acquire(key, { waitMs: 30_000 }).then((l) => {
          gotAt = now();
          return l;
        });
        await delay(holdMs());
        if (gotAt !== undefined) throw new Error('the waiter got the lock while it was held');
        const t = now();
        const releasing = held.release();
        const got = await waiting;
        await releasing;
        if (i >= 10) lat.push(msBetween(t, gotAt ?? now()));
        await got.release();
      }
      return lat.sort((x, y) => x - y);
    };
    const lat = await series(handoffs, () => 5 + Math.random() * 10);
    // A waiter that has waited less than the 5 ms barging bound, whose holder does not come back:
    // the key must still reach it in one handoff, not at the end of the bound.
    const short = await series(Math.max(20, Math.round(handoffs / 2)), () => 1 + Math.random() * 3);
    rtt.sort((x, y) => x - y);
    const rttP50 = quantile(rtt, 0.5);
    const handoffP50 = quantile(lat, 0.5);
    return { rttP50, handoffP50, handoffP90: quantile(lat, 0.9), roundTrips: handoffP50 / rttP50, shortWaitP50: quantile(short, 0.5) };
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

async function measureContended(url: string, o: EnginesOptions, tag: string): Promise<Pick<Result, 'cyclesPerSecond' | 'maxWaitMs' | 'retakenPct' | 'lostUpdates'>> {
  const dir = mkdtempSync(join(tmpdir(), 'dlock-bench-counter-'));
  const counter = join(dir, 'counter');
  writeFileSync(counter, '0');
  const file = fileURLToPath(new URL('./engines-worker.ts', import.meta.url));
  const execArgv = workerExecArgv();
  const workers = Array.from({ length: o.processes }, () => fork(file, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  try {
    const ready = workers.map((w) => new Promise<void>((resolve, reject) => {
      w.once('message', (m: { type: string; error?: string }) => (m.type === 'ready' ? resolve() : reject(new Error(m.error))));
      w.once('exit', (code) => reject(new Error(`bench worker exited with ${code}`)));
    }));
    const job: EngineToWorker = { type: 'prepare', url, key: `bench:engines:contended:${tag}`, counter, dlock: o.dlock };
    const done = workers.map((w) => new Promise<EngineDone>((resolve, reject) => {
      w.on('message', (m: EngineDone | { type: string; error?: string }) => {
        if (m.type === 'done') resolve(m as EngineDone);
        else if (m.type === 'failed') reject(new Error((m as { error?: string }).error));
      });
    }));
    for (const w of workers) w.send(job);
    await Promise.all(ready);
    const startAt = now() + 300_000_000n;
    const stopAt = startAt + BigInt(Math.round(o.seconds * 1e9));
    for (const w of workers) w.send({ type: 'go', startAt: String(startAt), stopAt: String(stopAt) } satisfies EngineToWorker);
    const results = await Promise.all(done);
    const all: Array<{ v: number; w: number }> = [];
    results.forEach((r, w) => {
      for (const v of r.values) all.push({ v, w });
    });
    all.sort((x, y) => x.v - y.v);
    let lost = 0;
    let retaken = 0;
    for (let i = 1; i < all.length; i++) {
      if (all[i]?.v === all[i - 1]?.v) lost++;
      else if (all[i]?.w === all[i - 1]?.w) retaken++;
    }
    const waits = results.flatMap((r) => r.waits);
    const inWindow = results.reduce((n, r) => n + r.inWindow, 0);
    return {
      cyclesPerSecond: inWindow / o.seconds,
      maxWaitMs: waits.reduce((m, x) => Math.max(m, x), 0),
      retakenPct: all.length > 1 ? (100 * retaken) / (all.length - 1) : 0,
      lostUpdates: lost,
    };
  } finally {
    for (const w of workers) if (w.connected) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => (w.exitCode !== null || w.signalCode !== null ? Promise.resolve() : new Promise((r) => w.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Run the scenario and print one table (or JSON rows). */
export async function runEngines(o: EnginesOptions): Promise<void> {
  const specs = o.only ? ENGINES.filter((e) => o.only?.includes(e.id)) : ENGINES;
  if (o.only) for (const id of o.only) if (!ENGINES.some((e) => e.id === id)) throw new Error(`--only: unknown engine "${id}" (engines: ${ENGINES.map((e) => e.id).join(', ')})`);
  const dlock = await loadDlock(o.dlock);
  const rows: Array<{ spec: EngineSpec; figures: Record<keyof Result, Spread>; floor: string | undefined; fencedFloor: string | undefined }> = [];
  for (const spec of specs) {
    const engine = await spec.start();
    const per: Result[] = [];
    try {
      for (let rep = 0; rep < o.reps; rep++) {
        const t = Date.now();
        const lat = await measureLatency(dlock, engine.url, o.handoffs, `${spec.id}:${rep}`);
        const con = await measureContended(engine.url, o, `${spec.id}:${rep}`);
        const floor = engine.floor ? await engine.floor.measure(o.handoffs) : undefined;
        const fenced = engine.fencedFloor ? await engine.fencedFloor.measure(o.handoffs) : undefined;
        const floorP50 = floor ? quantile(floor.lat, 0.5) : Number.NaN;
        const fencedFloorP50 = fenced ? quantile(fenced.lat, 0.5) : Number.NaN;
        const bareRttP50 = floor ? quantile([...floor.bareRtt, ...(fenced?.bareRtt ?? [])].sort((x, y) => x - y), 0.5) : Number.NaN;
        per.push({
          ...lat,
          ...con,
          floorP50,
          floorRoundTrips: floorP50 / lat.rttP50,
          fencedFloorP50,
          fencedFloorRoundTrips: fencedFloorP50 / lat.rttP50,
          bareRttP50,
          bareRoundTrips: lat.handoffP50 / bareRttP50,
          fencedFloorBareRoundTrips: fencedFloorP50 / bareRttP50,
        });
        o.log(
          `  [engines ${rep + 1}/${o.reps}] ${spec.name.padEnd(24)} rtt ${fmt(lat.rttP50)} ms  handoff p50 ${fmt(lat.handoffP50)} ms = ${fmt(lat.roundTrips, 2)} rt  after a 1–4 ms wait ${fmt(lat.shortWaitP50)} ms  ` +
            `contended ${fmt(con.cyclesPerSecond)}/s max wait ${fmt(con.maxWaitMs)} ms lost ${con.lostUpdates}  (${((Date.now() - t) / 1000).toFixed(1)} s)`,
        );
      }
    } finally {
      await engine.stop();
    }
    const figures = {} as Record<keyof Result, Spread>;
    for (const k of Object.keys(per[0] ?? {}) as Array<keyof Result>) figures[k] = spread(per.map((r) => r[k]));
    rows.push({ spec, figures, floor: engine.floor?.name, fencedFloor: engine.fencedFloor?.name });
  }
  if (o.json) {
    for (const r of rows) console.log(JSON.stringify({ scenario: 'engines', library: `dlock on ${r.spec.name}`, id: r.spec.id, figures: r.figures, params: { reps: o.reps, handoffs: o.handoffs, seconds: o.seconds, processes: o.processes, dlock: o.dlock } }));
    return;
  }
  console.log('\n## engines: dlock on each engine (same run)');
  console.log(
    table(
      ['engine', 'round trip after idle p50 ms', 'handoff p50 ms', 'handoff p90 ms', 'handoff in round trips', 'p50 after a 1–4 ms wait', `contended cycles/s (${o.processes} procs)`, 'max wait ms', 'releaser re-took %', 'lost updates'],
      rows.map((r) => [
        r.spec.name,
        fmtSpread(r.figures.rttP50),
        fmtSpread(r.figures.handoffP50),
        fmtSpread(r.figures.handoffP90),
        fmtSpread(r.figures.roundTrips, '', 2),
        fmtSpread(r.figures.shortWaitP50),
        fmtSpread(r.figures.cyclesPerSecond),
        fmtSpread(r.figures.maxWaitMs),
        fmtSpread(r.figures.retakenPct),
        fmtSpread(r.figures.lostUpdates),
      ]),
    ),
  );
  console.log(`round trip: inspect() after a 5–15 ms idle pause; handoff: release -> the waiter holds it (${o.handoffs} per rep); in round trips = handoff p50 / round trip p50 (target <= 1.5 on ZooKeeper, etcd and SQL); after a 1–4 ms wait: the same handoff when the holder releases 1–4 ms after the waiter started (under the 5 ms barging bound) and does not come back.`);
  console.log(`contended: ${o.processes} processes, one key, acquire -> read counter file -> write +1 -> release, ${o.seconds} s per rep; lost updates must be 0.`);
  const TARGET_RT = 1.5;
  for (const r of rows) if (r.figures.lostUpdates.max > 0) console.log(`EXCLUSION BROKEN on ${r.spec.name}: ${r.figures.lostUpdates.max} lost updates`);
  for (const r of rows) {
    if (!['zookeeper', 'etcd', 'postgres', 'postgres-table', 'mysql', 'mysql-table'].includes(r.spec.id)) continue;
    const rt = r.figures.roundTrips.median;
    const rtSpread = (x: Spread): string => `${x.median.toFixed(2)} rt [${x.min.toFixed(2)}–${x.max.toFixed(2)}]`;
    const floor =
      (r.floor ? `; floor, ${r.floor} in this run: ${fmt(r.figures.floorP50.median)} ms = ${rtSpread(r.figures.floorRoundTrips)}` : '') +
      (r.fencedFloor ? `; fenced floor, ${r.fencedFloor}: ${fmt(r.figures.fencedFloorP50.median)} ms = ${rtSpread(r.figures.fencedFloorRoundTrips)}` : '') +
      (r.floor
        ? `; in bare round trips (SELECT 1 after the same pause, ${fmt(r.figures.bareRttP50.median)} ms): dlock ${rtSpread(r.figures.bareRoundTrips)}` +
          (r.fencedFloor ? `, fenced floor ${rtSpread(r.figures.fencedFloorBareRoundTrips)}` : '')
        : '');
    console.log(`target: ${r.spec.name} handoff <= ${TARGET_RT} round trips of its engine: ${rt <= TARGET_RT ? 'MET' : 'MISSED'} (${rt.toFixed(2)}${floor})`);
  }
}
