/**
 * Fencing with ZooKeeper locks (the paused-holder cases, test/support/paused-holder-cases.ts; the
 * counter lives in Redis behind FencedRedisHash). The lease's TTL is 600 ms, the ZooKeeper session
 * timeout 4 s (the most tickTime 200 allows). Short pause (1200 ms): the session and its znode
 * outlive the pause; resumed past its TTL, the holder's core gives the lock back and the next
 * holder reads before the stale write. Long pause: the session expires on the server, its znode
 * goes, the lock moves on during the pause.
 */
import { afterAll, beforeAll, inject } from 'vitest';
import { describePausedHolder } from '../support/paused-holder-cases.js';
import { startZooKeeper, type ZooKeeperCluster } from '../support/zookeeper.js';

let zk: ZooKeeperCluster;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

describePausedHolder({
  name: 'zookeeper',
  url: () => `${zk.url}?sessionTimeoutMs=4000`,
  counter: 'redis',
  counterUrl: () => inject('redisUrl'),
  ttlMs: 600,
  shortPauseMs: 1200,
  longPauseMs: 1200,
});
