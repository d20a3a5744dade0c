import type { LogEntry } from './protocol.js';

/** One critical section of one worker, on the shared monotonic clock (ns). */
export interface Section {
  readonly pid: number;
  readonly cycle: number;
  readonly token: bigint;
  /** When the worker started waiting. */
  readonly requestedAt: bigint;
  /** When the grant arrived. */
  readonly start: bigint;
  /** When the worker left the critical section (before sending the release). */
  readonly end: bigint;
  readonly stillHeld: boolean | undefined;
  readonly releaseOk: boolean | undefined;
  /** The lease was reported lost (its signal aborted) by the time the release answered. */
  readonly lost?: boolean | undefined;
}

/** Pair each worker's request/acquired/released entries into sections, in grant order. */
export function sectionsFrom(logs: readonly LogEntry[]): Section[] {
  const byCycle = new Map<string, Partial<Record<LogEntry['phase'], LogEntry>>>();
  for (const e of logs) {
    const id = `${e.pid}/${e.cycle}`;
    const phases = byCycle.get(id) ?? {};
    if (phases[e.phase]) throw new Error(`duplicate ${e.phase} for pid ${e.pid} cycle ${e.cycle}`);
    phases[e.phase] = e;
    byCycle.set(id, phases);
  }
  const sections: Section[] = [];
  for (const [id, p] of byCycle) {
    const { request, acquired, released } = p;
    if (!request || !acquired || !released) throw new Error(`incomplete log for ${id}: ${JSON.stringify(p)}`);
    if (acquired.token === undefined) throw new Error(`no token for ${id}`);
    sections.push({
      pid: acquired.pid,
      cycle: acquired.cycle,
      token: BigInt(acquired.token),
      requestedAt: BigInt(request.t),
      start: BigInt(acquired.t),
      end: BigInt(released.t),
      stillHeld: released.stillHeld,
      releaseOk: released.releaseOk,
      lost: released.lost,
    });
  }
  return sections.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

const fmt = (s: Section): string => `pid ${s.pid} #${s.cycle} token ${s.token} [${s.start}, ${s.end}]`;

/** Pairs of sections of different workers whose [start, end] intervals intersect. */
export function findOverlaps(sections: readonly Section[]): string[] {
  const sorted = [...sections].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const found: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i];
    if (!a) continue;
    for (let j = i + 1; j < sorted.length; j++) {
      const b = sorted[j];
      if (!b || b.start > a.end) break;
      found.push(`${fmt(a)} overlaps ${fmt(b)} by ${Number(a.end - b.start) / 1e6} ms`);
    }
  }
  return found;
}

/** Places where the token of a later grant is not strictly greater than the one before. */
export function tokenOrderViolations(sections: readonly Section[]): string[] {
  const sorted = [...sections].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const found: string[] = [];
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (prev && cur && cur.token <= prev.token) found.push(`${fmt(cur)} granted after ${fmt(prev)}`);
  }
  return found;
}

/**
 * How many grants were contended: the worker was waiting (between its request and its grant)
 * while another worker was inside a critical section. Zero means the workers ran one after
 * another and the run proved nothing about exclusion.
 */
export function contendedGrants(sections: readonly Section[]): number {
  let n = 0;
  for (const s of sections) {
    if (sections.some((o) => o.pid !== s.pid && o.start < s.start && o.end > s.requestedAt)) n++;
  }
  return n;
}

/** Distinct workers that were waiting at one instant, at most (sampled at every grant). */
export function maxConcurrentWaiters(sections: readonly Section[]): number {
  let max = 0;
  for (const s of sections) {
    const t = s.start;
    const waiting = new Set(sections.filter((o) => o.requestedAt <= t && o.start > t).map((o) => o.pid));
    max = Math.max(max, waiting.size);
  }
  return max;
}

/**
 * Throw a descriptive error unless: no two critical sections overlap, tokens strictly increase
 * in grant order, and at least `minContended` grants really waited for another worker.
 */
export function assertExclusion(sections: readonly Section[], opts: { minContended: number }): void {
  const problems: string[] = [];
  const overlaps = findOverlaps(sections);
  if (overlaps.length > 0) problems.push(`${overlaps.length} overlapping critical sections:\n  ${overlaps.slice(0, 10).join('\n  ')}`);
  const order = tokenOrderViolations(sections);
  if (order.length > 0) problems.push(`${order.length} token order violations:\n  ${order.slice(0, 10).join('\n  ')}`);
  const contended = contendedGrants(sections);
  if (contended < opts.minContended) {
    problems.push(`only ${contended} of ${sections.length} grants were contended (need ${opts.minContended}): the workers did not overlap in time`);
  }
  if (problems.length > 0) throw new Error(problems.join('\n'));
}
