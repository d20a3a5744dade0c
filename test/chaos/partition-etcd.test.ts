/**
 * Network partitions of a 3-member etcd cluster (reliability.md plan item 6, issue 14): members and
 * clients each in their own network namespace (test/support/netns.ts), partitions made by
 * nftables drop rules in the lab's bridge. Cases: the holder isolated from every member; the Raft
 * leader isolated from everyone; a 2/1 split with the holder on the minority side (with one
 * member) and the waiter on the majority side. Pass: no stale write accepted by the fenced
 * resource, no grant on the minority side, the cut-off holder told before the waiter's grant and
 * within its lease TTL (+ slack for a loaded machine), and every client granted again after heal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, netnsSupport, type Lab } from '../support/netns.js';
import { startLabEtcd, startLabRedis, type LabEtcd } from '../support/netns-engines.js';
import { assertSafe } from '../support/partition-history.js';
import { holderCut, leaderCut, summary, type ScenarioEnv, type ScenarioResult } from '../support/partition-scenarios.js';
import { removeDir, tempDir } from '../support/processes.js';

const cap = netnsSupport();
/** etcd lease TTL (s): the cut-off holder's deadline. */
const LEASE_TTL_S = 2;
/** Slack over the deadline for a loaded machine (timers fire late, not early). */
const SLACK_MS = 3000;

let lab: Lab;
let etcd: LabEtcd;
let env: ScenarioEnv;
let dir: string;

describe.skipIf(!cap.ok)(`etcd partitions in network namespaces${cap.ok ? '' : ` (skipped: ${cap.reason})`}`, () => {
  beforeAll(async () => {
    lab = await createLab(['e1', 'e2', 'e3', 'c1', 'c2', 'res']);
    dir = tempDir('dlock-partition-etcd-');
    const [res] = await startLabRedis(lab, ['res']);
    etcd = await startLabEtcd(lab, ['e1', 'e2', 'e3'], { query: `leaseTtlS=${LEASE_TTL_S}&timeoutMs=1500` });
    env = {
      lab,
      client: { lockUrl: etcd.url, counterUrl: res?.url ?? '', ttlMs: 4000, dir },
      resourceHost: 'res',
      waitMs: 15_000,
      afterHeal: () => etcd.healthy(),
    };
  });
  afterAll(async () => {
    await lab?.dispose();
    etcd?.dispose();
    if (dir) removeDir(dir);
  });

  const expectHolderCutSafe = (r: ScenarioResult): void => {
    if (r.waiterGrantMs === undefined) console.log(r.history.map((l) => JSON.stringify(l)).join('\n'));
    assertSafe(r.verdict);
    expect(r.toldMs, 'the cut-off holder was told').toBeDefined();
    expect(r.toldMs ?? Infinity).toBeLessThan(LEASE_TTL_S * 1000 + SLACK_MS);
    expect(r.toldBeforeGrant, 'told before the waiter was granted').toBe(true);
    expect(r.waiterGrantMs, 'the majority side granted the waiter').toBeDefined();
    expect(r.verdict.staleRejected, "the cut-off holder's stale write was refused").toBeGreaterThanOrEqual(1);
    expect(r.minorityAcquire).toMatch(/^denied/);
    expect(r.afterHealGrants).toBe(r.afterHealClients);
  };

  it('holder isolated from every member: told within its lease TTL, the waiter granted after, its stale write refused', async () => {
    const r = await holderCut(env, { sides: [['c1'], ['e1', 'e2', 'e3', 'c2']], holder: 'c1', waiter: 'c2', minority: ['c1'], tellWithinMs: LEASE_TTL_S * 1000 });
    console.log(summary('etcd isolate holder', r));
    expectHolderCutSafe(r);
  });

  it('2/1 split, holder with the minority member: told, no grant on its side, the majority grants the waiter', async () => {
    const r = await holderCut(env, { sides: [['e1', 'e2', 'c2'], ['e3', 'c1']], holder: 'c1', waiter: 'c2', minority: ['c1'], tellWithinMs: LEASE_TTL_S * 1000 });
    console.log(summary('etcd split 2/1', r));
    expectHolderCutSafe(r);
  });

  it('leader isolated: a new leader serves the clients, no overlap, no stale write, works after heal', async () => {
    const leader = await etcd.leader();
    const r = await leaderCut(env, { leader, holder: 'c1', waiter: 'c2', holdMs: LEASE_TTL_S * 1000 + SLACK_MS });
    console.log(summary(`etcd isolate leader (${leader})`, r));
    assertSafe(r.verdict);
    expect(r.toldBeforeGrant).toBe(true);
    expect(r.waiterGrantMs, 'the remaining majority granted the waiter').toBeDefined();
    expect(r.afterHealGrants).toBe(r.afterHealClients);
  });
});
