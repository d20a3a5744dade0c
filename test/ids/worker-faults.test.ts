/**
 * Recycled worker ids under process faults, in forked workers on the embedded SQLite engine. Each
 * scenario runs twice: with IdGenerator (leased worker id + high-water marks), which must issue 0
 * duplicates, and with plain Snowflakes sharing the worker id (what you get when something else
 * hands the id to the next process), which must duplicate: proof the scenario can catch it.
 *
 * - kill -9, then an immediate restart that reuses the worker id, with the clock stepped back 2 s
 *   while the process was down (libfaketime, wall clock only; more than the 1 s lease TTL the
 *   restart waits out, so the lease alone would not save it): the restart waits for the slot,
 *   reads the mark the dead holder wrote ahead of its time, and issues only above it.
 * - a generator paused (SIGSTOP) past its lease TTL while a new one takes its worker id, then
 *   resumed (SIGCONT): it must not issue one more id; the new holder's ids are all above the old.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdLayout } from '../../src/ids/layout.js';
import type { IdWorkerSpec } from './id-protocol.js';
import { disposeIdWorker, delay, duplicates, fakeTime, forkIdWorker, killIdWorkers, minMax, orderViolations, prepareIdWorker, readIds, tempDir, type FakeTime, type IdWorker } from './harness.js';

let tmp: { dir: string; cleanup: () => void };
let ft: FakeTime;
let n = 0;

beforeAll(async () => {
  tmp = tempDir('dlock-ids-faults-');
  await prepareIdWorker();
  ft = await fakeTime(tmp.dir);
  ft.set('-2');
}, 120_000);
afterAll(() => {
  tmp.cleanup();
  disposeIdWorker();
});

type Mode = 'leased' | 'control';

function specFor(mode: Mode, name: string, out: string, extra: Partial<IdWorkerSpec> = {}): IdWorkerSpec {
  return mode === 'leased'
    ? { kind: 'generator', url: `sqlite:${join(tmp.dir, 'ids.db')}`, name, slot: 3, ttlMs: 1000, waitMs: 5000, out, chunk: 100, intervalMs: 1, ...extra }
    : { kind: 'snowflake', workerId: 3, out, chunk: 100, intervalMs: 1, ...extra };
}

/** Fork a worker and start it generating. */
async function startWorker(spec: IdWorkerSpec, env?: Record<string, string>): Promise<IdWorker> {
  const w = forkIdWorker(spec, env);
  try {
    await w.next('ready', 30_000);
    w.send({ type: 'go' });
    await w.next('started', 30_000);
    return w;
  } catch (e) {
    await killIdWorkers([w]);
    throw e;
  }
}

async function killThenRestart(mode: Mode): Promise<{ a: BigInt64Array; b: BigInt64Array }> {
  n += 1;
  const name = `restart-${n}`;
  const outA = join(tmp.dir, `restart-a-${n}.bin`);
  const outB = join(tmp.dir, `restart-b-${n}.bin`);
  const a = await startWorker(specFor(mode, name, outA));
  let b: IdWorker | undefined;
  try {
    await delay(1500);
    await killIdWorkers([a]);
    // Restarted at once, on a clock 2 s behind; the leased one waits for the slot and its mark.
    b = await startWorker(specFor(mode, name, outB), ft.env(false));
    await delay(700);
    b.send({ type: 'stop' });
    const done = await b.next('done', 30_000);
    expect(done.errors).toEqual({});
    return { a: readIds(outA), b: readIds(outB) };
  } finally {
    await killIdWorkers(b ? [a, b] : [a]);
  }
}

async function pausePastLease(mode: Mode): Promise<{ a: BigInt64Array; b: BigInt64Array; aAfterResume: number; aErrors: Readonly<Record<string, number>> }> {
  n += 1;
  const name = `pause-${n}`;
  const outA = join(tmp.dir, `pause-a-${n}.bin`);
  const outB = join(tmp.dir, `pause-b-${n}.bin`);
  const a = await startWorker(specFor(mode, name, outA));
  let b: IdWorker | undefined;
  try {
    await delay(500);
    process.kill(a.pid, 'SIGSTOP');
    // The leased B waits for A's lease to expire (TTL 1 s); the control B just starts.
    const bStarting = startWorker(specFor(mode, name, outB));
    // Resume A once B runs, or after 3 s (three TTLs) at most: a process stopped inside an SQLite
    // write transaction keeps the database file locked until it runs again, and B would wait in vain.
    const bRuns = await Promise.race([bStarting.then(() => true, () => true), delay(3000).then(() => false)]);
    if (bRuns) await delay(300);
    // A wall-clock instant between A's pause and its resume: ids of A stamped at or after it were
    // issued after the resume (the file size would not tell: a chunk issued before the pause may
    // only be written after it).
    const resumedAt = Date.now();
    process.kill(a.pid, 'SIGCONT');
    b = await bStarting.catch(async (e: unknown) => {
      await killIdWorkers([a]);
      throw e;
    });
    await delay(700);
    a.send({ type: 'stop' });
    b.send({ type: 'stop' });
    const [doneA] = await Promise.all([a.next('done', 30_000), b.next('done', 30_000)]);
    const ids = readIds(outA);
    const stampedAfter = IdLayout.DEFAULT.firstIdAt(resumedAt);
    let aAfterResume = 0;
    for (const id of ids) if (id >= stampedAfter) aAfterResume++;
    return { a: ids, b: readIds(outB), aAfterResume, aErrors: doneA.errors };
  } finally {
    await killIdWorkers(b ? [a, b] : [a]);
  }
}

describe('recycled worker ids under faults', () => {
  it('kill -9 + immediate restart on the same worker id, clock 2 s behind: 0 duplicates, the restart issues above every earlier id', async () => {
    const { a, b } = await killThenRestart('leased');
    expect(a.length).toBeGreaterThan(1000);
    expect(b.length).toBeGreaterThan(1000);
    expect(orderViolations(a)).toBe(0);
    expect(orderViolations(b)).toBe(0);
    expect(duplicates(a, b)).toBe(0);
    // Same worker id: strictly increasing across both lifetimes (the mark was the floor).
    expect(minMax(b).min).toBeGreaterThan(minMax(a).max);
  });

  it('control: the same restart without leases and marks repeats ids', async () => {
    const { a, b } = await killThenRestart('control');
    expect(a.length).toBeGreaterThan(1000);
    expect(b.length).toBeGreaterThan(1000);
    expect(duplicates(a, b)).toBeGreaterThan(0);
  });

  it('paused past its lease: not one id after resuming (lease-lost error instead); 0 duplicates with the new holder', async () => {
    const r = await pausePastLease('leased');
    expect(r.a.length).toBeGreaterThan(100);
    expect(r.b.length).toBeGreaterThan(1000);
    expect(r.aAfterResume).toBe(0);
    expect(Object.keys(r.aErrors)).toEqual(['DLOCK_WORKER_LEASE_LOST']);
    expect(duplicates(r.a, r.b)).toBe(0);
    expect(orderViolations(r.a)).toBe(0);
    expect(orderViolations(r.b)).toBe(0);
    expect(minMax(r.b).min).toBeGreaterThan(minMax(r.a).max);
  });

  it('control: the paused generator resumes on a worker id someone else now uses, and repeats ids', async () => {
    const r = await pausePastLease('control');
    expect(r.aAfterResume).toBeGreaterThan(0);
    expect(duplicates(r.a, r.b)).toBeGreaterThan(0);
  });
});
