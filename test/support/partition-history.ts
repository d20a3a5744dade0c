/**
 * The test-process side of the partition tests (no vitest here): lock clients started inside lab
 * hosts (./partition-worker.ts), their JSON-lines histories, and the checker that decides a run.
 *
 * The checker's criteria (issue 14, reliability.md plan item 6):
 * - no stale write accepted: an accepted fenced write whose token is below that of a write
 *   accepted before it was sent;
 * - no grant on a minority side: no `grant` to a client while it was cut off from a quorum;
 * - exclusion across the partition: the critical sections (grant to `release`, or to the end of
 *   a lost lease's validity: see validityEnd; through checkers.ts) never overlap and tokens grow in
 *   grant order;
 * - the isolated holder is told: its `lost` comes before any other client's grant of that key,
 *   and within `tellWithinMs` of the partition.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOverlaps, tokenOrderViolations, type Section } from './checkers.js';
import type { Lab } from './netns.js';

const WORKER = fileURLToPath(new URL('./partition-worker.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** One line of a worker's history. */
export interface HistoryLine {
  readonly t: string;
  readonly host: string;
  /** `event`: a client event (session state, a failed request), for diagnosis only. */
  readonly ev: 'request' | 'grant' | 'deny' | 'lost' | 'write' | 'release' | 'event';
  readonly key?: string;
  readonly token?: string;
  readonly code?: string;
  readonly accepted?: boolean;
  readonly ok?: boolean;
  /** For `write`: when it was sent (the line's `t` is when the answer came). */
  readonly sentAt?: string;
  /** For `lost`: the lease's local deadline as last read while it held (hrtime). */
  readonly validUntil?: string;
}

/**
 * When a lost lease stopped being valid: its local deadline, or the `lost` line if that came
 * first (a renewal refused). The notice itself may come a little later on a loaded machine.
 */
export function validityEnd(lost: HistoryLine): bigint {
  const t = BigInt(lost.t);
  const until = lost.validUntil === undefined ? t : BigInt(lost.validUntil);
  return until < t ? until : t;
}

type Reply = { line?: HistoryLine; error?: string } & Record<string, unknown>;

/**
 * What a lab client takes: a mutex, either side of a read-write lock, or `permits` of a
 * semaphore of {@link PARTITION_PERMITS} (the holder takes them all, so that a waiter's one
 * must wait for it).
 */
export interface PartitionHold {
  readonly primitive: 'mutex' | 'read' | 'write' | 'semaphore';
  readonly permits?: number;
}

export const PARTITION_PERMITS = 2;

/** A lock client running in a lab host. */
export interface LabClient {
  readonly host: string;
  readonly historyFile: string;
  acquire(key: string, waitMs: number, what?: PartitionHold): Promise<{ granted: boolean; line: HistoryLine }>;
  /** The admission modes its driver grants (`info.modes`). */
  modes(): Promise<string[]>;
  write(): Promise<{ accepted: boolean; line: HistoryLine }>;
  release(): Promise<{ ok: boolean; line: HistoryLine }>;
  /** Whether its current lease says it is held, and whether its signal aborted. */
  state(): Promise<{ held: boolean; aborted: boolean }>;
  /** Resolves with the next `lost` line (the current lease's signal aborted). */
  nextLost(): Promise<HistoryLine>;
  history(): HistoryLine[];
  close(): Promise<void>;
}

export interface StartClientOptions {
  lockUrl: string;
  /** Where the fenced resource is (a Redis URL reachable from every client). */
  counterUrl: string;
  counterId: string;
  ttlMs: number;
  /** Directory for the history file. */
  dir: string;
}

/** Start a worker in lab host `host` and wait until its lock client is connected. */
export async function startClient(lab: Lab, host: string, opts: StartClientOptions): Promise<LabClient> {
  const historyFile = join(opts.dir, `${host}.jsonl`);
  const proc = lab.spawn(
    host,
    process.execPath,
    ['--unhandled-rejections=strict', '--import', 'tsx', WORKER, host, opts.lockUrl, historyFile, opts.counterUrl, opts.counterId, String(opts.ttlMs)],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], cwd: REPO },
  );
  const child = proc.child;
  if (!child) throw new Error('worker did not spawn');
  let nextId = 1;
  const waiting = new Map<number, (r: Reply) => void>();
  const lostWaiters: Array<(l: HistoryLine) => void> = [];
  let exitedWith: string | undefined;
  child.on('message', (m: { type: string; id?: number; line?: HistoryLine } & Reply) => {
    if (m.type === 'reply' && m.id !== undefined) {
      waiting.get(m.id)?.(m);
      waiting.delete(m.id);
    }
    if (m.type === 'lost' && m.line) for (const w of lostWaiters.splice(0)) w(m.line);
  });
  child.on('exit', (code, signal) => {
    exitedWith = `worker in ${host} exited (${code ?? signal})`;
    for (const w of waiting.values()) w({ error: exitedWith });
    waiting.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.on('message', (m: { type: string }) => m.type === 'ready' && resolve());
    child.once('exit', (code) => reject(new Error(`worker in ${host} exited with ${code} before it was ready`)));
  });
  const call = async <T>(cmd: Record<string, unknown>): Promise<T> => {
    if (exitedWith) throw new Error(exitedWith);
    const id = nextId++;
    const reply = await new Promise<Reply>((resolve) => {
      waiting.set(id, resolve);
      child.send({ id, ...cmd });
    });
    if (reply.error) throw new Error(`${host}: ${reply.error}`);
    return reply as T;
  };
  return {
    host,
    historyFile,
    acquire: (key, waitMs, what) => call({ cmd: 'acquire', key, waitMs, ...what }),
    modes: async () => (await call<{ modes: string[] }>({ cmd: 'modes' })).modes,
    write: () => call({ cmd: 'write' }),
    release: () => call({ cmd: 'release' }),
    state: () => call({ cmd: 'state' }),
    nextLost: () => new Promise((resolve) => lostWaiters.push(resolve)),
    history: () => readHistory(historyFile),
    close: async () => {
      if (!exitedWith) await call({ cmd: 'close' }).catch(() => undefined);
      await proc.stop('SIGTERM', 3000);
    },
  };
}

export function readHistory(file: string): HistoryLine[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as HistoryLine);
}

/** A window in which `minority` hosts were cut off from a quorum of the engine. */
export interface CutWindow {
  readonly from: bigint;
  /** When it healed (undefined: never in this run). */
  readonly to?: bigint;
  readonly minority: readonly string[];
}

export interface PartitionVerdict {
  readonly grants: number;
  readonly grantsByHost: Record<string, number>;
  readonly minorityGrants: string[];
  readonly staleAccepted: string[];
  readonly staleRejected: number;
  readonly writesAccepted: number;
  readonly overlaps: string[];
  readonly tokenOrder: string[];
}

const big = (s: string | undefined): bigint => BigInt(s ?? '0');

/** Critical sections per key: a grant up to that lease's `lost` or `release`, whichever came first (or the end of the history). */
export function sectionsOf(lines: readonly HistoryLine[]): Map<string, Section[]> {
  const sorted = [...lines].sort((a, b) => (big(a.t) < big(b.t) ? -1 : 1));
  const endOfRun = sorted.length > 0 ? big(sorted[sorted.length - 1]?.t) : 0n;
  const hosts = [...new Set(sorted.map((l) => l.host))];
  const out = new Map<string, Section[]>();
  let cycle = 0;
  for (const [i, g] of sorted.entries()) {
    if (g.ev !== 'grant' || !g.key) continue;
    const end = sorted.slice(i + 1).find((l) => l.host === g.host && l.token === g.token && l.key === g.key && (l.ev === 'lost' || l.ev === 'release'));
    const request = [...sorted.slice(0, i)].reverse().find((l) => l.host === g.host && l.ev === 'request' && l.key === g.key);
    const list = out.get(g.key) ?? [];
    list.push({
      pid: hosts.indexOf(g.host),
      cycle: cycle++,
      token: big(g.token),
      requestedAt: big(request?.t ?? g.t),
      start: big(g.t),
      // A release ends the section when it is sent (`sentAt`): the engine may grant the next
      // holder before the release's reply is back.
      end: end ? (end.ev === 'lost' ? validityEnd(end) : big(end.sentAt ?? end.t)) : endOfRun,
      stillHeld: end?.ev === 'release',
      releaseOk: end?.ok,
    });
    out.set(g.key, list);
  }
  return out;
}

/** Judge the merged histories of a run against the partition windows. */
export function judge(lines: readonly HistoryLine[], windows: readonly CutWindow[]): PartitionVerdict {
  const grants = lines.filter((l) => l.ev === 'grant');
  const grantsByHost: Record<string, number> = {};
  for (const g of grants) grantsByHost[g.host] = (grantsByHost[g.host] ?? 0) + 1;
  const minorityGrants = grants
    .filter((g) => windows.some((w) => w.minority.includes(g.host) && big(g.t) > w.from && (w.to === undefined || big(g.t) < w.to)))
    .map((g) => `${g.host} granted token ${g.token} of ${g.key} while cut off`);
  const writes = lines.filter((l) => l.ev === 'write').sort((a, b) => (big(a.t) < big(b.t) ? -1 : 1));
  const accepted = writes.filter((w) => w.accepted);
  const staleAccepted: string[] = [];
  for (const w of accepted) {
    const before = accepted.find((o) => o !== w && o.key === w.key && big(o.t) < big(w.sentAt ?? w.t) && big(o.token) > big(w.token));
    if (before) staleAccepted.push(`${w.host} wrote token ${w.token} after ${before.host} had written ${before.token}`);
  }
  const overlaps: string[] = [];
  const tokenOrder: string[] = [];
  for (const [key, sections] of sectionsOf(lines)) {
    overlaps.push(...findOverlaps(sections).map((s) => `${key}: ${s}`));
    tokenOrder.push(...tokenOrderViolations(sections).map((s) => `${key}: ${s}`));
  }
  return {
    grants: grants.length,
    grantsByHost,
    minorityGrants,
    staleAccepted,
    staleRejected: writes.length - accepted.length,
    writesAccepted: accepted.length,
    overlaps,
    tokenOrder,
  };
}

/** Throw unless the verdict has no violation (the message lists them all). */
export function assertSafe(v: PartitionVerdict): void {
  const problems = [
    ...v.minorityGrants.map((s) => `minority grant: ${s}`),
    ...v.staleAccepted.map((s) => `stale write accepted: ${s}`),
    ...v.overlaps.map((s) => `overlap: ${s}`),
    ...v.tokenOrder.map((s) => `token order: ${s}`),
  ];
  if (problems.length > 0) throw new Error(`${problems.length} violations:\n  ${problems.join('\n  ')}`);
}

/** `process.hrtime.bigint()` now (the clock of every history line). */
export const hrnow = (): bigint => process.hrtime.bigint();
/** Milliseconds from `a` to `b` (hrtime values). */
export const msBetween = (a: bigint | string, b: bigint | string): number => Number(BigInt(b) - BigInt(a)) / 1e6;
