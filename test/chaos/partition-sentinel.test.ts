/**
 * Redis Sentinel failover after a network partition isolates the master (reliability.md plan
 * item 6, issue 14): master, replica, 3 Sentinels and the clients each in their own network
 * namespace (test/support/netns.ts), the partition made by nftables drop rules in the lab's
 * bridge. The holder's renewals cannot reach the isolated master, the Sentinels promote the
 * replica, the waiter is granted by the new master. Pass: no overlap, no stale write accepted by
 * the fenced resource, the waiter granted during the partition, every client granted after the
 * heal (when the old master has come back as a replica).
 * Slow: runs under `npm run chaos:partition` (DLOCK_CHAOS=1), not in `npm test`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, netnsSupport, type Lab } from '../support/netns.js';
import { startLabRedis, startLabSentinel, type LabSentinel } from '../support/netns-engines.js';
import { assertSafe } from '../support/partition-history.js';
import { leaderCut, summary, type ScenarioEnv } from '../support/partition-scenarios.js';
import { removeDir, tempDir } from '../support/processes.js';

const cap = netnsSupport();
const why = !cap.ok ? ` (skipped: ${cap.reason})` : process.env.DLOCK_CHAOS ? '' : ' (skipped: slow; run with DLOCK_CHAOS=1, npm run chaos:partition)';
const TTL_MS = 2000;

let lab: Lab;
let sentinel: LabSentinel;
let env: ScenarioEnv;
let dir: string;

describe.skipIf(why !== '')(`Redis Sentinel partitions in network namespaces${why}`, () => {
  beforeAll(async () => {
    lab = await createLab(['m1', 'm2', 's1', 's2', 's3', 'c1', 'c2', 'res']);
    dir = tempDir('dlock-partition-sentinel-');
    const [res] = await startLabRedis(lab, ['res']);
    sentinel = await startLabSentinel(lab, ['m1', 'm2'], ['s1', 's2', 's3']);
    env = { lab, client: { lockUrl: sentinel.url, counterUrl: res?.url ?? '', ttlMs: TTL_MS, dir }, resourceHost: 'res', waitMs: 15_000 };
  });
  afterAll(async () => {
    await lab?.dispose();
    sentinel?.dispose();
    if (dir) removeDir(dir);
  });

  it('master isolated: the holder is told, the Sentinels promote the replica, the waiter is granted there, no stale write', async () => {
    const old = await sentinel.master();
    let promoted = '';
    env.afterHeal = async () => {
      await sentinel.replicaAgain(old);
    };
    const failover = sentinel.failedOver(old).then((h) => (promoted = h));
    const r = await leaderCut(env, { leader: old, holder: 'c1', waiter: 'c2', holdMs: TTL_MS + 3000 });
    await failover;
    console.log(summary(`sentinel isolate master (${old} -> ${promoted})`, r));
    if (r.waiterGrantMs === undefined) console.log(r.history.map((l) => JSON.stringify(l)).join('\n'));
    assertSafe(r.verdict);
    expect(promoted).not.toBe(old);
    expect(r.toldBeforeGrant).toBe(true);
    expect(r.waiterGrantMs, 'the new master granted the waiter').toBeDefined();
    expect(r.afterHealGrants).toBe(r.afterHealClients);
  });
});
