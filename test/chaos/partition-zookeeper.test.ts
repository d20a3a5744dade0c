/**
 * Network partitions of a 3-server ZooKeeper ensemble (reliability.md plan item 6, issue 14):
 * servers and clients each in their own network namespace (test/support/netns.ts), partitions made
 * by nftables drop rules in the lab's bridge; the cases and their pass criteria are in
 * test/support/partition-cases.ts. The cut-off holder's deadline is its session timeout (2 s).
 * Slow (about 60 s): every case runs under `npm run chaos:partition` (DLOCK_CHAOS=1); `npm test`
 * runs the mutex's "holder on a follower cut off from the leader" case alone.
 */
import { describe } from 'vitest';
import { netnsSupport } from '../support/netns.js';
import { startLabZooKeeper } from '../support/netns-engines.js';
import { quorumPartitionCases } from '../support/partition-cases.js';

const cap = netnsSupport();
const SESSION_MS = 2000;
const why = !cap.ok ? ` (skipped: ${cap.reason})` : '';
// Without DLOCK_CHAOS (npm test, CI) only the mutex's "holder on a follower" split runs; the
// others are slow (about 45 s together) and say so when they skip.
const quick = !process.env.DLOCK_CHAOS;

describe.skipIf(why !== '')(`ZooKeeper partitions in network namespaces${why}`, () => {
  quorumPartitionCases({
    name: 'zookeeper',
    start: (lab, servers) => startLabZooKeeper(lab, servers, { query: `sessionTimeoutMs=${SESSION_MS}` }),
    deadlineMs: SESSION_MS,
    ttlMs: 4000,
    quick,
  });
});
