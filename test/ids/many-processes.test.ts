/**
 * 16 processes claim worker ids and generate at once, on the embedded SQLite engine and on Redis.
 * The layout has exactly 16 worker ids (workerBits 4), so every one is taken and the claims race
 * (each worker claims only after the common `go`); all then generate together until `stop`.
 * Every id is collected: 0 duplicates overall, strictly increasing per process, 16 distinct
 * worker ids.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { IdLayout } from '../../src/ids/layout.js';
import { disposeIdWorker, duplicates, forkIdWorker, killIdWorkers, orderViolations, prepareIdWorker, readIds, tempDir, type IdWorker } from './harness.js';

const PROCESSES = 16;
/** How long all 16 generate together once the last one has claimed its worker id. */
const TOGETHER_MS = 500;
const layout = { workerBits: 4 } as const;

let tmp: { dir: string; cleanup: () => void };
beforeAll(async () => {
  tmp = tempDir('dlock-ids-many-');
  await prepareIdWorker();
});
afterAll(() => {
  tmp.cleanup();
  disposeIdWorker();
});

async function runMany(url: string, name: string): Promise<void> {
  const outs = Array.from({ length: PROCESSES }, (_, i) => join(tmp.dir, `${name}-${i}.bin`));
  const workers: IdWorker[] = outs.map((out) =>
    forkIdWorker({ kind: 'generator', url, name, layout, ttlMs: 10_000, waitMs: 5000, out, chunk: 200, claimAfterGo: true, waitForRun: true }),
  );
  try {
    await Promise.all(workers.map((w) => w.next('ready', 60_000)));
    for (const w of workers) w.send({ type: 'go' });
    await Promise.all(workers.map((w) => w.next('started', 60_000)));
    for (const w of workers) w.send({ type: 'run' });
    await new Promise((resolve) => setTimeout(resolve, TOGETHER_MS));
    for (const w of workers) w.send({ type: 'stop' });
    const done = await Promise.all(workers.map((w) => w.next('done', 60_000)));
    for (const d of done) expect(d.errors).toEqual({});
    const lists = outs.map(readIds);
    for (const ids of lists) {
      // Each process really generated during the shared window (hundreds of ids even on a
      // machine loaded by a second test run; thousands when it is not).
      expect(ids.length).toBeGreaterThan(100);
      expect(orderViolations(ids)).toBe(0);
    }
    expect(duplicates(...lists)).toBe(0);
    // Each process used one worker id, and all 16 were in use.
    const l = new IdLayout(layout);
    const seen = lists.map((ids) => new Set(Array.from(ids.subarray(0, 100), (id) => l.decode(id).worker)));
    for (const s of seen) expect(s.size).toBe(1);
    expect(new Set(seen.map((s) => [...s][0])).size).toBe(PROCESSES);
    expect(new Set(done.map((d) => d.workerId)).size).toBe(PROCESSES);
  } finally {
    await killIdWorkers(workers);
  }
}

describe(`${PROCESSES} processes generating at once`, () => {
  it('on SQLite (embedded default): 0 duplicates, strictly increasing per process, 16 worker ids', async () => {
    await runMany(`sqlite:${join(tmp.dir, 'ids.db')}`, 'many-sqlite');
  });

  it('on Redis: 0 duplicates, strictly increasing per process, 16 worker ids', async () => {
    await runMany(inject('redisUrl'), `many-redis-${process.pid}-${Date.now()}`);
  });
});
