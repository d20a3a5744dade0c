/**
 * Wall-clock steps under libfaketime, in forked Node workers: each worker runs a dlock generator
 * and, interleaved in the same process (same clocks), a naive Date.now()-based generator as the
 * control. The test rewrites libfaketime's timestamp file mid-run to step the clock back.
 *
 * - realistic step: only the wall clock moves (FAKETIME_DONT_FAKE_MONOTONIC=1), as with NTP or
 *   `date -s`. The dlock generator (leased worker id on SQLite) ignores it: 0 duplicates, 0 order
 *   violations, no errors, ids keep coming. The control repeats ids: proof that the step happened.
 * - harsh step: CLOCK_MONOTONIC is stepped too (a broken clock). A plain Snowflake (no engine: a
 *   faked monotonic clock would also corrupt the SQLite driver's TTLs) absorbs small steps by
 *   borrowing, and beyond maxBorrowMs applies its policy: it waits, then throws
 *   DLOCK_CLOCK_BACKWARDS, and resumes once the clock is back. Never a duplicate.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdWorkerSpec } from './id-protocol.js';
import { disposeIdWorker, delay, duplicates, fakeTime, forkIdWorker, killIdWorkers, orderViolations, prepareIdWorker, readIds, tempDir, type FakeTime, type IdWorker } from './harness.js';

/** One phase of a run: libfaketime's offset (seconds) and how long it lasts. */
interface Phase {
  /** Relative offset in libfaketime's format; a function gets the ms since the run started. */
  readonly offset: string | ((sinceStartMs: number) => string);
  readonly ms: number;
  /**
   * Then go on only once the generator issued this many ids in the phase (up to 15 s more): on a
   * loaded machine a worker can be starved through a whole short phase (CI on 44d6b7f beside two
   * hogs: the -10 s run's generator issued nothing in its 300 ms at the true time, so the step
   * back landed within maxBorrowMs of its last id and was borrowed, not refused).
   */
  readonly untilIds?: number;
}

/**
 * The phases of a backwards step of `label`. A small step lands in the ms the generators used just
 * before (-1 ms: twenty such steps, 25 ms apart). A -10 s step only meets used times if the generators ran 10 s earlier: the run starts
 * with the clock 10 s behind (history), NTP steps it forward, and then it steps back by 10 s plus
 * the time the run took, landing exactly on the history's first ms.
 */
function stepPhases(label: string, offset: string): { phases: Phase[]; stepIndex: number } {
  if (label === '-10 s') {
    return {
      phases: [
        { offset: '-10', ms: 300 },
        { offset: '+0', ms: 300, untilIds: 200 },
        { offset: (since) => `-${((10_000 + since) / 1000).toFixed(3)}`, ms: 500 },
        { offset: '+0', ms: 250 },
      ],
      stepIndex: 2,
    };
  }
  if (label === '-1 ms') {
    // One 1 ms step is often absorbed (the next clock read falls in the next ms anyway): take twenty.
    const stairs = Array.from({ length: 20 }, (_, k): Phase => ({ offset: `-${((k + 1) / 1000).toFixed(3)}`, ms: 25 }));
    return { phases: [{ offset: '+0', ms: 300 }, ...stairs, { offset: '+0', ms: 250 }], stepIndex: 1 };
  }
  return {
    phases: [
      { offset: '+0', ms: 300 },
      { offset, ms: 500 },
      { offset: '+0', ms: 250 },
    ],
    stepIndex: 1,
  };
}

const steps = [
  { label: '-1 ms', offset: '-0.001' },
  { label: '-100 ms', offset: '-0.1' },
  { label: '-10 s', offset: '-10' },
] as const;

interface StepRun {
  ids: BigInt64Array;
  control: BigInt64Array;
  /** Ids the generator issued from the backwards step on. */
  afterStep: number;
  errors: Readonly<Record<string, number>>;
  firstErrors: Readonly<Record<string, string>>;
}

let tmp: { dir: string; cleanup: () => void };
let n = 0;

beforeAll(async () => {
  tmp = tempDir('dlock-ids-steps-');
  await prepareIdWorker();
});
afterAll(() => {
  tmp.cleanup();
  disposeIdWorker();
});

const offsetAt = (p: Phase, since: number): string => (typeof p.offset === 'string' ? p.offset : p.offset(since));

/** Run one worker through `phases` (the first offset is set before it starts), then stop it. */
async function runPhases(ft: FakeTime, harsh: boolean, spec: Partial<IdWorkerSpec>, phases: readonly Phase[], stepIndex: number): Promise<StepRun> {
  n += 1;
  const out = join(tmp.dir, `ids-${n}.bin`);
  const controlOut = join(tmp.dir, `control-${n}.bin`);
  ft.set(offsetAt(phases[0]!, 0));
  const w: IdWorker = forkIdWorker(
    // Small chunks: the generator and the control take turns often, so both use every ms.
    { kind: 'generator', url: `sqlite:${join(tmp.dir, 'ids.db')}`, name: `steps-${n}`, out, controlOut, chunk: 20, ...spec },
    ft.env(harsh),
  );
  try {
    await w.next('ready', 30_000);
    w.send({ type: 'go' });
    await w.next('started', 30_000);
    const t0 = performance.now();
    let atStep = 0;
    const issued = (): number => (existsSync(out) ? statSync(out).size / 8 : 0);
    for (const [i, p] of phases.entries()) {
      if (i > 0) ft.set(offsetAt(p, performance.now() - t0));
      if (i === stepIndex) atStep = issued();
      const before = issued();
      await delay(p.ms);
      if (p.untilIds !== undefined) {
        const giveUpAt = performance.now() + 15_000;
        while (issued() - before < p.untilIds && performance.now() < giveUpAt) await delay(10);
        expect(issued() - before, `ids issued in phase ${i} (offset ${offsetAt(p, 0)})`).toBeGreaterThanOrEqual(p.untilIds);
      }
    }
    w.send({ type: 'stop' });
    const done = await w.next('done', 30_000);
    const ids = readIds(out);
    return { ids, control: readIds(controlOut), afterStep: ids.length - atStep, errors: done.errors, firstErrors: done.firstErrors };
  } finally {
    ft.set('+0');
    await killIdWorkers([w]);
  }
}

describe('wall-clock steps (libfaketime)', () => {
  let ft: FakeTime;
  beforeAll(async () => {
    ft = await fakeTime(tmp.dir);
  }, 120_000);

  for (const step of steps) {
    it(`realistic ${step.label} (wall clock only): leased generator 0 duplicates, 0 order violations, no errors; the naive control repeats ids`, async () => {
      const { phases, stepIndex } = stepPhases(step.label, step.offset);
      const r = await runPhases(ft, false, {}, phases, stepIndex);
      expect(r.ids.length).toBeGreaterThan(1000);
      expect(r.afterStep, 'ids issued after the step').toBeGreaterThan(100);
      expect(duplicates(r.ids)).toBe(0);
      expect(orderViolations(r.ids)).toBe(0);
      expect(r.errors).toEqual({});
      // The control saw the same clocks: it must have repeated ids, or the step never happened.
      expect(duplicates(r.control), 'duplicates of the naive control').toBeGreaterThan(0);
    });
  }

  for (const step of steps) {
    it(`harsh ${step.label} (monotonic clock stepped too): Snowflake borrows, then waits/throws; 0 duplicates, 0 order violations`, async () => {
      const { phases, stepIndex } = stepPhases(step.label, step.offset);
      const r = await runPhases(ft, true, { kind: 'snowflake', workerId: 7 }, phases, stepIndex);
      expect(duplicates(r.ids)).toBe(0);
      expect(orderViolations(r.ids)).toBe(0);
      expect(duplicates(r.control), 'duplicates of the naive control').toBeGreaterThan(0);
      const codes = Object.keys(r.errors);
      if (step.label === '-10 s') {
        // Beyond maxBorrowMs (1 s): the 'wait' policy waited maxWaitMs, then refused: typed errors, no ids.
        expect(codes).toEqual(['DLOCK_CLOCK_BACKWARDS']);
        expect(r.firstErrors.DLOCK_CLOCK_BACKWARDS).toMatch(/ahead of the clock/);
      } else {
        // Within maxBorrowMs: absorbed, no error.
        expect(codes).toEqual([]);
      }
      // Issuance continued after the step (borrowed) or resumed once the clock was back.
      expect(r.afterStep, 'ids issued after the step').toBeGreaterThan(100);
    });
  }

  it("harsh -1 s with onClockBehind 'throw' and no borrowing: throws at once, resumes when the clock catches up", async () => {
    // A 1 s step (not 100 ms): the generator throws only until the clock catches up, and a worker
    // starved of CPU for that long by a loaded machine would not issue during a shorter one.
    const phases: Phase[] = [
      { offset: '+0', ms: 300 },
      { offset: '-1', ms: 1600 },
      { offset: '+0', ms: 250 },
    ];
    const r = await runPhases(ft, true, { kind: 'snowflake', workerId: 8, onClockBehind: 'throw', maxBorrowMs: 0 }, phases, 1);
    expect(duplicates(r.ids)).toBe(0);
    expect(orderViolations(r.ids)).toBe(0);
    expect(Object.keys(r.errors)).toEqual(['DLOCK_CLOCK_BACKWARDS']);
    expect(r.afterStep, 'ids issued after the step').toBeGreaterThan(100);
  });
});
