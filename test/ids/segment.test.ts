/**
 * Segment ids on real engines (memory, SQLite on a temp file, the shared redis-server): uniqueness
 * across generators in one process and across forked processes (started together), kill -9 and
 * restart (gaps, never duplicates), background prefetch (no caller waits in steady state, and the
 * engine's counter shows exactly one call per range), failures surfacing only with an empty buffer,
 * a Redis counter rolled back by a restart without persistence, and bad options.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { connect } from '../../src/connect.js';
import type { LockDriver } from '../../src/drivers/driver.js';
import { rangeStoreOf } from '../../src/drivers/id-store.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { SqliteDriver } from '../../src/drivers/sqlite/index.js';
import {
  ClosedError,
  IdsExhaustedError,
  IdsRegressedError,
  InvalidArgumentError,
  OutOfRangeError,
  UnavailableError,
  UnsupportedDriverError,
} from '../../src/errors.js';
import { SegmentIds } from '../../src/ids/segment.js';
import { startRedis } from '../support/redis.js';
import { startSqliteBlocker } from '../support/sqlite.js';
import { repoRoot } from '../support/workers.js';
import type { SegmentWorkerSpec } from './segment-worker.js';

const dir = mkdtempSync(join(tmpdir(), 'dlock-segment-'));
const sqlitePath = join(dir, 'ids.db');
const drivers: LockDriver[] = [];
const children = new Set<ChildProcess>();

afterEach(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  children.clear();
});

afterAll(async () => {
  await Promise.all(drivers.map((d) => d.close()));
  rmSync(dir, { recursive: true, force: true });
});

interface Engine {
  readonly name: string;
  create(): LockDriver;
  /** For forked workers; undefined when the engine lives in one process. */
  readonly url?: () => string;
}

const ENGINES: readonly Engine[] = [
  { name: 'memory', create: () => new MemoryDriver() },
  { name: 'sqlite', create: () => new SqliteDriver({ path: sqlitePath }), url: () => `sqlite:${sqlitePath}` },
  { name: 'redis', create: () => new RedisDriver({ url: inject('redisUrl') }), url: () => inject('redisUrl') },
];

function track<T extends LockDriver>(d: T): T {
  drivers.push(d);
  return d;
}

const uniqueName = (): string => `seg-${randomUUID()}`;

/** Throws unless every id is distinct; returns the count. */
function assertUnique(all: readonly bigint[]): number {
  const seen = new Set<bigint>();
  const dups: bigint[] = [];
  for (const id of all) {
    if (seen.has(id)) dups.push(id);
    seen.add(id);
  }
  expect(dups.slice(0, 10), `${dups.length} duplicate ids`).toEqual([]);
  return seen.size;
}

/** Throws unless `ids` is strictly increasing (in issue order). */
function assertIncreasing(ids: readonly bigint[], who: string): void {
  for (let i = 1; i < ids.length; i++) {
    const a = ids[i - 1] as bigint;
    const b = ids[i] as bigint;
    if (b <= a) throw new Error(`${who}: id #${i} ${b} is not above #${i - 1} ${a}`);
  }
}

/** The error a call throws or rejects with; fails when it succeeds. */
async function errorOf(fn: () => unknown): Promise<Error & { code?: string }> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof Error) return e;
    throw new Error('threw a non-Error');
  }
  throw new Error('expected the call to fail, but it succeeded');
}

const maxOf = (ids: readonly bigint[]): bigint => ids.reduce((m, id) => (id > m ? id : m), 0n);

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe.each(ENGINES)('SegmentIds on $name', (engine) => {
  it('several generators on one counter, drawing concurrently: no duplicates, each strictly increasing, ranges interleave', async () => {
    const driver = track(engine.create());
    const name = uniqueName();
    const gens = await Promise.all(Array.from({ length: 4 }, () => SegmentIds.open({ driver, name, step: 7, adaptive: false })));
    const drawn = gens.map(() => [] as bigint[]);
    await Promise.all(
      gens.map(async (g, i) => {
        for (let n = 0; n < 500; n++) {
          drawn[i]?.push(await g.next());
          if (n % 10 === 0) await turn();
        }
      }),
    );
    drawn.forEach((ids, i) => assertIncreasing(ids, `generator ${i}`));
    expect(assertUnique(drawn.flat())).toBe(2000);
    // Interleaving: every generator's ids span other generators' ranges (not one block each).
    const owner = new Map<bigint, number>();
    drawn.forEach((ids, i) => ids.forEach((id) => owner.set(id, i)));
    const order = [...owner.keys()].sort((a, b) => (a < b ? -1 : 1)).map((id) => owner.get(id));
    const switches = order.filter((o, i) => i > 0 && o !== order[i - 1]).length;
    expect(switches).toBeGreaterThan(20);
    await Promise.all(gens.map((g) => g.close()));
  });

  it('prefetches in the background: in steady state no call waits for the engine, one engine call per range', async () => {
    const driver = track(engine.create());
    const name = uniqueName();
    const step = 1000;
    const ids = await SegmentIds.open({ driver, name, step, adaptive: false });
    const drawn: bigint[] = [];
    let misses = 0;
    // Bursts of 25 ids a millisecond (25k ids/s), as request handlers would draw them. The
    // prefetch starts when 200 ids are left; a consumer that draws faster than the engine answers
    // (a loaded machine: a round trip can take longer than the ~8 ms those ids last) would wait
    // for any implementation, so when only 100 are left the draw pauses until the prefetched
    // range is there, bounded: without a background prefetch it never comes, and the draws miss.
    for (let burst = 0; burst < 800; burst++) {
      for (let i = 0; i < 25; i++) {
        if (ids.stats().remaining <= 100n && ids.stats().issued < 19_900n) {
          const until = performance.now() + 5000;
          while (ids.stats().remaining <= 100n && performance.now() < until) await sleep(1);
        }
        const id = ids.tryNext();
        if (id === undefined) {
          misses += 1;
          drawn.push(await ids.next());
        } else {
          drawn.push(id);
        }
      }
      await sleep(1);
    }
    // The 21st range was asked for when the last 200 ids of the 20th were left; on a loaded
    // machine its answer can still be in flight here (CI beside two CPU hogs: remaining 0).
    const landed = performance.now() + 5000;
    while (ids.stats().remaining < 1000n && performance.now() < landed) await sleep(1);
    const stats = ids.stats();
    // Without a background prefetch every one of the 20 ranges would miss; with it none does.
    expect(misses).toBe(0);
    expect(stats.waits).toBe(misses);
    expect(stats.issued).toBe(20_000n);
    // 20 ranges consumed + the one prefetched ahead of the 21st.
    expect(stats.fetches).toBe(21);
    expect(stats.remaining).toBe(1000n);
    assertIncreasing(drawn, 'generator');
    expect(drawn[0]).toBe(1n);
    expect(drawn.at(-1)).toBe(20_000n);
    await ids.close();
    // The engine's own counter: exactly one allocateRange per fetch, nothing else moved it.
    const counter = await rangeStoreOf(driver)?.allocateRange(name, 1n);
    expect(counter).toBe(BigInt(stats.fetches * step) + 1n);
  });

  it('nextBatch: strictly increasing across ranges; a waiting batch asks for what it misses in one fetch', async () => {
    const driver = track(engine.create());
    const ids = await SegmentIds.open({ driver, name: uniqueName(), step: 100, adaptive: false });
    const a = await ids.nextBatch(250);
    expect(a).toHaveLength(250);
    assertIncreasing(a, 'batch');
    const before = ids.stats().fetches;
    const b = await ids.nextBatch(5000);
    assertIncreasing([...a, ...b], 'batches');
    // What was loaded, then at most one fetch sized by the batch (plus a background prefetch).
    expect(ids.stats().fetches - before).toBeLessThanOrEqual(2);
    expect(assertUnique([...a, ...b])).toBe(5250);
    await ids.close();
  });

  it('adaptive step: ranges consumed fast double the step, up to maxStep', async () => {
    const driver = track(engine.create());
    const ids = await SegmentIds.open({ driver, name: uniqueName(), step: 10, maxStep: 640, rangeMs: 60_000 });
    const drawn: bigint[] = [];
    for (let i = 0; i < 20_000; i++) drawn.push(ids.tryNext() ?? (await ids.next()));
    assertIncreasing(drawn, 'adaptive');
    expect(ids.stats().step).toBe(640n);
    // 10 + 20 + ... + 640 = 1270 covers the first part; then 640 per range.
    expect(ids.stats().fetches).toBeLessThan(45);
    await ids.close();
  });

  it('close(): later calls reject with ClosedError; the driver stays usable', async () => {
    const driver = track(engine.create());
    const name = uniqueName();
    const ids = await SegmentIds.open({ driver, name, step: 10 });
    await ids.next();
    await ids.close();
    expect(ids.tryNext()).toBeUndefined();
    expect(await errorOf(() => ids.next())).toBeInstanceOf(ClosedError);
    const again = await SegmentIds.open({ driver, name, step: 10 });
    // The closed generator's unused rest is a gap: the new one starts above it.
    expect(await again.next()).toBe(11n);
    await again.close();
  });
});

interface WorkerRun {
  readonly child: ChildProcess;
  readonly ids: bigint[];
  readonly ready: Promise<void>;
  readonly done: Promise<{ fetches: number; waits: number; issued: string }>;
  readonly exited: Promise<void>;
}

const WORKER = fileURLToPath(new URL('./segment-worker.ts', import.meta.url));

function forkSegmentWorker(spec: SegmentWorkerSpec): WorkerRun {
  const child = fork(WORKER, [JSON.stringify(spec)], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  });
  children.add(child);
  const ids: bigint[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let readyResolve: () => void = () => undefined;
  let doneResolve: (s: { fetches: number; waits: number; issued: string }) => void = () => undefined;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const done = new Promise<{ fetches: number; waits: number; issued: string }>((resolve, reject) => {
    doneResolve = resolve;
    child.once('exit', (code, signal) => reject(new Error(`worker ${child.pid} exited (${code ?? signal}) before it was done`)));
  });
  done.catch(() => undefined);
  child.on('message', (m: { type: string; ids?: string[]; stats?: { fetches: number; waits: number; issued: string } }) => {
    if (m.type === 'ready') readyResolve();
    else if (m.type === 'ids') for (const s of m.ids ?? []) ids.push(BigInt(s));
    else if (m.type === 'done' && m.stats) doneResolve(m.stats);
  });
  return { child, ids, ready, done, exited };
}

async function startAll(runs: readonly WorkerRun[]): Promise<void> {
  await Promise.all(runs.map((r) => Promise.race([r.ready, r.done.then(() => undefined)])));
  const at = process.hrtime.bigint() + 200_000_000n;
  for (const r of runs) r.child.send({ type: 'go', at: at.toString() });
}

async function until(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe.each(ENGINES.filter((e) => e.url !== undefined))('SegmentIds across processes on $name', (engine) => {
  const url = (): string => engine.url?.() ?? '';

  it('8 processes started together: no duplicates, each strictly increasing, ranges interleave', async () => {
    const name = uniqueName();
    const runs = Array.from({ length: 8 }, () =>
      forkSegmentWorker({ url: url(), name, step: 50, adaptive: false, count: 3000, chunk: 500, pauseMs: 1 }),
    );
    await startAll(runs);
    const stats = await Promise.all(runs.map((r) => r.done));
    await Promise.all(runs.map((r) => r.exited));
    runs.forEach((r) => {
      expect(r.ids).toHaveLength(3000);
      assertIncreasing(r.ids, `pid ${r.child.pid}`);
    });
    expect(assertUnique(runs.flatMap((r) => r.ids))).toBe(24_000);
    // They really ran at the same time: the ranges of different processes interleave.
    const owner = new Map<bigint, number>();
    runs.forEach((r, i) => r.ids.forEach((id) => owner.set(id, i)));
    const order = [...owner.keys()].sort((a, b) => (a < b ? -1 : 1)).map((id) => owner.get(id));
    const switches = order.filter((o, i) => i > 0 && o !== order[i - 1]).length;
    expect(switches).toBeGreaterThan(100);
    // Every range came from one engine call: 60 ranges for 3000 ids, plus at most one ahead.
    for (const s of stats) expect(s.fetches).toBeLessThanOrEqual(61 + 1);
  });

  it('kill -9 mid-run and restart: gaps allowed, never a duplicate; the restarted one starts above everything before', async () => {
    const name = uniqueName();
    const spec: SegmentWorkerSpec = { url: url(), name, step: 100, adaptive: false, count: 0, chunk: 100, pauseMs: 1 };
    const runs = Array.from({ length: 4 }, () => forkSegmentWorker(spec));
    await startAll(runs);
    const victim = runs[0] as WorkerRun;
    await until('the victim to report 1000 ids', () => victim.ids.length >= 1000);
    process.kill(victim.child.pid ?? 0, 'SIGKILL');
    await victim.exited;
    expect(victim.child.signalCode).toBe('SIGKILL');
    const killedAt = maxOf(runs.flatMap((r) => r.ids));
    const restarted = forkSegmentWorker(spec);
    await startAll([restarted]);
    await until('the restarted worker to report 1000 ids', () => restarted.ids.length >= 1000);
    const survivors = [...runs.slice(1), restarted];
    for (const r of survivors) r.child.send({ type: 'stop' });
    await Promise.all(survivors.map((r) => r.done));
    const all = [...runs, restarted];
    all.forEach((r) => assertIncreasing(r.ids, `pid ${r.child.pid}`));
    const distinct = assertUnique(all.flatMap((r) => r.ids));
    // Its first range was allocated after the kill: above every id reported before it.
    expect(restarted.ids[0]).toBeGreaterThan(killedAt);
    // The loaded-but-unused ids of the victim (and of the stopped ones) are gaps.
    expect(BigInt(distinct)).toBeLessThan(maxOf(all.flatMap((r) => r.ids)));
  });
});

describe('SegmentIds failures', () => {
  it('sqlite: a failing fetch is retried later and surfaces only once the loaded ids run out', async () => {
    const file = join(dir, `blocked-${randomUUID()}.db`);
    await new SqliteDriver({ path: file }).close();
    const blocker = await startSqliteBlocker(file);
    const driver = track(new SqliteDriver({ path: file, busyTimeoutMs: 20 }));
    try {
      const ids = await SegmentIds.open({ driver, name: 'blocked', step: 100, adaptive: false });
      await blocker.lock();
      const drawn: bigint[] = [];
      // The background prefetch (at 20 left) fails; the loaded ids keep coming.
      for (let i = 0; i < 100; i++) {
        drawn.push(await ids.next());
        await turn();
      }
      expect(ids.stats().failedFetches).toBeGreaterThanOrEqual(1);
      const e = await errorOf(() => ids.next());
      expect(e).toBeInstanceOf(UnavailableError);
      expect(e.code).toBe('DLOCK_UNAVAILABLE');
      expect(e.message).toContain('SegmentIds "blocked"');
      await blocker.unlock();
      drawn.push(await ids.next(), ...(await ids.nextBatch(150)));
      assertIncreasing(drawn, 'generator');
      expect(assertUnique(drawn)).toBe(251);
      await ids.close();
    } finally {
      await blocker.stop();
    }
  });

  it('redis: a counter rolled back by a restart without persistence is refused, never a duplicate', async () => {
    const server = await startRedis();
    const driver = track(new RedisDriver({ url: server.url }));
    let restarted: Awaited<ReturnType<typeof startRedis>> | undefined;
    try {
      const ids = await SegmentIds.open({ driver, name: 'rolled-back', step: 100, adaptive: false });
      const before = await ids.nextBatch(150);
      await server.kill9();
      // The loaded ids are still handed out while the engine is gone; then a typed error.
      const during: bigint[] = [];
      let failure: Error | undefined;
      for (let i = 0; i < 100 && !failure; i++) {
        try {
          during.push(await ids.next());
        } catch (e) {
          failure = e as Error;
        }
      }
      expect(during.length).toBeGreaterThan(0);
      expect(failure).toBeInstanceOf(UnavailableError);
      restarted = await startRedis({ port: server.port });
      // The new server's counter starts from 0: every range it answers is refused until it passes ours.
      let regressed: Error | undefined;
      const deadline = Date.now() + 20_000;
      while (!regressed && Date.now() < deadline) {
        try {
          const id = await ids.next();
          throw new Error(`issued ${id} from a rolled-back counter`);
        } catch (e) {
          if (e instanceof IdsRegressedError) regressed = e;
          else if (!(e instanceof UnavailableError)) throw e;
          else await sleep(100);
        }
      }
      expect(regressed).toBeInstanceOf(IdsRegressedError);
      expect((regressed as IdsRegressedError).highest).toBe(200n);
      expect((regressed as IdsRegressedError).received).toBeLessThanOrEqual(200n);
      assertUnique([...before, ...during]);
      await ids.close();
    } finally {
      await driver.close();
      await restarted?.stop();
      await server.stop();
    }
  });

  it('counter at 2^63 - 1: IdsExhaustedError on every engine, nothing handed out', async () => {
    for (const engine of ENGINES) {
      const driver = track(engine.create());
      const name = uniqueName();
      await rangeStoreOf(driver)?.allocateRange(name, 2n ** 63n - 10n);
      const ids = await SegmentIds.open({ driver, name, step: 5, adaptive: false });
      expect(await ids.nextBatch(5)).toEqual([2n ** 63n - 9n, 2n ** 63n - 8n, 2n ** 63n - 7n, 2n ** 63n - 6n, 2n ** 63n - 5n]);
      const e = await errorOf(() => ids.nextBatch(10));
      expect(e, engine.name).toBeInstanceOf(IdsExhaustedError);
      expect(await rangeStoreOf(driver)?.allocateRange(name, 4n)).toBe(2n ** 63n - 1n);
      await ids.close();
    }
  });
});

describe('SegmentIds options', () => {
  it('rejects bad options with typed errors', async () => {
    const driver = track(new MemoryDriver());
    const bad = async (o: object): Promise<Error> => errorOf(() => SegmentIds.open(o as never));
    expect(await bad({ driver })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ driver, name: '' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    const client = await connect('memory:');
    expect(await bad({ driver, client, name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    expect(await bad({ driver: {}, name: 'x' })).toBeInstanceOf(InvalidArgumentError);
    for (const step of [0, -1, 1.5, Number.NaN, 2 ** 60, '10', 0n, 2n ** 63n]) {
      const e = await bad({ driver, name: 'x', step });
      expect(e, String(step)).toBeInstanceOf(OutOfRangeError);
      expect((e as OutOfRangeError).option).toBe('step');
    }
    for (const prefetchAt of [0, 1, -0.5, 2, Number.NaN]) {
      expect(await bad({ driver, name: 'x', prefetchAt })).toBeInstanceOf(OutOfRangeError);
    }
    expect(await bad({ driver, name: 'x', step: 100, maxStep: 50 })).toBeInstanceOf(OutOfRangeError);
    expect(await bad({ driver, name: 'x', rangeMs: 0 })).toBeInstanceOf(OutOfRangeError);
    expect(await bad({ driver, name: 'x', adaptive: 'yes' })).toBeInstanceOf(InvalidArgumentError);
    const ids = await SegmentIds.open({ client, name: 'via-client' });
    expect(await ids.next()).toBe(1n);
    for (const n of [0, -1, 1.5, 1_000_001]) expect(await errorOf(() => ids.nextBatch(n))).toBeInstanceOf(OutOfRangeError);
    await ids.close();
    await client.close();
  });

  it('a driver without allocateRange: UnsupportedDriverError naming the driver', async () => {
    /** A real lock driver (delegating to memory) that does not offer id counters. */
    const inner = track(new MemoryDriver());
    const locksOnly: LockDriver = {
      kind: 'try-set',
      info: { ...inner.info, name: 'locks-only' },
      tryAcquire: (r) => inner.tryAcquire(r),
      watch: (k) => inner.watch(k),
      extend: (i) => inner.extend(i),
      release: (k, o) => inner.release(k, o),
      inspect: (k) => inner.inspect(k),
      list: (prefix, page) => inner.list(prefix, page),
      forceRelease: (k) => inner.forceRelease(k),
      close: () => inner.close(),
    };
    const e = await errorOf(() => SegmentIds.open({ driver: locksOnly, name: 'x' }));
    expect(e).toBeInstanceOf(UnsupportedDriverError);
    expect(e.code).toBe('DLOCK_UNSUPPORTED_DRIVER');
    expect((e as UnsupportedDriverError).driver).toBe('locks-only');
    expect(e.message).toContain('"locks-only" driver');
    expect(e.message).toContain('allocateRange');
  });
});
