/**
 * IdGenerator in-process against real engines: memory, the embedded SQLite file (temp dir), the
 * run's shared Redis, and a private redis-server that the stall test pauses (SIGSTOP).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockClient } from '../../src/core/client.js';
import type { LockDriver } from '../../src/drivers/driver.js';
import { markStoreOf } from '../../src/drivers/id-store.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import {
  ClockBackwardsError,
  ClosedError,
  InvalidArgumentError,
  NoFreeWorkerError,
  OutOfRangeError,
  UnsupportedDriverError,
  WorkerLeaseLostError,
  WorkerMarkStalledError,
} from '../../src/errors.js';
import { IdGenerator } from '../../src/ids/generator.js';
import { workerKey } from '../../src/ids/worker-lease.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { repoRoot } from '../support/workers.js';
import { delay, tempDir } from './harness.js';

let tmp: { dir: string; cleanup: () => void };
beforeAll(() => {
  tmp = tempDir('dlock-ids-gen-');
});
afterAll(() => tmp.cleanup());

let names = 0;
const uniqueName = (what: string): string => `${what}-${process.pid}-${Date.now()}-${++names}`;

interface Engine {
  readonly name: string;
  /** A client on the engine (memory: the one shared client, since each memory driver is its own engine). */
  client(): Promise<LockClient>;
}

const memoryClient = new LockClient(new MemoryDriver());
const opened: LockClient[] = [];
afterAll(async () => {
  await Promise.all(opened.map((c) => c.close()));
  await memoryClient.close();
});

const engines: Engine[] = [
  { name: 'memory', client: () => Promise.resolve(memoryClient) },
  {
    name: 'sqlite',
    client: async () => {
      const c = await connect(`sqlite:${join(tmp.dir, 'ids.db')}`);
      opened.push(c);
      return c;
    },
  },
  {
    name: 'redis',
    client: async () => {
      const c = await connect(inject('redisUrl'));
      opened.push(c);
      return c;
    },
  },
];

function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

describe.each(engines)('IdGenerator on $name', (engine) => {
  it('claims a worker id, issues ids carrying it, keeps the slot mark ahead of its time, and releases on close', async () => {
    const client = await engine.client();
    const name = uniqueName('basic');
    const gen = await IdGenerator.start({ client, name, ttlMs: 3000 });
    expect(gen.workerKey).toBe(workerKey(name, gen.workerId));
    const ids = gen.nextBatch(5000);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(gen.decode(ids[0]!).worker).toBe(gen.workerId);
    expect(typeof gen.nextString()).toBe('string');
    // The mark on the engine is what the generator may issue up to: markAheadMs (1.5 s) ahead.
    const mark = Number(await markStoreOf(client.driver)!.readMark(gen.workerKey));
    expect(mark).toBe(gen.coveredUntilMs);
    // Ahead of everything issued, and never further ahead than the window (timers may run late
    // on a loaded machine, so no lower bound on the distance from the wall clock).
    expect(mark).toBeGreaterThanOrEqual(gen.decode(ids[ids.length - 1]!).timestampMs);
    expect(mark - Date.now()).toBeLessThan(1500 + 750 + 100);
    await delay(600);
    expect(Number(await markStoreOf(client.driver)!.readMark(gen.workerKey))).toBeGreaterThan(mark);
    expect(gen.isActive()).toBe(true);
    expect((await client.inspect(gen.workerKey))?.owner).toBeDefined();

    await gen.close();
    expect(gen.isActive()).toBe(false);
    expect(gen.signal.aborted).toBe(true);
    expect(thrown(() => gen.next())).toBeInstanceOf(ClosedError);
    expect(await client.inspect(gen.workerKey)).toBeNull();
    await gen.close();
  });

  it('gives generators of one name different worker ids; a full id space is NoFreeWorkerError; a freed worker id is reused above its mark', async () => {
    const client = await engine.client();
    const name = uniqueName('full');
    const layout = { workerBits: 1 };
    const g1 = await IdGenerator.start({ client, name, layout, ttlMs: 2000 });
    const g2 = await IdGenerator.start({ client, name, layout, ttlMs: 2000 });
    expect(new Set([g1.workerId, g2.workerId])).toEqual(new Set([0, 1]));
    const e = await rejection(IdGenerator.start({ client, name, layout, ttlMs: 2000 }));
    expect(e).toBeInstanceOf(NoFreeWorkerError);
    expect(e).toMatchObject({ code: 'DLOCK_NO_FREE_WORKER', tried: 2 });

    const lastOfG1 = g1.nextBatch(100).pop()!;
    const waiting = IdGenerator.start({ client, name, layout, ttlMs: 2000, waitMs: 5000 });
    await delay(100);
    await g1.close();
    const g3 = await waiting;
    expect(g3.workerId).toBe(g1.workerId);
    // g1 closed with its mark still ahead: g3 issues above it (the same worker id never repeats).
    expect(g3.next() > lastOfG1).toBe(true);
    expect(g3.lastTimeMs).toBeGreaterThan(g1.lastTimeMs);
    await g2.close();
    await g3.close();
  });

  it('a fixed slot: busy is NoFreeWorkerError; a mark too far ahead is ClockBackwardsError (source mark) and the slot is released; auto claims avoid such a slot', async () => {
    const client = await engine.client();
    const name = uniqueName('fixed');
    const layout = { workerBits: 1 };
    // Someone else's clock ran a minute ahead on slot 0.
    const lease = await client.acquire(workerKey(name, 0), { ttlMs: 2000 });
    expect(await markStoreOf(client.driver)!.raiseMark(workerKey(name, 0), lease.owner, BigInt(Date.now() + 60_000))).toBe(true);
    expect(await rejection(IdGenerator.start({ client, name, layout, slot: 0 }))).toBeInstanceOf(NoFreeWorkerError);
    await lease.release();

    const e = await rejection(IdGenerator.start({ client, name, layout, slot: 0, maxStartWaitMs: 200 }));
    expect(e).toBeInstanceOf(ClockBackwardsError);
    expect(e).toMatchObject({ code: 'DLOCK_CLOCK_BACKWARDS', source: 'mark' });
    expect((e as Error).message).toMatch(/ahead of this host's clock/);
    expect(await client.inspect(workerKey(name, 0))).toBeNull();

    // Automatic claims prefer the slot they can use at once.
    const auto = await IdGenerator.start({ client, name, layout, maxStartWaitMs: 200 });
    expect(auto.workerId).toBe(1);
    // With slot 1 taken, the only free slot needs a minute: refused, not waited for.
    expect(await rejection(IdGenerator.start({ client, name, layout, maxStartWaitMs: 200 }))).toBeInstanceOf(ClockBackwardsError);
    await auto.close();
  });

  it('waits for a slot mark that is only a little ahead, then issues above it', async () => {
    const client = await engine.client();
    const name = uniqueName('ahead');
    const key = workerKey(name, 3);
    const lease = await client.acquire(key, { ttlMs: 2000 });
    const mark = Date.now() + 1200;
    await markStoreOf(client.driver)!.raiseMark(key, lease.owner, BigInt(mark));
    await lease.release();
    const started = Date.now();
    const gen = await IdGenerator.start({ client, name, slot: 3, ttlMs: 3000 });
    // Borrowing covers the last maxBorrowMs (750 ms here); the rest was waited for.
    expect(Date.now() - started).toBeGreaterThan(300);
    expect(gen.decode(gen.next()).timestampMs).toBeGreaterThan(mark);
    await gen.close();
  });

  it('stops issuing at once when its lease is lost (here: its client closes)', async () => {
    const client = engine.name === 'memory' ? new LockClient(new MemoryDriver()) : await engine.client();
    const gen = await IdGenerator.start({ client, name: uniqueName('lost') });
    gen.next();
    await client.close();
    const e = thrown(() => gen.next());
    expect(e).toBeInstanceOf(WorkerLeaseLostError);
    expect(e).toMatchObject({ code: 'DLOCK_WORKER_LEASE_LOST', workerId: gen.workerId });
    expect(gen.signal.aborted).toBe(true);
    expect(gen.signal.reason).toBe(e);
    await gen.close();
  });
});

describe('IdGenerator: marks stalled and lease lost on a paused Redis', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
  });

  /** Call next() every 10 ms until it throws (or `ms` pass); the error. */
  async function firstError(gen: IdGenerator, ms: number): Promise<unknown> {
    const until = Date.now() + ms;
    let last = -1n;
    while (Date.now() < until) {
      try {
        const id = gen.next();
        expect(id > last).toBe(true);
        last = id;
      } catch (e) {
        return e;
      }
      await delay(10);
    }
    return undefined;
  }

  it('stops at its ceiling while the engine does not answer, resumes after a mark lands, and stops for good once the lease expires', async () => {
    const gen = await IdGenerator.start({ url: redis.url, name: uniqueName('stall'), ttlMs: 1500 });
    // markAheadMs 750: once marks stop landing, ids stop within ~750 ms.
    const paused = Date.now();
    redis.pause();
    try {
      const e = await firstError(gen, 1200);
      expect(e).toBeInstanceOf(WorkerMarkStalledError);
      expect(e).toMatchObject({ code: 'DLOCK_WORKER_MARK_STALLED' });
      expect(Date.now() - paused).toBeGreaterThan(200);
      expect(gen.coveredUntilMs).toBeLessThanOrEqual(Date.now() + 50);
    } finally {
      redis.resume();
    }
    // The queued mark write lands: ids come again (the lease did not expire meanwhile).
    let resumed = false;
    for (let i = 0; i < 100 && !resumed; i++) {
      await delay(20);
      try {
        gen.next();
        resumed = true;
      } catch (e) {
        expect(e).toBeInstanceOf(WorkerMarkStalledError);
      }
    }
    expect(resumed).toBe(true);

    // Now past the lease TTL: lost for good, even after the engine is back.
    redis.pause();
    try {
      await delay(2000);
    } finally {
      redis.resume();
    }
    const e = thrown(() => gen.next());
    expect(e).toBeInstanceOf(WorkerLeaseLostError);
    await delay(300);
    expect(thrown(() => gen.next())).toBeInstanceOf(WorkerLeaseLostError);
    await gen.close();
  });
});

describe('IdGenerator: contract', () => {
  it('needs a driver with marks (UnsupportedDriverError otherwise)', async () => {
    const real = new MemoryDriver();
    // A real driver that simply does not offer the optional mark methods.
    const noMarks: LockDriver = {
      kind: 'try-set',
      info: real.info,
      tryAcquire: (r) => real.tryAcquire(r),
      watch: (k) => real.watch(k),
      extend: (i) => real.extend(i),
      release: (k, o) => real.release(k, o),
      inspect: (k) => real.inspect(k),
      list: (prefix, page) => real.list(prefix, page),
      forceRelease: (k) => real.forceRelease(k),
      close: () => real.close(),
    };
    const client = new LockClient(noMarks);
    const e = await rejection(IdGenerator.start({ client, name: 'x' }));
    expect(e).toBeInstanceOf(UnsupportedDriverError);
    expect(e).toMatchObject({ code: 'DLOCK_UNSUPPORTED_DRIVER', capability: 'readMark/raiseMark' });
    await client.close();
  });

  it('validates its options', async () => {
    const client = new LockClient(new MemoryDriver());
    const bad = async (o: object, type: unknown): Promise<void> => {
      expect(await rejection(IdGenerator.start({ client, name: 'v', ...o }))).toBeInstanceOf(type);
    };
    await bad({ client: undefined }, InvalidArgumentError);
    await bad({ url: 'memory:' }, InvalidArgumentError);
    await bad({ name: '' }, InvalidArgumentError);
    await bad({ slot: 1024 }, OutOfRangeError);
    await bad({ ttlMs: 10 }, OutOfRangeError);
    await bad({ ttlMs: 1000, markAheadMs: 1000 }, OutOfRangeError);
    await bad({ markAheadMs: 1000, maxBorrowMs: 600 }, OutOfRangeError);
    await bad({ layout: { workerBits: 40 } }, OutOfRangeError);
    expect(client.heldCount).toBe(0);
    await client.close();
  });

  it('opens and closes its own client from a url, and supports `await using`', async () => {
    const url = `sqlite:${join(tmp.dir, 'own.db')}`;
    let key: string;
    {
      await using gen = await IdGenerator.start({ url, name: 'own' });
      key = gen.workerKey;
      gen.next();
    }
    const c = await connect(url);
    expect(await c.inspect(key)).toBeNull();
    await c.close();
  });

  it('leaves no timers or handles after close(): the process exits by itself', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join('test', 'ids', 'close-check.ts'), `sqlite:${join(tmp.dir, 'close.db')}`], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 20_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(code, out).toBe(0);
    const report = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { ids: number; afterTick: string[] };
    expect(report.ids).toBe(1000);
    expect(report.afterTick.filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap')).toEqual([]);
  });
});
