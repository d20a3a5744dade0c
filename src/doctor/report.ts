/**
 * What `doctor()` reports, and the checks every engine shares: the round trip (p50/p99 over a
 * series of read-only pings) and the clock offset between this host and the engine.
 */
import { monotonicNow } from '../core/clock.js';
import { UnavailableError } from '../errors.js';

/** The verdict of one check. */
export type DoctorStatus = 'ok' | 'warn' | 'fail';

/** One check's result. */
export interface DoctorFinding {
  /** Stable id of the check, e.g. `redis.maxmemory-policy`, `rtt`, `clock`. */
  readonly check: string;
  /** `fail`: this setting breaks locks (or makes the lock unusable); `warn`: it weakens them. */
  readonly status: DoctorStatus;
  /** What was read from the engine (the values and where they came from). */
  readonly evidence: string;
  /** What to change; present on `warn` and `fail`. */
  readonly fix?: string;
}

/** What {@link doctor} found. */
export interface DoctorReport {
  /** The engine, e.g. `redis`, `redlock`, `redis+cluster`, `postgres`, `sqlite`. */
  readonly engine: string;
  /** The URL checked, password replaced by `***`. */
  readonly url: string;
  /** One entry per check, in the order run. */
  readonly findings: readonly DoctorFinding[];
}

/** Options of {@link doctor}. */
export interface DoctorOptions {
  /**
   * The lock TTL the application uses, in ms (default 30,000, the client's default): the round
   * trip check fails when p99 reaches a tenth of it.
   */
  readonly ttlMs?: number;
  /** How many pings the round trip check sends. Default 50 (at least 5). */
  readonly pings?: number;
  /** How long connecting and each read may take, in ms. Default 5000. */
  readonly timeoutMs?: number;
}

/** Options after validation. */
export interface ResolvedDoctorOptions {
  readonly ttlMs: number;
  readonly pings: number;
  readonly timeoutMs: number;
}

/** Builds findings: `ok`, `warn`, `fail`. */
export const ok = (check: string, evidence: string): DoctorFinding => ({ check, status: 'ok', evidence });
/** A finding that weakens locks. */
export const warn = (check: string, evidence: string, fix: string): DoctorFinding => ({ check, status: 'warn', evidence, fix });
/** A finding that breaks locks. */
export const fail = (check: string, evidence: string, fix: string): DoctorFinding => ({ check, status: 'fail', evidence, fix });

/** Round trips above this p99 warn: every acquisition, renewal and handoff pays 1 to 3 of them. */
export const RTT_WARN_MS = 100;
/** A clock offset above this (beyond the measurement's own uncertainty) warns. */
export const CLOCK_WARN_MS = 1000;

/** The `q` quantile (0..1) of sorted values, nearest rank. */
function quantile(sorted: readonly number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

const ms = (v: number): string => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;

/**
 * The `rtt` finding: `ping` run `opts.pings` times in a row. Warn when p99 exceeds
 * {@link RTT_WARN_MS}; fail when it reaches a tenth of the TTL (a renewal starts at a third of
 * the TTL and may need a few round trips and a retry: at TTL/10 per trip, the slack is gone).
 */
export async function roundTrip(what: string, ping: () => Promise<unknown>, opts: ResolvedDoctorOptions): Promise<DoctorFinding> {
  const times: number[] = [];
  for (let i = 0; i < opts.pings; i++) {
    const t0 = monotonicNow();
    await ping();
    times.push(monotonicNow() - t0);
  }
  times.sort((a, b) => a - b);
  const p50 = quantile(times, 0.5);
  const p99 = quantile(times, 0.99);
  const evidence = `${opts.pings} ${what}: p50 ${ms(p50)}, p99 ${ms(p99)}, max ${ms(times[times.length - 1] ?? Number.NaN)}`;
  if (p99 >= opts.ttlMs / 10) {
    return fail('rtt', `${evidence}; the TTL is ${opts.ttlMs} ms, and a renewal (started at TTL/3) needs a few round trips`, 'Run the application near the engine (same region / network), or raise ttlMs to at least 10 x the p99 round trip.');
  }
  if (p99 > RTT_WARN_MS) {
    return warn('rtt', `${evidence}, above ${RTT_WARN_MS} ms: every acquisition, renewal and handoff pays 1 to 3 round trips`, 'Run the application near the engine; check the network path (VPN, cross-region link, overloaded server).');
  }
  return ok('rtt', evidence);
}

/**
 * The `clock` finding from `samples` reads of the engine's clock: each read is bracketed by this
 * host's wall clock (`before`, `after`), the offset is `engine - (before + after) / 2` and its
 * uncertainty half the round trip; the read with the smallest round trip wins. dlock measures
 * TTLs on each side's own clock (durations), so an offset does not break a lock; it does break
 * time-ordered ids across hosts (snowflake marks) and makes expiry times in logs disagree:
 * warn above {@link CLOCK_WARN_MS}.
 */
export async function clockOffset(readEngineMs: () => Promise<number>, samples = 5, resolutionMs = 0): Promise<DoctorFinding> {
  let best: { offset: number; uncertainty: number } | undefined;
  for (let i = 0; i < samples; i++) {
    const before = Date.now();
    const t0 = monotonicNow();
    const engine = await readEngineMs();
    const rtt = monotonicNow() - t0;
    // Date.now() is truncated to the ms: the true time is in [before, before + 1).
    const offset = engine - (before + 0.5 + rtt / 2);
    const uncertainty = rtt / 2 + 0.5 + resolutionMs;
    if (!best || uncertainty < best.uncertainty) best = { offset, uncertainty };
  }
  if (!best) return ok('clock', 'not measured: no sample');
  const side = best.offset >= 0 ? 'ahead of' : 'behind';
  const evidence = `the engine's clock is ${ms(Math.abs(best.offset))} ${side} this host's (± ${ms(best.uncertainty)})`;
  if (Math.abs(best.offset) - best.uncertainty > CLOCK_WARN_MS) {
    return warn('clock', `${evidence}, over ${CLOCK_WARN_MS} ms: TTLs are unaffected (durations on each side's own clock), but time-based ids and expiry times in logs are not`, 'Run NTP (chrony, systemd-timesyncd) on this host and on the engine\'s hosts.');
  }
  return ok('clock', evidence);
}

/** Resolve `p`, or reject with {@link UnavailableError} after `timeoutMs`. */
export function within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(down(what, `no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** {@link UnavailableError} for `what` (the engine and where), whose cause is the short `reason`. */
export function down(what: string, reason: string): UnavailableError {
  return new UnavailableError(`${what}: ${reason}`, { cause: new Error(reason) });
}

/** `e` as {@link UnavailableError} (`what` says which engine and where), keeping the cause. */
export function unreachable(what: string, e: unknown): UnavailableError {
  if (e instanceof UnavailableError) return e;
  const reason = e instanceof Error ? e.message : String(e);
  return new UnavailableError(`${what}: ${reason || 'connection failed'}`, { cause: e });
}

/** A read that may be refused (a managed service renames CONFIG): its value, or the error text. */
export async function attempt<T>(p: Promise<T>): Promise<{ value: T } | { error: string }> {
  try {
    return { value: await p };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}
