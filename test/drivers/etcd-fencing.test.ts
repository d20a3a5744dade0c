/**
 * Fencing with etcd locks (the paused-holder cases, test/support/paused-holder-cases.ts; the
 * counter lives in Redis behind FencedRedisHash). The lease's TTL is 600 ms, etcd's session lease
 * 3 s. Short pause (1000 ms): etcd keeps the frozen holder's session and lock; resumed past its
 * TTL, the holder's core gives the lock back and the next holder reads before the stale write.
 * Long pause: the session lease expires on the server, the lock moves on during the pause.
 */
import { afterAll, inject } from 'vitest';
import { startEtcd } from '../support/etcd.js';
import { describePausedHolder } from '../support/paused-holder-cases.js';

const server = await startEtcd({ query: 'leaseTtlS=3' });
afterAll(async () => {
  await server.dispose();
});

describePausedHolder({ name: 'etcd', url: () => server.url, counter: 'redis', counterUrl: () => inject('redisUrl'), ttlMs: 600, shortPauseMs: 1000, longPauseMs: 1000 });
