/**
 * The partition scenarios, written once for every engine (no vitest here; the cases are in
 * test/chaos/partition-*.test.ts). A scenario drives lab clients (./partition-history.ts) through
 * one partition and its heal, merges their histories and judges them; the caller asserts.
 *
 * `holderCut`: the holder of a key is cut off from a quorum of the engine (isolated alone, or on
 * the minority side of a split with a minority of the servers), while a client on the majority
 * side waits for the key. It must be told (its lease's signal aborts) before the waiter is
 * granted; the waiter then writes to the fenced resource with its newer token, and the cut-off
 * holder's write with its old token (sent on purpose, after the loss) must be refused. While
 * still cut off, the holder asks for another key: it must not be granted. After the heal every
 * client takes the key once more.
 *
 * `leaderCut`: one engine server (the leader) is isolated from everyone; the clients all keep a
 * quorum. The holder may keep its lease (its keep-alives move to another server) or lose it;
 * either way: no overlap, no stale write accepted, the waiter is granted during the partition,
 * and all works after the heal.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { judge, hrnow, msBetween, startClient, validityEnd, type CutWindow, type HistoryLine, type LabClient, type PartitionHold, type PartitionVerdict, type StartClientOptions } from './partition-history.js';
import type { Lab } from './netns.js';

export interface ScenarioEnv {
  lab: Lab;
  /** Client options without the fenced counter's id (one per scenario). */
  client: Omit<StartClientOptions, 'counterId'>;
  /** The fenced resource's host: never cut off. */
  resourceHost: string;
  /** Called after the heal, before the final round (e.g. wait for the engine to be healthy). */
  afterHeal?(): Promise<void>;
  /** How long a waiter may wait for a grant in ms (its lease TTL on the engine + an election). */
  waitMs: number;
  /** What the holder takes (default a mutex); the waiter takes what must wait for it ({@link contenderOf}). */
  hold?: PartitionHold;
  /** A lock URL for some client hosts instead of `client.lockUrl` (e.g. naming one server only). */
  lockUrlOf?: Readonly<Record<string, string>>;
}

/**
 * What must wait for `h`, and what each client takes in the final round: the write side for a
 * read lock, one permit for a semaphore whose permits the holder took all of, else the same.
 */
export function contenderOf(h: PartitionHold | undefined): PartitionHold | undefined {
  if (h?.primitive === 'read') return { primitive: 'write' };
  if (h?.primitive === 'semaphore') return { primitive: 'semaphore', permits: 1 };
  return h;
}

export interface ScenarioResult {
  verdict: PartitionVerdict;
  history: HistoryLine[];
  /** From the partition to the cut-off holder's `lost` (ms); undefined if it was never told. */
  toldMs?: number;
  /** From the partition to the waiter's grant (ms). */
  waiterGrantMs?: number;
  /** The holder's lease had ended (its local deadline passed, or it was told) before the waiter was granted. */
  toldBeforeGrant: boolean;
  /** How long after the end of its validity the `lost` notice came (timer lateness; 0 when told first). */
  noticeLateMs?: number;
  /** What the cut-off client's acquire of another key answered while cut off. */
  minorityAcquire?: string;
  /** Every client was granted the key after the heal. */
  afterHealGrants: number;
  afterHealClients: number;
  /** For `leaderCut`: whether the holder kept its lease through the partition. */
  holderKept?: boolean;
  /** Extra facts for the report. */
  notes: string[];
}

let runs = 0;

async function clientsFor(env: ScenarioEnv, hosts: readonly string[]): Promise<{ clients: Map<string, LabClient>; close: () => Promise<void> }> {
  const counterId = `${env.lab.id}-${++runs}`;
  // A history of its own per scenario run (several runs share a lab: one per hold).
  const dir = join(env.client.dir, counterId);
  mkdirSync(dir, { recursive: true });
  const list = await Promise.all(hosts.map((h) => startClient(env.lab, h, { ...env.client, lockUrl: env.lockUrlOf?.[h] ?? env.client.lockUrl, counterId, dir })));
  return {
    clients: new Map(list.map((c) => [c.host, c])),
    close: async () => {
      await Promise.all(list.map((c) => c.close()));
    },
  };
}

const get = (m: Map<string, LabClient>, h: string): LabClient => {
  const c = m.get(h);
  if (!c) throw new Error(`no client ${h}`);
  return c;
};

/** Wait for `p`, or undefined after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** After the heal: each client in turn takes the key, writes, releases. */
async function finalRound(env: ScenarioEnv, clients: Map<string, LabClient>, key: string): Promise<number> {
  await env.afterHeal?.();
  let n = 0;
  for (const c of clients.values()) {
    const r = await c.acquire(key, env.waitMs, contenderOf(env.hold));
    if (!r.granted) continue;
    n++;
    await c.write();
    await c.release();
  }
  return n;
}

function merged(clients: Map<string, LabClient>): HistoryLine[] {
  return [...clients.values()].flatMap((c) => c.history()).sort((a, b) => (BigInt(a.t) < BigInt(b.t) ? -1 : 1));
}

/**
 * The opening both scenarios share: a holder granted the key (and one write accepted), a waiter
 * queued behind it (its request given time to reach the engine), the holder's next loss watched.
 */
async function opening(env: ScenarioEnv, o: { holder: string; waiter: string }, waiterWaitMs: number) {
  const { clients, close } = await clientsFor(env, [o.holder, o.waiter]);
  const holder = get(clients, o.holder);
  const waiter = get(clients, o.waiter);
  const key = `part-${env.lab.id}-${runs}`;
  try {
    const g = await holder.acquire(key, env.waitMs, env.hold);
    if (!g.granted) throw new Error(`the holder was not granted before the partition: ${g.line.code}`);
    if (!(await holder.write()).accepted) throw new Error('the holder could not write before the partition');
    const lost = holder.nextLost();
    const waited = waiter.acquire(key, waiterWaitMs, contenderOf(env.hold));
    await new Promise((r) => setTimeout(r, 300));
    return { clients, close, holder, waiter, key, lost, waited };
  } catch (e) {
    await close();
    throw e;
  }
}

export interface HolderCutOptions {
  /** The sides of the partition; the holder's side has no quorum. */
  sides: ReadonlyArray<readonly string[]>;
  holder: string;
  waiter: string;
  /** Client hosts cut off from a quorum (for the minority-grant check). */
  minority: readonly string[];
  /** The cut-off holder must be told within this many ms of the partition. */
  tellWithinMs: number;
}

/** See the file header. */
export async function holderCut(env: ScenarioEnv, o: HolderCutOptions): Promise<ScenarioResult> {
  const { clients, close, holder, waiter, key, lost, waited } = await opening(env, o, env.waitMs * 2);
  const notes: string[] = [];
  try {
    const cutAt = hrnow();
    await env.lab.partition(o.sides);
    const told = await within(lost, o.tellWithinMs + 10_000);
    const w = await waited;
    let waiterGrantMs: number | undefined;
    if (w.granted) {
      waiterGrantMs = msBetween(cutAt, w.line.t);
      await waiter.write();
    } else notes.push(`waiter denied during the partition: ${w.line.code}`);
    // The cut-off holder writes with its old token anyway: the resource must refuse it.
    const stale = await holder.write();
    if (stale.accepted) notes.push('the cut-off holder\'s write was accepted');
    await holder.release();
    // Still cut off: another key must not be granted on this side.
    const other = await holder.acquire(`${key}-minority`, 3000, env.hold);
    if (other.granted) await holder.release();
    if (w.granted) await waiter.release();
    const healAt = hrnow();
    await env.lab.heal();
    const afterHealGrants = await finalRound(env, clients, key);
    const history = merged(clients);
    const windows: CutWindow[] = [{ from: cutAt, to: healAt, minority: o.minority }];
    return {
      verdict: judge(history, windows),
      history,
      toldMs: told ? msBetween(cutAt, told.t) : undefined,
      waiterGrantMs,
      toldBeforeGrant: told !== undefined && (!w.granted || validityEnd(told) < BigInt(w.line.t)),
      noticeLateMs: told ? msBetween(validityEnd(told), told.t) : undefined,
      minorityAcquire: other.granted ? `granted ${other.line.token}` : `denied (${other.line.code})`,
      afterHealGrants,
      afterHealClients: clients.size,
      notes,
    };
  } finally {
    await env.lab.heal();
    await close();
  }
}

export interface LeaderCutOptions {
  /** The server host to isolate. */
  leader: string;
  holder: string;
  waiter: string;
  /** How long the partition lasts in ms (long enough for an election and a lease TTL). */
  holdMs: number;
}

/** See the file header. */
export async function leaderCut(env: ScenarioEnv, o: LeaderCutOptions): Promise<ScenarioResult> {
  const { clients, close, holder, waiter, key, lost, waited } = await opening(env, o, env.waitMs * 2);
  const notes: string[] = [];
  try {
    const cutAt = hrnow();
    await env.lab.isolate([o.leader], [env.resourceHost]);
    const told = await within(lost, o.holdMs);
    const holderKept = told === undefined && (await holder.state()).held;
    // Kept: it still may write (and then gives the key to the waiter); lost: its write must be refused.
    const w1 = await holder.write();
    if (!holderKept && w1.accepted) notes.push('a write after the loss was accepted (checked as a stale write if a newer token wrote first)');
    await holder.release();
    const w = await waited;
    let waiterGrantMs: number | undefined;
    if (w.granted) {
      waiterGrantMs = msBetween(cutAt, w.line.t);
      await waiter.write();
      await waiter.release();
    } else notes.push(`waiter denied during the partition: ${w.line.code}`);
    // A late write of the old holder, after the waiter's: always refused.
    const late = await holder.write();
    if (late.accepted) notes.push('the old holder\'s late write was accepted');
    const healAt = hrnow();
    await env.lab.heal();
    const afterHealGrants = await finalRound(env, clients, key);
    const history = merged(clients);
    return {
      verdict: judge(history, [{ from: cutAt, to: healAt, minority: [] }]),
      history,
      toldMs: told ? msBetween(cutAt, told.t) : undefined,
      waiterGrantMs,
      toldBeforeGrant: told === undefined || !w.granted || validityEnd(told) < BigInt(w.line.t),
      noticeLateMs: told ? msBetween(validityEnd(told), told.t) : undefined,
      afterHealGrants,
      afterHealClients: clients.size,
      holderKept,
      notes,
    };
  } finally {
    await env.lab.heal();
    await close();
  }
}

/** One line for the report: the measured figures of a scenario. */
export function summary(name: string, r: ScenarioResult): string {
  const v = r.verdict;
  return [
    `${name}:`,
    `told ${r.toldMs === undefined ? 'never' : `${Math.round(r.toldMs)} ms`} after the cut${r.holderKept === undefined ? '' : r.holderKept ? ' (holder kept its lease)' : ''},`,
    r.noticeLateMs ? `(${Math.round(r.noticeLateMs)} ms after its deadline),` : '',
    `waiter granted ${r.waiterGrantMs === undefined ? 'never' : `${Math.round(r.waiterGrantMs)} ms`} after,`,
    `grants ${JSON.stringify(v.grantsByHost)},`,
    r.minorityAcquire ? `cut-off acquire ${r.minorityAcquire},` : '',
    `minority grants ${v.minorityGrants.length}, stale writes accepted ${v.staleAccepted.length} / rejected ${v.staleRejected},`,
    `overlaps ${v.overlaps.length}, after heal ${r.afterHealGrants}/${r.afterHealClients}`,
    r.notes.length > 0 ? `notes: ${r.notes.join('; ')}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}
