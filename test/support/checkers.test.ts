import { describe, expect, it } from 'vitest';
import { assertExclusion, contendedGrants, findOverlaps, sectionsFrom, tokenOrderViolations } from './checkers.js';
import type { LogEntry } from './protocol.js';

/** Log of one critical section: requested at r, granted at s, left at e (ms -> ns). */
function cs(pid: number, cycle: number, token: number, r: number, s: number, e: number): LogEntry[] {
  const ns = (ms: number): string => String(BigInt(ms) * 1_000_000n);
  return [
    { pid, op: 'lock', phase: 'request', t: ns(r), cycle },
    { pid, op: 'lock', phase: 'acquired', t: ns(s), token: String(token), cycle },
    { pid, op: 'lock', phase: 'released', t: ns(e), token: String(token), cycle, stillHeld: true, releaseOk: true },
  ];
}

describe('checkers', () => {
  it('accepts contended, exclusive, increasing sections', () => {
    const sections = sectionsFrom([...cs(1, 0, 1, 0, 0, 10), ...cs(2, 0, 2, 0, 11, 20), ...cs(1, 1, 3, 11, 21, 30)]);
    expect(findOverlaps(sections)).toEqual([]);
    expect(tokenOrderViolations(sections)).toEqual([]);
    expect(contendedGrants(sections)).toBe(2);
    expect(() => assertExclusion(sections, { minContended: 2 })).not.toThrow();
  });

  it('sees an overlap', () => {
    const sections = sectionsFrom([...cs(1, 0, 1, 0, 0, 10), ...cs(2, 0, 2, 0, 9, 20)]);
    expect(findOverlaps(sections)).toHaveLength(1);
    expect(() => assertExclusion(sections, { minContended: 0 })).toThrow(/overlapping/);
  });

  it('sees an overlap with a long section that spans later ones', () => {
    const sections = sectionsFrom([...cs(1, 0, 1, 0, 0, 100), ...cs(2, 0, 2, 0, 10, 20), ...cs(3, 0, 3, 0, 30, 40)]);
    expect(findOverlaps(sections)).toHaveLength(2);
  });

  it('sees tokens that do not increase in grant order', () => {
    const sections = sectionsFrom([...cs(1, 0, 5, 0, 0, 10), ...cs(2, 0, 5, 0, 11, 20), ...cs(3, 0, 4, 0, 21, 30)]);
    expect(tokenOrderViolations(sections)).toHaveLength(2);
    expect(() => assertExclusion(sections, { minContended: 0 })).toThrow(/token order/);
  });

  it('fails a run where the workers ran one after another', () => {
    const sections = sectionsFrom([...cs(1, 0, 1, 0, 0, 10), ...cs(2, 0, 2, 11, 11, 20), ...cs(3, 0, 3, 21, 21, 30)]);
    expect(contendedGrants(sections)).toBe(0);
    expect(() => assertExclusion(sections, { minContended: 1 })).toThrow(/did not overlap in time/);
  });

  it('refuses incomplete logs', () => {
    const partial = cs(1, 0, 1, 0, 0, 10).slice(0, 2);
    expect(() => sectionsFrom(partial)).toThrow(/incomplete/);
  });
});
