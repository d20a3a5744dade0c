import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, OutOfRangeError } from '../../src/errors.js';
import { DEFAULT_EPOCH_MS, IdLayout, MAX_ID, parseId, type LayoutOptions } from '../../src/ids/layout.js';

/** Every valid bit split (each field within its limits), with a unit that keeps dates valid. */
const layouts: fc.Arbitrary<IdLayout> = fc
  .integer({ min: 1, max: 52 })
  .chain((t) =>
    fc.record({
      timeBits: fc.constant(t),
      workerBits: fc.integer({ min: Math.max(0, 32 - t), max: Math.min(31, 63 - t) }),
      unitMs: t > 40 ? fc.constant(1) : fc.integer({ min: 1, max: 1000 }),
      epochMs: fc.integer({ min: 0, max: DEFAULT_EPOCH_MS }),
    }),
  )
  .map((o) => new IdLayout({ ...o, sequenceBits: 63 - o.timeBits - o.workerBits }));

/** A layout and valid fields for it. */
const layoutAndParts = layouts.chain((l) =>
  fc.record({
    l: fc.constant(l),
    time: fc.integer({ min: 0, max: l.maxTime }),
    worker: fc.integer({ min: 0, max: l.maxWorker }),
    sequence: fc.integer({ min: 0, max: l.maxSequence }),
  }),
);

function rangeError(fn: () => unknown, option: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(OutOfRangeError);
    expect(e).toBeInstanceOf(RangeError);
    expect((e as OutOfRangeError).code).toBe('DLOCK_OUT_OF_RANGE');
    expect((e as OutOfRangeError).option).toBe(option);
    return;
  }
  throw new Error(`expected an OutOfRangeError for ${option}`);
}

describe('IdLayout', () => {
  it('defaults to 41/10/12 ms from 2026-01-01, lasting until 2095', () => {
    const l = IdLayout.DEFAULT;
    expect([l.timeBits, l.workerBits, l.sequenceBits, l.unitMs]).toEqual([41, 10, 12, 1]);
    expect(new Date(l.epochMs).toISOString()).toBe('2026-01-01T00:00:00.000Z');
    expect(new Date(l.endMs).toISOString()).toBe('2095-09-07T15:47:35.552Z');
    expect([l.maxWorker, l.maxSequence]).toEqual([1023, 4095]);
    expect(IdLayout.from(undefined)).toBe(l);
    expect(l.toString()).toBe('41/10/12 from 2026-01-01T00:00:00.000Z in 1 ms units');
    expect(new IdLayout(l.toJSON())).toEqual(l);
  });

  it('fills missing widths: one missing is what the others leave; otherwise sequence 12, worker 10', () => {
    const bits = (o: LayoutOptions): number[] => {
      const l = new IdLayout(o);
      return [l.timeBits, l.workerBits, l.sequenceBits];
    };
    expect(bits({ workerBits: 8 })).toEqual([43, 8, 12]);
    expect(bits({ sequenceBits: 8 })).toEqual([45, 10, 8]);
    expect(bits({ timeBits: 39 })).toEqual([39, 12, 12]);
    expect(bits({ timeBits: 39, workerBits: 16 })).toEqual([39, 16, 8]);
    expect(bits({ workerBits: 0, sequenceBits: 22 })).toEqual([41, 0, 22]);
    expect(bits({ timeBits: 39, workerBits: 16, sequenceBits: 8 })).toEqual([39, 16, 8]);
  });

  it('refuses bad layouts with a RangeError naming the option', () => {
    rangeError(() => new IdLayout({ timeBits: 41, workerBits: 10, sequenceBits: 11 }), 'timeBits');
    rangeError(() => new IdLayout({ timeBits: 53, workerBits: 0 }), 'timeBits');
    rangeError(() => new IdLayout({ workerBits: -1 }), 'workerBits');
    rangeError(() => new IdLayout({ workerBits: 1.5 }), 'workerBits');
    rangeError(() => new IdLayout({ timeBits: 20, workerBits: 40 }), 'workerBits');
    rangeError(() => new IdLayout({ timeBits: 20, sequenceBits: 40 }), 'sequenceBits');
    rangeError(() => new IdLayout({ epochMs: -1 }), 'epochMs');
    rangeError(() => new IdLayout({ epochMs: new Date('nope') }), 'epochMs');
    rangeError(() => new IdLayout({ unitMs: 0 }), 'unitMs');
    rangeError(() => new IdLayout({ unitMs: 2.5 }), 'unitMs');
    // 52 bits of 10 ms units would run past the end of JS dates.
    rangeError(() => new IdLayout({ timeBits: 52, workerBits: 0, unitMs: 10 }), 'timeBits');
    expect(() => new IdLayout(null as unknown as LayoutOptions)).toThrow(InvalidArgumentError);
  });

  it('property: decode(encode(parts)) gives the parts back, and the id is a positive int64', () => {
    fc.assert(
      fc.property(layoutAndParts, ({ l, time, worker, sequence }) => {
        const id = l.encode({ time, worker, sequence });
        expect(id >= 0n && id <= MAX_ID).toBe(true);
        const d = l.decode(id);
        expect([d.time, d.worker, d.sequence]).toEqual([time, worker, sequence]);
        expect(d.timestampMs).toBe(l.epochMs + time * l.unitMs);
        expect(d.date.getTime()).toBe(d.timestampMs);
        expect(l.decode(id.toString()).id).toBe(id);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: every 63-bit value decodes to fields that encode back to it (a bijection), with a valid date', () => {
    fc.assert(
      fc.property(layouts, fc.bigInt({ min: 0n, max: MAX_ID }), (l, id) => {
        const d = l.decode(id);
        expect(l.encode(d)).toBe(id);
        expect(Number.isNaN(d.date.getTime())).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: ids order like (time, worker, sequence) tuples', () => {
    fc.assert(
      fc.property(
        layouts.chain((l) => {
          const parts = fc.record({
            time: fc.integer({ min: 0, max: l.maxTime }),
            worker: fc.integer({ min: 0, max: l.maxWorker }),
            sequence: fc.integer({ min: 0, max: l.maxSequence }),
          });
          return fc.tuple(fc.constant(l), parts, parts);
        }),
        ([l, a, b]) => {
          const cmp = (x: number, y: number): number => (x < y ? -1 : x > y ? 1 : 0);
          const byTuple = cmp(a.time, b.time) || cmp(a.worker, b.worker) || cmp(a.sequence, b.sequence);
          const ia = l.encode(a);
          const ib = l.encode(b);
          expect(ia < ib ? -1 : ia > ib ? 1 : 0).toBe(byTuple);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('refuses fields out of range and ids that are not 63-bit decimals', () => {
    const l = IdLayout.DEFAULT;
    rangeError(() => l.encode({ time: 2 ** 41, worker: 0, sequence: 0 }), 'time');
    rangeError(() => l.encode({ time: 0, worker: 1024, sequence: 0 }), 'worker');
    rangeError(() => l.encode({ time: 0, worker: 0, sequence: -1 }), 'sequence');
    rangeError(() => l.encode({ time: 0.5, worker: 0, sequence: 0 }), 'time');
    rangeError(() => l.decode(MAX_ID + 1n), 'id');
    rangeError(() => l.decode(-1n), 'id');
    rangeError(() => parseId('9999999999999999999'), 'id');
    expect(() => l.decode('12a')).toThrow(InvalidArgumentError);
    expect(() => l.decode('-5')).toThrow(InvalidArgumentError);
    expect(() => l.decode(5 as unknown as bigint)).toThrow(InvalidArgumentError);
    expect(parseId(' 42 ')).toBe(42n);
    expect(parseId(MAX_ID.toString())).toBe(MAX_ID);
  });

  it('converts between ms and units, and finds the first id of an instant', () => {
    const l = new IdLayout({ unitMs: 10, epochMs: 1000 });
    expect(l.unitOf(1000)).toBe(0);
    expect(l.unitOf(1009)).toBe(0);
    expect(l.unitOf(1010)).toBe(1);
    expect(l.unitOf(999)).toBe(-1);
    expect(l.msOf(3)).toBe(1030);
    expect(l.firstIdAt(1011)).toBe(l.encode({ time: 2, worker: 0, sequence: 0 }));
    expect(l.firstIdAt(0)).toBe(0n);
    expect(l.decode(l.firstIdAt(1030) - 1n).time).toBe(2);
  });
});
