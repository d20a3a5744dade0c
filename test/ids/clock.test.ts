import { describe, expect, it } from 'vitest';
import { LogicalClock, ManualClock, hrtimeMs, type ClockSources } from '../../src/ids/clock.js';

/** Raw clocks moved by hand. */
function sources(wall: number, mono: number): ClockSources & { wall: number; mono: number } {
  return {
    wall,
    mono,
    wallMs() {
      return this.wall;
    },
    monoMs() {
      return this.mono;
    },
  };
}

describe('LogicalClock', () => {
  it('is the wall clock read once plus monotonic time: wall-clock steps back change nothing', () => {
    const s = sources(1_000_000, 50);
    const c = new LogicalClock({ sources: s });
    expect(c.now()).toBe(1_000_000);
    s.mono += 10;
    expect(c.now()).toBe(1_000_010);
    s.wall -= 10_000; // NTP steps the wall clock back 10 s
    for (let i = 0; i < 5; i++) {
      s.mono += 600; // rechecks happen, none moves time back
      expect(c.now()).toBe(1_000_010 + 600 * (i + 1));
    }
    expect(c.forwardStepCount).toBe(0);
    expect(c.wallLagMs()).toBe(13_010); // 10 s step + 3 s the wall clock (static here) did not move
  });

  it('re-anchors forward (only at a recheck) when the wall clock is ahead by more than forwardStepMs', () => {
    const s = sources(1_000_000, 0);
    const c = new LogicalClock({ sources: s, recheckEveryMs: 1000, forwardStepMs: 20 });
    s.wall += 5000; // e.g. the machine was suspended: CLOCK_MONOTONIC stood still
    s.mono += 10;
    expect(c.now()).toBe(1_000_010); // not rechecked yet
    s.mono += 990;
    s.wall += 1000;
    expect(c.now()).toBe(1_006_000); // recheck: jumped forward to the wall clock
    expect(c.forwardStepCount).toBe(1);
    s.wall += 15; // small drift ahead: below the threshold, ignored
    s.mono += 1000;
    s.wall += 1000;
    expect(c.now()).toBe(1_007_000);
    expect(c.forwardStepCount).toBe(1);
  });

  it('a monotonic clock going back alone is caught by the wall clock; both going back moves time back (the generator decides)', () => {
    const s = sources(1_000_000, 10_000);
    const c = new LogicalClock({ sources: s, recheckEveryMs: 1000 });
    s.mono -= 100; // only the monotonic clock: the recheck it triggers re-anchors to the wall clock
    expect(c.now()).toBe(1_000_000);
    s.mono -= 100;
    s.wall -= 100; // both (libfaketime faking CLOCK_MONOTONIC too): time goes back with them
    expect(c.now()).toBe(999_900);
    // The recheck re-armed at the lower reading: a forward wall step is still noticed later.
    s.wall += 10_100;
    s.mono += 1000;
    expect(c.now()).toBe(1_010_000);
  });

  it('by default follows Date.now() and never goes backwards', () => {
    const c = new LogicalClock();
    const a = c.now();
    expect(Math.abs(a - Date.now())).toBeLessThan(50);
    let prev = a;
    for (let i = 0; i < 10_000; i++) {
      const t = c.now();
      expect(t).toBeGreaterThanOrEqual(prev);
      prev = t;
    }
    expect(hrtimeMs()).toBeGreaterThan(0);
  });
});

describe('ManualClock', () => {
  it('moves only by hand', () => {
    const c = new ManualClock(5);
    expect(c.now()).toBe(5);
    c.advance(-2);
    expect(c.now()).toBe(3);
  });
});
