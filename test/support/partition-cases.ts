/**
 * The partition cases of a 3-server quorum engine (etcd, ZooKeeper), registered once for each:
 * servers s1..s3 and clients c1, c2 each in their own lab host, a fenced resource in `res` that no
 * partition cuts. Cases: the holder isolated from every server; a 2/1 split with the holder on
 * the minority side, connected to its one server, a follower (which goes on answering for a
 * while, cut off from the leader) or the leader (which must step down), and the waiter on the
 * majority side; the leader isolated from everyone. Pass: no stale write accepted, no grant on
 * the minority side, the cut-off holder told before the waiter's grant and within its deadline
 * (+ slack for a loaded machine), the waiter granted by the majority during the partition, every
 * client granted again after heal.
 * Each case runs for a mutex, a read lock (the waiter takes the write side), a write lock and a
 * semaphore (the holder takes all of its permits, the waiter one), in the same lab; a hold whose
 * admission mode the driver lacks (`info.modes`, asked of a lab client) is skipped saying so.
 */
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { createLab, type Lab } from './netns.js';
import { startLabRedis } from './netns-engines.js';
import { assertSafe, PARTITION_PERMITS, startClient, type PartitionHold } from './partition-history.js';
import { holderCut, leaderCut, summary, type ScenarioEnv, type ScenarioResult } from './partition-scenarios.js';
import { removeDir, tempDir } from './processes.js';

/** A quorum engine started in a lab. */
export interface QuorumEngine {
  readonly url: string;
  /** The URL naming only the servers on `hosts`. */
  urlOf(hosts: readonly string[]): string;
  leader(): Promise<string>;
  healthy(): Promise<void>;
  dispose(): void;
}

export interface QuorumCasesOptions {
  /** For the case names and the report lines. */
  name: string;
  /** Start the engine on lab hosts s1, s2, s3. */
  start(lab: Lab, servers: readonly string[]): Promise<QuorumEngine>;
  /** The cut-off holder's deadline in ms (lease TTL, session timeout). */
  deadlineMs: number;
  /** The lock clients' `ttlMs`. */
  ttlMs: number;
  /**
   * Run only the mutex's "holder on a follower cut off from the leader" case (the one a
   * deadline computed from a follower's answers gets wrong); the others skip, saying why.
   */
  quick?: boolean;
}

/** The holds every partition case runs with, and the admission mode each needs beyond `exclusive`. */
export const PARTITION_HOLDS: ReadonlyArray<{ name: string; hold: PartitionHold; needs?: string }> = [
  { name: 'mutex', hold: { primitive: 'mutex' } },
  { name: 'read lock', hold: { primitive: 'read' }, needs: 'shared' },
  { name: 'write lock', hold: { primitive: 'write' }, needs: 'shared' },
  { name: `semaphore (all ${PARTITION_PERMITS} permits)`, hold: { primitive: 'semaphore', permits: PARTITION_PERMITS }, needs: 'permits' },
];

/** The driver's admission modes, asked of a lab client on `host` (what `info.modes` says there). */
export async function labModes(env: ScenarioEnv, host: string): Promise<string[]> {
  const c = await startClient(env.lab, host, { ...env.client, counterId: `${env.lab.id}-modes` });
  try {
    return await c.modes();
  } finally {
    await c.close();
  }
}

/**
 * Register `body` once per hold of {@link PARTITION_HOLDS} (a describe each); a hold the driver
 * cannot grant is skipped with the reason.
 */
export function forEachHold(
  env: () => ScenarioEnv,
  modes: () => readonly string[],
  body: (env: () => ScenarioEnv, name: string, guard: (ctx: TestContext) => void) => void,
  holds: typeof PARTITION_HOLDS = PARTITION_HOLDS,
): void {
  for (const h of holds) {
    const guard = (ctx: TestContext): void => {
      if (h.needs && !modes().includes(h.needs)) ctx.skip(`the driver does not grant the "${h.needs}" mode (info.modes = ${modes().join(', ')})`);
    };
    describe(h.name, () => body(() => ({ ...env(), hold: h.hold }), h.name, guard));
  }
}

/** Why a case skips in a quick run. */
const QUICK_SKIP = 'slow (about 10 s each): every case runs under npm run chaos:partition (DLOCK_CHAOS=1)';

/** Slack over a deadline for a loaded machine (timers fire late, not early). */
const SLACK_MS = 3000;
const SERVERS = ['s1', 's2', 's3'];

/**
 * The pass criteria of a holder cut off from a quorum: no violation in the history, told within
 * `deadlineMs` (+ slack) and before the waiter's grant, the waiter granted by the majority, the
 * cut-off holder's stale write refused, no grant on its side, every client granted after heal.
 */
export function expectHolderCutSafe(r: ScenarioResult, deadlineMs: number): void {
  if (r.waiterGrantMs === undefined) console.log(r.history.map((l) => JSON.stringify(l)).join('\n'));
  assertSafe(r.verdict);
  expect(r.toldMs, 'the cut-off holder was told').toBeDefined();
  expect(r.toldMs ?? Infinity).toBeLessThan(deadlineMs + SLACK_MS);
  expect(r.toldBeforeGrant, 'told before the waiter was granted').toBe(true);
  expect(r.waiterGrantMs, 'the majority side granted the waiter').toBeDefined();
  expect(r.verdict.staleRejected, "the cut-off holder's stale write was refused").toBeGreaterThanOrEqual(1);
  expect(r.minorityAcquire).toMatch(/^denied/);
  expect(r.afterHealGrants).toBe(r.afterHealClients);
}

/** Register the cases (inside a `describe`). */
export function quorumPartitionCases(o: QuorumCasesOptions): void {
  let lab: Lab;
  let engine: QuorumEngine;
  let env: ScenarioEnv;
  let dir: string;
  let modes: string[] = [];
  beforeAll(async () => {
    lab = await createLab([...SERVERS, 'c1', 'c2', 'res']);
    dir = tempDir(`dlock-partition-${o.name}-`);
    const [res] = await startLabRedis(lab, ['res']);
    engine = await o.start(lab, SERVERS);
    env = {
      lab,
      client: { lockUrl: engine.url, counterUrl: res?.url ?? '', ttlMs: o.ttlMs, dir },
      resourceHost: 'res',
      waitMs: 15_000,
      afterHeal: () => engine.healthy(),
    };
    modes = await labModes(env, 'c1');
  });
  afterAll(async () => {
    await lab?.dispose();
    engine?.dispose();
    if (dir) removeDir(dir);
  });

  forEachHold(
    () => env,
    () => modes,
    (e, what, guard) => {
      it('holder isolated from every server: told within its deadline, the waiter granted after, its stale write refused', async (ctx) => {
        guard(ctx);
        if (o.quick) ctx.skip(QUICK_SKIP);
        const r = await holderCut(e(), { sides: [['c1'], [...SERVERS, 'c2']], holder: 'c1', waiter: 'c2', minority: ['c1'], tellWithinMs: o.deadlineMs });
        console.log(summary(`${o.name} ${what}: isolate holder`, r));
        expectHolderCutSafe(r, o.deadlineMs);
      });

      // The holder's client names only the minority server, so that it is connected there when
      // the partition comes (with every server in its URL it may sit on the majority side and
      // merely lose its connection). A follower cut off from the leader goes on answering its
      // clients for a while (syncLimit × tickTime on ZooKeeper) while the leader expires their
      // sessions: the holder must not take those answers for the quorum's.
      for (const side of ['follower', 'leader'] as const) {
        const title =
          side === 'follower'
            ? '2/1 split, holder on a follower cut off from the leader: told before the majority grants the waiter, no grant on its side'
            : '2/1 split, holder on the leader, which is on the minority side: told, no grant on its side, the majority elects and grants the waiter';
        it(title, async (ctx) => {
          guard(ctx);
          if (o.quick && (side !== 'follower' || what !== 'mutex')) ctx.skip(QUICK_SKIP);
          const leader = await engine.leader();
          const alone = side === 'leader' ? leader : (SERVERS.filter((s) => s !== leader).at(-1) ?? 's3');
          const rest = SERVERS.filter((s) => s !== alone);
          const r = await holderCut(
            { ...e(), lockUrlOf: { c1: engine.urlOf([alone]) } },
            { sides: [[...rest, 'c2'], [alone, 'c1']], holder: 'c1', waiter: 'c2', minority: ['c1'], tellWithinMs: o.deadlineMs },
          );
          console.log(summary(`${o.name} ${what}: split 2/1, holder on the ${side} (${alone})`, r));
          // DLOCK_PARTITION_HISTORY=1: every client's history too (for a slow or failed case).
          if (process.env.DLOCK_PARTITION_HISTORY) console.log(r.history.map((l) => JSON.stringify(l)).join('\n'));
          expectHolderCutSafe(r, o.deadlineMs);
        });
      }

      it('leader isolated: the others elect a new one and serve, no overlap, no stale write, works after heal', async (ctx) => {
        guard(ctx);
        if (o.quick) ctx.skip(QUICK_SKIP);
        const leader = await engine.leader();
        const r = await leaderCut(e(), { leader, holder: 'c1', waiter: 'c2', holdMs: o.deadlineMs + SLACK_MS });
        console.log(summary(`${o.name} ${what}: isolate leader (${leader})`, r));
        if (r.waiterGrantMs === undefined) console.log(r.history.map((l) => JSON.stringify(l)).join('\n'));
        assertSafe(r.verdict);
        expect(r.toldBeforeGrant).toBe(true);
        expect(r.waiterGrantMs, 'the remaining majority granted the waiter').toBeDefined();
        expect(r.afterHealGrants).toBe(r.afterHealClients);
      });
    },
  );
}
