/**
 * The chaos suite's harness (no vitest here): forked workers with a history file each, the
 * history checker, which slice of the matrix runs, and the results file that
 * scripts/chaos-table.mjs turns into docs/reliability.md's table.
 *
 * Full matrix (`npm run chaos`, DLOCK_CHAOS=full): every scenario × engine × primitive. The
 * default `npm test` runs a fast slice: per scenario one engine and one primitive, rotating by
 * day of the year (the describe name says which), so that every cell is visited over a few weeks.
 */
import { fork } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LockClient } from '../../src/core/client.js';
import { findOverlaps, sectionsFrom, tokenOrderViolations, type Section } from '../support/checkers.js';
import { tempDir } from '../support/processes.js';
import type { LogEntry } from '../support/protocol.js';
import { repoRoot, supervise, type Supervised } from '../support/workers.js';
import { ENGINE_NAMES } from './engines.js';
import { PRIMITIVE_NAMES, type PrimitiveName } from './primitives.js';
import type { ChaosCommand, ChaosEvent, ChaosReply } from './protocol.js';

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));

export const FULL = process.env.DLOCK_CHAOS === 'full';

/** Day of the year (1-366), UTC: the fast slice's rotation. */
export function dayOfYear(d = new Date()): number {
  return Math.floor((Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) - Date.UTC(d.getUTCFullYear(), 0, 0)) / 86_400_000);
}

/**
 * The cells of one scenario that run: all of `engines` × `primitives` in the full matrix; else
 * one engine and one primitive, rotated by day and shifted by `scenario` so that the scenarios
 * of one day do not all land on the same engine, chosen from `fast` where given (the cells the
 * scenario can run whatever the engine declares).
 */
export function slice(
  scenario: number,
  engines: readonly string[] = ENGINE_NAMES,
  primitives: readonly PrimitiveName[] = PRIMITIVE_NAMES,
  fast: { engines?: readonly string[]; primitives?: readonly PrimitiveName[] } = {},
): { engines: string[]; primitives: PrimitiveName[]; label: string } {
  if (FULL) {
    // DLOCK_CHAOS_ENGINES=sqlite,redis narrows the full matrix (to rerun a few cells).
    const only = process.env.DLOCK_CHAOS_ENGINES?.split(',').filter(Boolean);
    const es = only ? engines.filter((e) => only.includes(e)) : [...engines];
    return { engines: es, primitives: [...primitives], label: only ? `full matrix on ${es.join(', ')}` : 'full matrix' };
  }
  const day = dayOfYear();
  const es = fast.engines ?? engines;
  const ps = fast.primitives ?? primitives;
  const e = es[(day + scenario) % es.length]!;
  const p = ps[(day + 3 * scenario) % ps.length]!;
  return { engines: [e], primitives: [p], label: `fast slice, day ${day}: ${e} × ${p} (npm run chaos runs the full matrix)` };
}

/** A forked chaos worker. */
export interface ChaosWorker extends Supervised<ChaosReply, ChaosCommand> {
  readonly history: string;
}

export interface ForkOptions {
  /** Extra environment (libfaketime). */
  env?: Record<string, string>;
  /** History file; default a fresh one in a temp dir. */
  history?: string;
}

/** Fork a worker on `url`, with unhandled rejections fatal; resolves once it is ready. */
export async function forkChaosWorker(url: string, o: ForkOptions = {}): Promise<ChaosWorker> {
  const history = o.history ?? join(tempDir('dlock-chaos-history-'), 'history.jsonl');
  const child = fork(WORKER, [JSON.stringify({ url, history })], {
    cwd: repoRoot,
    execArgv: ['--unhandled-rejections=strict', '--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'json',
    env: { ...process.env, ...o.env },
  });
  const w = supervise<ChaosReply, ChaosCommand>(child, 'chaos worker');
  await w.next('ready', 30_000);
  return Object.assign(w, { history });
}

/** Every event of the history files, in time order. */
export function readHistory(...files: string[]): ChaosEvent[] {
  const events: ChaosEvent[] = [];
  for (const f of new Set(files)) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n')) if (line.trim()) events.push(JSON.parse(line) as ChaosEvent);
  }
  return events.sort((a, b) => (BigInt(a.t) < BigInt(b.t) ? -1 : 1));
}

/** Append in-process events to a history in the same format (holders in the test process). */
export class LocalHistory {
  readonly file = join(tempDir('dlock-chaos-local-'), 'history.jsonl');
  private n = 0;
  record(e: Omit<ChaosEvent, 'pid' | 't'>): void {
    appendFileSync(this.file, `${JSON.stringify({ pid: -1 - (e.cycle % 1_000_000), ...e, t: process.hrtime.bigint().toString() })}\n`);
  }
  /** A cycle number no other local hold has. */
  nextCycle(): number {
    return this.n++;
  }
}

/**
 * Critical sections of a history (request/acquired/released per pid and hold); a hold that was
 * acquired and never released (its process was killed) ends at `openEnd`, or at its `lost` event.
 */
export function sections(events: readonly ChaosEvent[], openEnd: bigint): Section[] {
  const byHold = new Map<string, ChaosEvent[]>();
  for (const e of events) {
    const id = `${e.pid}/${e.cycle}`;
    byHold.set(id, [...(byHold.get(id) ?? []), e]);
  }
  const entries: LogEntry[] = [];
  for (const list of byHold.values()) {
    const request = list.find((e) => e.phase === 'request');
    const acquired = list.find((e) => e.phase === 'acquired');
    if (!request || !acquired) continue;
    const end = list.find((e) => e.phase === 'released') ?? list.find((e) => e.phase === 'lost');
    const base = { pid: acquired.pid, op: acquired.op, cycle: acquired.cycle };
    entries.push({ ...base, phase: 'request', t: request.t });
    entries.push({ ...base, phase: 'acquired', t: acquired.t, token: acquired.token });
    entries.push({ ...base, phase: 'released', t: end?.t ?? openEnd.toString(), stillHeld: end?.stillHeld });
  }
  return sectionsFrom(entries);
}

/** What the history checker found; every list empty means no violation. */
export interface Verdict {
  overlaps: string[];
  tokenOrder: string[];
  sections: number;
}

/** Overlapping sections and token order of holds that exclude each other (one key, capacity 1). */
export function checkExclusive(events: readonly ChaosEvent[], openEnd: bigint): Verdict {
  const s = sections(events, openEnd);
  return { overlaps: findOverlaps(s), tokenOrder: tokenOrderViolations(s), sections: s.length };
}

/** The most sections open at one moment (a semaphore of K must never have more than K). */
export function maxConcurrent(s: readonly Section[]): number {
  const edges = s.flatMap((x) => [
    { t: x.start, d: 1 },
    { t: x.end, d: -1 },
  ]);
  // An end and a start at the same instant do not overlap: ends first.
  edges.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.d - b.d));
  let open = 0;
  let most = 0;
  for (const e of edges) most = Math.max(most, (open += e.d));
  return most;
}

/** What is left on the engine: keys under `prefix` still held (`list()`), and waiters queued on `keys`. */
export async function leftovers(client: LockClient, prefix: string, keys: readonly string[] = []): Promise<string[]> {
  const held = (await client.list(prefix)).map((k) => `${k.key}: ${k.holders.length} holders, ${k.waiters} waiting`);
  for (const key of keys) {
    const k = await client.inspectAll(key);
    if (k.holders.length === 0 && k.waiters > 0) held.push(`${key}: ${k.waiters} waiting, no holder`);
  }
  return held;
}

/** One cell of the results table. */
export interface CellResult {
  scenario: string;
  engine: string;
  primitive: string;
  runs: number;
  violations: number;
  /** Measured figures, e.g. `{ freedMs: 1103 }`. */
  figures: Record<string, number | string>;
  skipped?: string;
  /** The case failed (a violated check or a harness error): its first line. */
  failed?: string;
}

/** Append a cell's result to DLOCK_CHAOS_RESULTS (set by `npm run chaos`), if set. */
export function report(r: CellResult): void {
  const file = process.env.DLOCK_CHAOS_RESULTS;
  if (file) appendFileSync(file, `${JSON.stringify({ ...r, at: new Date().toISOString() })}\n`);
}

/** Resolve after `ms` without holding the process open. */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Milliseconds between two hrtime stamps. */
export const msBetween = (a: bigint | string, b: bigint | string): number => Number(BigInt(b) - BigInt(a)) / 1e6;
