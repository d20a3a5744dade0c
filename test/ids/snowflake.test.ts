import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ClockBackwardsError, IdsExhaustedError, InvalidArgumentError, OutOfRangeError } from '../../src/errors.js';
import { ManualClock, type IdClock } from '../../src/ids/clock.js';
import { DEFAULT_EPOCH_MS, IdLayout } from '../../src/ids/layout.js';
import { Snowflake, type IdWarning } from '../../src/ids/snowflake.js';

const T0 = DEFAULT_EPOCH_MS + 1_000_000;

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

describe('Snowflake', () => {
  it('composes time, worker and sequence, strictly increasing', () => {
    const clock = new ManualClock(T0);
    const s = new Snowflake({ workerId: 5, clock });
    const a = s.next();
    const b = s.next();
    expect(b).toBe(a + 1n);
    expect(s.decode(a)).toMatchObject({ worker: 5, sequence: 0, timestampMs: T0 });
    clock.advance(3);
    const c = s.next();
    expect(s.decode(c)).toMatchObject({ worker: 5, sequence: 0, timestampMs: T0 + 3 });
    expect(s.lastTimeMs).toBe(T0 + 3);
    expect(s.nextString()).toBe((c + 1n).toString());
  });

  it('on sequence overflow borrows the next ms (never wraps), up to maxBorrowMs, then throws with policy throw', () => {
    const clock = new ManualClock(T0);
    const s = new Snowflake({ workerId: 1, clock, maxBorrowMs: 2, onClockBehind: 'throw' });
    const ids = s.nextBatch(4096 * 3);
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBe(ids[i - 1]! + 1n + (i % 4096 === 0 ? (1n << 22n) - 4096n : 0n));
    expect(s.decode(ids[4095]!)).toMatchObject({ timestampMs: T0, sequence: 4095 });
    expect(s.decode(ids[4096]!)).toMatchObject({ timestampMs: T0 + 1, sequence: 0 });
    expect(s.decode(ids[ids.length - 1]!)).toMatchObject({ timestampMs: T0 + 2, sequence: 4095 });
    const e = caught(() => s.next());
    expect(e).toBeInstanceOf(ClockBackwardsError);
    expect(e).toMatchObject({ code: 'DLOCK_CLOCK_BACKWARDS', source: 'clock', behindMs: 3, waitedMs: 0 });
    // Nothing was consumed: when the clock moves, ids continue right after the last one.
    clock.advance(1);
    expect(s.decode(s.next())).toMatchObject({ timestampMs: T0 + 3, sequence: 0 });
  });

  it("with policy 'wait' blocks up to maxWaitMs for the clock, then throws; succeeds if the clock catches up", () => {
    const frozen = new ManualClock(T0);
    const s = new Snowflake({ workerId: 1, clock: frozen, maxBorrowMs: 0, maxWaitMs: 30 });
    s.nextBatch(4096);
    const started = performance.now();
    const e = caught(() => s.next());
    const waited = performance.now() - started;
    expect(e).toBeInstanceOf(ClockBackwardsError);
    expect(waited).toBeGreaterThanOrEqual(29);
    expect(waited).toBeLessThan(1000);
    expect((e as ClockBackwardsError).waitedMs).toBeGreaterThanOrEqual(29);

    // A clock that moves 1 ms every 50 reads: waiting gets the next ms.
    let reads = 0;
    const moving: IdClock = { now: () => T0 + Math.floor(reads++ / 50) };
    const w = new Snowflake({ workerId: 1, clock: moving, maxBorrowMs: 0, maxWaitMs: 1000 });
    const ids = w.nextBatch(4096 * 3);
    expect(w.decode(ids[ids.length - 1]!).sequence).toBe(4095);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });

  it('keeps issuing after the clock goes back: same ms with sequence + 1, then borrowed ms', () => {
    const clock = new ManualClock(T0 + 100);
    const s = new Snowflake({ workerId: 2, clock });
    const a = s.next();
    clock.advance(-100);
    const b = s.next();
    expect(b).toBe(a + 1n);
    expect(s.decode(b).timestampMs).toBe(T0 + 100);
    clock.advance(150);
    expect(s.decode(s.next())).toMatchObject({ timestampMs: T0 + 150, sequence: 0 });
  });

  it('never issues at or below floorMs', () => {
    const clock = new ManualClock(T0);
    const s = new Snowflake({ workerId: 3, clock, floorMs: T0 + 10 });
    // The floor's own ms is excluded: the first id is in the next one (borrowed, 11 ms ahead).
    expect(s.decode(s.next())).toMatchObject({ timestampMs: T0 + 11, sequence: 0 });
    const far = new Snowflake({ workerId: 3, clock, floorMs: T0 + 5000, onClockBehind: 'throw' });
    expect(caught(() => far.next())).toBeInstanceOf(ClockBackwardsError);
  });

  it('calls the guard once per new time unit, before issuing; a throwing guard issues nothing', () => {
    const clock = new ManualClock(T0);
    let calls = 0;
    let refuse = false;
    const s = new Snowflake({
      workerId: 4,
      clock,
      guard: () => {
        calls += 1;
        if (refuse) throw new Error('lease lost');
      },
    });
    const a = s.next();
    s.next();
    s.next();
    expect(calls).toBe(1);
    clock.advance(1);
    refuse = true;
    expect(() => s.next()).toThrow('lease lost');
    expect(calls).toBe(2);
    refuse = false;
    const b = s.next();
    expect(s.decode(b)).toMatchObject({ timestampMs: T0 + 1, sequence: 0 });
    expect(b > a).toBe(true);
  });

  it('warns once, through onWarning and logger.warn (never the console), when the time field nears its end', () => {
    // 20 bits of 1 s units from T0 - 1,000,000 s: the field ends ~48,576 s after T0.
    const layout = new IdLayout({ timeBits: 20, workerBits: 21, unitMs: 1000, epochMs: T0 - 1_000_000_000 });
    const clock = new ManualClock(T0);
    const warnings: IdWarning[] = [];
    const logged: string[] = [];
    const s = new Snowflake({
      workerId: 0,
      layout,
      clock,
      warnBeforeMs: 86_400_000,
      onWarning: (w) => warnings.push(w),
      logger: { warn: (m) => logged.push(m) },
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ code: 'DLOCK_IDS_TIME_RUNNING_OUT' });
    expect(warnings[0]!.remainingMs).toBeLessThan(86_400_000);
    expect(warnings[0]!.endsAt.getTime()).toBe(layout.endMs);
    expect(logged).toHaveLength(1);
    s.next();
    clock.advance(5000);
    s.next();
    expect(warnings).toHaveLength(1);

    // Crossing into the warning window while running also warns, once.
    const later: IdWarning[] = [];
    const c2 = new ManualClock(layout.endMs - 86_400_000 - 2000);
    const s2 = new Snowflake({ workerId: 0, layout, clock: c2, warnBeforeMs: 86_400_000, onWarning: (w) => later.push(w) });
    s2.next();
    expect(later).toHaveLength(0);
    c2.advance(3000);
    s2.next();
    c2.advance(3000);
    s2.next();
    expect(later).toHaveLength(1);
  });

  it('throws IdsExhaustedError once the time field has run out, and refuses an epoch in the future', () => {
    const layout = new IdLayout({ timeBits: 20, workerBits: 21, unitMs: 1000, epochMs: T0 - 1_000_000_000 });
    const clock = new ManualClock(layout.endMs - 1500);
    const s = new Snowflake({ workerId: 0, layout, clock, warnBeforeMs: 0 });
    s.next();
    clock.advance(2000);
    const e = caught(() => s.next());
    expect(e).toBeInstanceOf(IdsExhaustedError);
    expect((e as IdsExhaustedError).code).toBe('DLOCK_IDS_EXHAUSTED');
    expect(() => new Snowflake({ workerId: 0, layout, clock })).toThrow(IdsExhaustedError);
    const future = new IdLayout({ epochMs: Date.now() + 3_600_000 });
    expect(() => new Snowflake({ workerId: 0, layout: future })).toThrow(OutOfRangeError);
  });

  it('validates its options', () => {
    expect(() => new Snowflake({ workerId: 1024 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: -1 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 1.5 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 0, maxBorrowMs: -1 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 0, maxWaitMs: Number.NaN })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 0, floorMs: -5 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 0, warnBeforeMs: -5 })).toThrow(OutOfRangeError);
    expect(() => new Snowflake({ workerId: 0, onClockBehind: 'spin' as 'wait' })).toThrow(InvalidArgumentError);
    expect(() => new Snowflake({ workerId: 0, clock: {} as IdClock })).toThrow(InvalidArgumentError);
    expect(() => new Snowflake(null as unknown as { workerId: number })).toThrow(InvalidArgumentError);
    const s = new Snowflake({ workerId: 0 });
    expect(() => s.nextBatch(-1)).toThrow(OutOfRangeError);
    expect(() => s.nextBatch(1.5)).toThrow(OutOfRangeError);
    expect(s.nextBatch(0)).toEqual([]);
  });

  it('property: under any walk of the clock (steps back included), ids strictly increase and only the policy error is thrown', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('move' as const), ms: fc.integer({ min: -200, max: 5 }) }),
      fc.record({ kind: fc.constant('next' as const), n: fc.integer({ min: 1, max: 5000 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), fc.integer({ min: 0, max: 50 }), (steps, maxBorrowMs) => {
        const clock = new ManualClock(T0);
        const s = new Snowflake({ workerId: 9, clock, maxBorrowMs, onClockBehind: 'throw' });
        let last = -1n;
        let maxClock = clock.now();
        for (const st of steps) {
          if (st.kind === 'move') {
            clock.advance(st.ms);
            maxClock = Math.max(maxClock, clock.now());
            continue;
          }
          try {
            for (const id of s.nextBatch(st.n)) {
              if (!(id > last)) throw new Error(`${id} after ${last}`);
              if (((id >> 12n) & 1023n) !== 9n) throw new Error(`worker of ${id}`);
              // Borrowing is bounded: never beyond maxBorrowMs past the furthest the clock went.
              const ms = Number(id >> 22n) + DEFAULT_EPOCH_MS;
              if (ms > maxClock + maxBorrowMs) throw new Error(`${ms} is more than ${maxBorrowMs} ms past ${maxClock}`);
              last = id;
            }
          } catch (e) {
            expect(e).toBeInstanceOf(ClockBackwardsError);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});
