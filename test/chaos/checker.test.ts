/**
 * The chaos history checker and the fast slice, on made-up histories (no engine): a hold ended
 * by kill -9 (no release) lasts until its `lost` event or the end of the run, so that a grant to
 * someone else meanwhile is an overlap; the fast slice names one engine and one primitive.
 */
import { describe, expect, it } from 'vitest';
import { checkExclusive, slice } from './harness.js';
import type { ChaosEvent } from './protocol.js';

const ev = (pid: number, cycle: number, phase: ChaosEvent['phase'], t: number, token?: number): ChaosEvent => ({
  pid,
  op: 'mutex',
  phase,
  cycle,
  t: String(t),
  ...(token === undefined ? {} : { token: String(token) }),
});

describe('chaos history checker', () => {
  it('a killed holder (no release) overlaps a later grant until the end of the run', () => {
    const events = [ev(1, 1, 'request', 0), ev(1, 1, 'acquired', 10, 1), ev(2, 1, 'request', 20), ev(2, 1, 'acquired', 50, 2), ev(2, 1, 'released', 60)];
    const v = checkExclusive(events, 100n);
    expect(v.sections).toBe(2);
    expect(v.overlaps).toHaveLength(1);
  });

  it('a hold that ends with its lost event does not overlap a grant after it', () => {
    const events = [ev(1, 1, 'request', 0), ev(1, 1, 'acquired', 10, 1), ev(1, 1, 'lost', 40), ev(2, 1, 'request', 20), ev(2, 1, 'acquired', 50, 2), ev(2, 1, 'released', 60)];
    expect(checkExclusive(events, 100n)).toEqual({ overlaps: [], tokenOrder: [], sections: 2 });
  });

  it('a token that does not grow is reported, a request never granted is not a section', () => {
    const events = [ev(1, 1, 'request', 0), ev(1, 1, 'acquired', 10, 5), ev(1, 1, 'released', 20), ev(2, 1, 'request', 5), ev(2, 1, 'acquired', 30, 5), ev(2, 1, 'released', 40), ev(3, 1, 'request', 1)];
    const v = checkExclusive(events, 100n);
    expect(v.sections).toBe(2);
    expect(v.tokenOrder).toHaveLength(1);
  });

  it('the fast slice runs one engine × one primitive and says so (the full matrix: all of them)', () => {
    const s = slice(8, ['a', 'b', 'c'], ['mutex', 'read'], { engines: ['b', 'c'] });
    if (process.env.DLOCK_CHAOS === 'full') {
      expect(s).toEqual({ engines: ['a', 'b', 'c'], primitives: ['mutex', 'read'], label: 'full matrix' });
      return;
    }
    expect(s.engines).toHaveLength(1);
    expect(['b', 'c']).toContain(s.engines[0]);
    expect(s.primitives).toHaveLength(1);
    expect(s.label).toMatch(/^fast slice, day \d+: [bc] × (mutex|read)/);
  });
});
