/**
 * `semaphore` and `rwlock` (issue 11), peers in the same run on the same private redis-server:
 * - semaphore: 4 permits, `processes` (default 16) forked processes, each looping acquire ->
 *   1 ms section -> release on one key: dlock's Semaphore (one key, k-permit admission) against
 *   redis-semaphore's Semaphore (10 ms polling); over-admission counted inside the section (an
 *   INCR/DECR counter), and the commands per second an idle waiter costs (4 permits held).
 * - rwlock: 8 processes, 90% reads, 1 ms sections: read cycles/s of dlock's ReadWriteLock against
 *   the same mix on dlock's exclusive mutex (every cycle alone).
 */
import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Semaphore as PeerSemaphore } from 'redis-semaphore';
import type { AdmissionDone, AdmissionJob } from './admission-worker.js';
import type { DlockSource } from './libs.js';
import { fmt, fmtSpread, rotate, spread, table, workerExecArgv } from './support.js';

export interface AdmissionBenchOptions {
  readonly scenario: 'semaphore' | 'rwlock';
  readonly url: string;
  /** Where dlock takes its locks when not on `url`'s Redis (`--engine`); no idle-waiter count then. */
  readonly lockUrl?: string | undefined;
  readonly reps: number;
  readonly seconds: number;
  readonly processes: number | undefined;
  readonly dlock: DlockSource;
  /** One JSON object per row and one for the targets, instead of the table. */
  readonly json?: boolean;
  readonly log: (s: string) => void;
}

type Lib = AdmissionJob['lib'];

const NAMES: Record<Lib, string> = {
  'dlock-semaphore': 'dlock Semaphore',
  'redis-semaphore': 'redis-semaphore Semaphore',
  'dlock-rwlock': 'dlock ReadWriteLock',
  'dlock-mutex': 'dlock mutex (same mix)',
  'floor-rwlock': 'floor: ReadWriteLock, locking free',
  'floor-mutex': 'floor: mutex, locking free',
};

function runWorkers(job: Omit<AdmissionJob, 'key'>, processes: number, key: string): Promise<AdmissionDone[]> {
  const file = fileURLToPath(new URL('./admission-worker.ts', import.meta.url));
  const execArgv = workerExecArgv();
  return Promise.all(
    Array.from(
      { length: processes },
      () =>
        new Promise<AdmissionDone>((resolve, reject) => {
          const child = fork(file, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
          child.once('message', (m: ({ ok: true } & AdmissionDone) | { ok: false; error: string }) => (m.ok ? resolve(m) : reject(new Error(m.error))));
          child.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited ${code}`))));
          child.send({ ...job, key });
        }),
    ),
  );
}

/** Every command the server ran (Lua-internal calls included), from INFO commandstats on `probe`. */
async function calls(probe: Redis): Promise<number> {
  let n = 0;
  for (const m of (await probe.info('commandstats')).matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

/** Commands/s the server sees while one waiter waits on a full 4-permit semaphore (2 s window). */
async function idleWaiter(lib: Lib, url: string, dlock: DlockSource, key: string): Promise<number> {
  const probe = new Redis(url);
  try {
    await probe.ping();
    return await idleWaiterOn(probe, lib, url, dlock, key);
  } finally {
    probe.disconnect();
  }
}

async function idleWaiterOn(probe: Redis, lib: Lib, url: string, dlock: DlockSource, key: string): Promise<number> {
  const windowMs = 2000;
  if (lib === 'redis-semaphore') {
    const redis = new Redis(url);
    const holders = Array.from({ length: 4 }, () => new PeerSemaphore(redis, key, 4, { lockTimeout: 30_000, acquireTimeout: 30_000 }));
    for (const h of holders) await h.acquire();
    const waiter = new PeerSemaphore(redis, key, 4, { lockTimeout: 30_000, acquireTimeout: 30_000 });
    const waiting = waiter.acquire();
    await sleep(300);
    const before = await calls(probe);
    await sleep(windowMs);
    const during = (await calls(probe)) - before - 1; // minus the first INFO itself
    for (const h of holders) await h.release();
    await waiting;
    await waiter.release();
    redis.disconnect();
    return during / (windowMs / 1000);
  }
  const dl = (await (dlock === 'src' ? import('../src/index.js') : import(new URL('../dist/esm/index.js', import.meta.url).href))) as typeof import('../src/index.js');
  const [a, b] = [await dl.connect(url, { ttlMs: 30_000 }), await dl.connect(url, { ttlMs: 30_000 })];
  const held = await new dl.Semaphore(a, key, { permits: 4 }).acquire({ permits: 4 });
  const waiting = new dl.Semaphore(b, key, { permits: 4 }).acquire({ waitMs: 30_000 });
  await sleep(300);
  const before = await calls(probe);
  await sleep(windowMs);
  const during = (await calls(probe)) - before - 1; // minus the first INFO itself
  await held.release();
  await (await waiting).release();
  await Promise.all([a.close(), b.close()]);
  return during / (windowMs / 1000);
}

function verdict(ok: boolean): string {
  return ok ? 'MET' : 'MISSED';
}

export async function runAdmissionBench(o: AdmissionBenchOptions): Promise<void> {
  const semaphore = o.scenario === 'semaphore';
  // rwlock's floor rows: the same mix and sections (their Redis calls included), every loop in one
  // process on dlock's in-process engine, where a lock operation costs no round trip and no
  // wake-up of another process. Their ratio is what the mix itself allows a read-write lock over
  // a mutex (writers wait for readers to drain, readers for the writer), whatever the engine.
  const libs: Lib[] = semaphore ? ['dlock-semaphore', 'redis-semaphore'] : ['dlock-rwlock', 'dlock-mutex', 'floor-rwlock', 'floor-mutex'];
  const processes = o.processes ?? (semaphore ? 16 : 8);
  const per = new Map<Lib, { rate: number[]; maxWait: number[]; over: number; idle: number[]; cpu: number[]; switches: number[] }>(libs.map((l) => [l, { rate: [], maxWait: [], over: 0, idle: [], cpu: [], switches: [] }]));
  for (let rep = 0; rep < o.reps; rep++) {
    for (const lib of rotate(libs, rep)) {
      const key = `bench:${o.scenario}:${lib}:${rep}`;
      const t = Date.now();
      const floor = lib.startsWith('floor');
      const job = { lib, url: o.url, lockUrl: o.lockUrl, permits: 4, readPct: 90, holdMs: 1, seconds: o.seconds, dlock: o.dlock, loops: floor ? processes : 1 };
      const done = await runWorkers(job, floor ? 1 : processes, key);
      const reads = done.reduce((s, d) => s + d.reads, 0);
      const r = per.get(lib)!;
      r.rate.push(reads / o.seconds);
      r.maxWait.push(Math.max(...done.map((d) => d.maxWaitMs)));
      r.over += done.reduce((s, d) => s + d.overAdmitted, 0);
      // The client processes' own CPU per cycle (user + system, their loops only): on this 2-core
      // host the clients and the server share the cores: tells a gap in client work from one elsewhere.
      const cycles = Math.max(1, done.reduce((s, d) => s + d.reads + d.writes, 0));
      r.cpu.push(done.reduce((s, d) => s + d.cpuUs, 0) / cycles);
      r.switches.push(done.reduce((s, d) => s + d.switches, 0) / cycles);
      if (semaphore && (o.lockUrl === undefined || lib === 'redis-semaphore')) r.idle.push(await idleWaiter(lib, o.url, o.dlock, `${key}:idle`));
      o.log(`  [${o.scenario} ${rep + 1}/${o.reps}] ${NAMES[lib].padEnd(28)} ${fmt(reads / o.seconds)} ${semaphore ? 'cycles' : 'reads'}/s  max wait ${fmt(r.maxWait.at(-1)!)} ms${semaphore && r.idle.length > 0 ? `  idle waiter ${fmt(r.idle.at(-1)!)} cmd/s` : ''}  (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    }
  }
  const base = per.get(libs[1]!)!;
  const ratios = per.get(libs[0]!)!.rate.map((x, i) => x / base.rate[i]!);
  const floorRatios = semaphore ? [] : per.get('floor-rwlock')!.rate.map((x, i) => x / per.get('floor-mutex')!.rate[i]!);
  const floorMid = floorRatios.length > 0 ? spread(floorRatios).median : undefined;
  if (o.json) {
    for (const l of libs) {
      const r = per.get(l)!;
      console.log(
        JSON.stringify({
          scenario: o.scenario,
          library: NAMES[l],
          processes: l.startsWith('floor') ? 1 : processes,
          loops: l.startsWith('floor') ? processes : 1,
          ratePerSecond: r.rate,
          maxWaitMs: r.maxWait,
          clientCpuUsPerCycle: r.cpu,
          contextSwitchesPerCycle: r.switches,
          overAdmitted: r.over,
          ...(semaphore ? { idleWaiterCommandsPerSecond: r.idle } : {}),
        }),
      );
    }
  }
  if (!o.json) {
    console.log(`\n## ${o.scenario}${o.lockUrl ? ` (dlock on ${o.lockUrl.replace(/\/\/[^@]*@/, '//')})` : ''}: ${processes} processes, ${semaphore ? '4 permits' : '90% reads'}, 1 ms sections, ${o.seconds} s per library per rep`);
    console.log(
    table(
      ['library', semaphore ? 'cycles/s' : 'read cycles/s', `× ${NAMES[libs[1]!]}`, 'max wait ms', 'over-admitted', 'client CPU µs/cycle', ...(semaphore ? ['idle waiter cmd/s'] : [])],
      libs.map((l, i) => {
        const r = per.get(l)!;
        const ratio = i === 0 ? fmtSpread(spread(ratios), '×') : i === 1 ? '1×' : l === 'floor-rwlock' ? `${fmtSpread(spread(floorRatios), '×')} (of its floor mutex)` : '1× (floor)';
        return [NAMES[l], fmtSpread(spread(r.rate)), ratio, fmtSpread(spread(r.maxWait)), String(r.over), fmtSpread(spread(r.cpu)), ...(semaphore ? [r.idle.length > 0 ? fmtSpread(spread(r.idle)) : 'not counted (not Redis)'] : [])];
      }),
    ),
  );
  }
  const mid = spread(ratios).median;
  const dl = per.get(libs[0]!)!;
  if (semaphore) {
    const idle = dl.idle.length > 0 ? spread(dl.idle).median : undefined;
    const idleText = idle === undefined ? 'idle waiter not counted (dlock not on Redis)' : `idle waiter 0 commands/s: ${fmt(idle)}, ${verdict(idle === 0)}`;
    const line = `target: dlock >= 1.0× redis-semaphore: ${fmt(mid)}×, ${verdict(mid >= 1)}; never over-admitted: ${dl.over}, ${verdict(dl.over === 0)}; ${idleText}`;
    console.log(o.json ? JSON.stringify({ scenario: o.scenario, targets: line, ratio: ratios, met: mid >= 1 && dl.over === 0 && idle === 0 }) : line);
  } else {
    const line =
      `target: read cycles/s >= 4× the exclusive mutex's: ${fmt(mid)}×, ${verdict(mid >= 4)}; writer never beside anyone: ${dl.over} overlaps, ${verdict(dl.over === 0)}\n` +
      `floor: the same mix with locking free (${processes} loops in one process, memory:) gives ${fmt(floorMid!)}× its mutex; dlock on this engine reaches ${fmt(mid / floorMid!)} of that ratio`;
    console.log(o.json ? JSON.stringify({ scenario: o.scenario, targets: line, ratio: ratios, floorRatio: floorRatios, met: mid >= 4 && dl.over === 0 }) : line);
  }
}
