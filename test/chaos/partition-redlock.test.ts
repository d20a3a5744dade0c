/**
 * A network partition of Redlock over 5 independent Redis nodes (reliability.md plan item 6,
 * issue 14): every node and client in its own network namespace (test/support/netns.ts), the
 * partition made by nftables drop rules in the lab's bridge. The nodes split 3/2 with a client on
 * each side; the holder is on the 2-node side, the waiter on the 3-node side. Pass: the holder is
 * told (its renewals cannot reach a majority) within its TTL (+ slack) and before the waiter's
 * grant, its stale write is refused by the fenced resource, no grant on its side, every client
 * granted again after heal. For a mutex, a read lock (the waiter takes the write side), a write
 * lock and a semaphore, in the same lab; what the driver cannot grant (`info.modes`: Redlock has
 * no permits mode) is skipped saying so. `npm test` runs the mutex only (the other holds add
 * about 10 s each): DLOCK_CHAOS=1 (`npm run chaos:partition`, `npm run chaos`) runs them all.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { createLab, netnsSupport, type Lab } from '../support/netns.js';
import { startLabRedis } from '../support/netns-engines.js';
import { expectHolderCutSafe, forEachHold, labModes, PARTITION_HOLDS } from '../support/partition-cases.js';
import { holderCut, summary, type ScenarioEnv } from '../support/partition-scenarios.js';
import { removeDir, tempDir } from '../support/processes.js';

const cap = netnsSupport();
const TTL_MS = 2000;
const NODES = ['r1', 'r2', 'r3', 'r4', 'r5'];
const HOLDS = process.env.DLOCK_CHAOS ? PARTITION_HOLDS : PARTITION_HOLDS.filter((h) => h.hold.primitive === 'mutex');

let lab: Lab;
let env: ScenarioEnv;
let dir: string;
let modes: string[] = [];

describe.skipIf(!cap.ok)(`Redlock partitions in network namespaces${cap.ok ? '' : ` (skipped: ${cap.reason})`}`, () => {
  beforeAll(async () => {
    lab = await createLab([...NODES, 'c1', 'c2', 'res']);
    dir = tempDir('dlock-partition-redlock-');
    const servers = await startLabRedis(lab, [...NODES, 'res']);
    const res = servers.find((s) => s.host === 'res');
    const nodes = servers.filter((s) => s.host !== 'res');
    env = {
      lab,
      client: { lockUrl: `redlock://${nodes.map((n) => n.hostPort).join(',')}?nodeTimeoutMs=500`, counterUrl: res?.url ?? '', ttlMs: TTL_MS, dir },
      resourceHost: 'res',
      waitMs: 15_000,
    };
    // Only needed to skip a hold (npm test runs the mutex only: no client to spare there).
    if (HOLDS.some((h) => h.needs)) modes = await labModes(env, 'c1');
  });
  afterAll(async () => {
    await lab?.dispose();
    if (dir) removeDir(dir);
  });

  forEachHold(
    () => env,
    () => modes,
    (e, what, guard) => {
      it('5 nodes split 3/2, holder on the 2-node side: told within its TTL, the 3-node side grants the waiter after, stale write refused', async (ctx) => {
        guard(ctx);
        const r = await holderCut(e(), { sides: [['r1', 'r2', 'r3', 'c1'], ['r4', 'r5', 'c2']], holder: 'c2', waiter: 'c1', minority: ['c2'], tellWithinMs: TTL_MS });
        console.log(summary(`redlock ${what}: split 3/2`, r));
        expectHolderCutSafe(r, TTL_MS);
      });
    },
    HOLDS,
  );
});
