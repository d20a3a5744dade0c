/**
 * The clock of the id generators: wall-clock time that wall-clock steps cannot move backwards.
 *
 * Logical time = the wall clock read ONCE at start + the monotonic time elapsed since. An NTP step,
 * an operator's `date -s` or a VM resuming with a wrong clock changes nothing while the process
 * runs: only the monotonic clock advances the time. Once a second (never on the hot path's every
 * call) it compares itself with the wall clock and re-anchors FORWARD when the wall clock is ahead
 * by more than `forwardStepMs`: moving forward never repeats an id, and it catches up after a
 * suspend (CLOCK_MONOTONIC stops while a machine sleeps) or a corrected clock. It never re-anchors
 * backwards: if the wall clock is behind, ids keep the (later) logical time.
 *
 * The monotonic source is `process.hrtime()` rather than `performance.now()`: both read
 * CLOCK_MONOTONIC, but Node computes `performance.now()` as an unsigned difference from the process
 * start, which wraps to ~1.8e13 if that clock is ever observed going back (a faulty or faked
 * clock); `hrtime()` returns the absolute reading, and on Node 20 it is also the faster call.
 *
 * If the monotonic clock itself goes backwards (broken hardware, a hypervisor bug, libfaketime
 * faking CLOCK_MONOTONIC), the logical time goes back with it: the generator, not the clock,
 * decides what to do then (keep issuing in its last time unit, borrow, wait or throw), so that
 * case stays visible and testable.
 */

/** What the id generators read: ms since 1970 (fractional allowed). */
export interface IdClock {
  /** The current time in ms since 1970; never goes back for the logical clock. */
  now(): number;
}

/** The two raw clocks, injectable for tests. */
export interface ClockSources {
  /** Wall clock, ms since 1970 (default `Date.now`). */
  wallMs(): number;
  /** Monotonic clock, ms from an arbitrary origin (default `process.hrtime()`). */
  monoMs(): number;
}

/** Options of {@link LogicalClock}. */
export interface LogicalClockOptions {
  /** Raw clocks (tests). */
  sources?: ClockSources;
  /** Compare with the wall clock this often, in ms of monotonic time. Default 1000. */
  recheckEveryMs?: number;
  /** Re-anchor forward when the wall clock is ahead by more than this, in ms. Default 20. */
  forwardStepMs?: number;
}

/** CLOCK_MONOTONIC in ms, from `process.hrtime()` (absolute, never wraps). */
export function hrtimeMs(): number {
  const t = process.hrtime();
  return t[0] * 1e3 + t[1] / 1e6;
}

const defaultSources: ClockSources = { wallMs: Date.now, monoMs: hrtimeMs };

/** See the file header. */
export class LogicalClock implements IdClock {
  private readonly sources: ClockSources;
  private readonly mono: () => number;
  private readonly recheckEveryMs: number;
  private readonly forwardStepMs: number;
  /** Logical time = offset + monotonic reading. */
  private offset: number;
  private checkedAt: number;
  private nextCheck: number;
  private forwardSteps = 0;

  constructor(options: LogicalClockOptions = {}) {
    const sources = options.sources ?? defaultSources;
    this.sources = sources;
    // The default source is called directly (no closure on the hot path).
    this.mono = options.sources ? () => sources.monoMs() : hrtimeMs;
    this.recheckEveryMs = options.recheckEveryMs ?? 1000;
    this.forwardStepMs = options.forwardStepMs ?? 20;
    const m = this.mono();
    this.offset = this.sources.wallMs() - m;
    this.checkedAt = m;
    this.nextCheck = m + this.recheckEveryMs;
  }

  /** Logical time in ms since 1970: the wall clock read once plus the monotonic clock since, never going back. */
  now(): number {
    const m = this.mono();
    // Two compares on the hot path; the second also re-arms after the monotonic clock went back.
    if (m >= this.nextCheck || m < this.checkedAt) this.recheck(m);
    return this.offset + m;
  }

  /** How many times the clock re-anchored forward to the wall clock. */
  get forwardStepCount(): number {
    return this.forwardSteps;
  }

  /** How far the wall clock is behind logical time right now, in ms (negative: ahead). */
  wallLagMs(): number {
    return this.offset + this.mono() - this.sources.wallMs();
  }

  private recheck(m: number): void {
    this.checkedAt = m;
    this.nextCheck = m + this.recheckEveryMs;
    const ahead = this.sources.wallMs() - (this.offset + m);
    if (ahead > this.forwardStepMs) {
      this.offset += ahead;
      this.forwardSteps += 1;
    }
  }
}

/** A clock you move by hand (tests, simulations). */
export class ManualClock implements IdClock {
  constructor(
    /** The current time in ms since 1970; set it to move the clock. */
    public ms: number,
  ) {}
  /** The time set by the test (`ms`). */
  now(): number {
    return this.ms;
  }
  /** Move by `ms` (negative: backwards). */
  advance(ms: number): void {
    this.ms += ms;
  }
}
