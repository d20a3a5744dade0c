/**
 * ZooKeeper operator steps on a real standalone server, beyond the conformance suite: list() of a
 * key whose queue is longer than a page, forceRelease() of semaphore permit holders and of a
 * queue one holder at a time, and `create: false` (inspect, list, forceRelease under a root that
 * does not exist create nothing; a lock there is refused with NoSuchDatabaseError).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { ZooKeeperDriver } from '../../src/drivers/zookeeper/index.js';
import { NoSuchDatabaseError } from '../../src/errors.js';
import { defineQueueAdminCases } from '../support/admin-cases.js';
import { startZooKeeper, zooKeeperAdmin, type ZooKeeperAdmin, type ZooKeeperCluster } from '../support/zookeeper.js';

let zk: ZooKeeperCluster;
let admin: ZooKeeperAdmin;
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  zk = await startZooKeeper();
  admin = await zooKeeperAdmin(zk.connectionString);
});
afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((c) => c()));
});
afterAll(async () => {
  await admin.close();
  await zk.stop();
});

describe('zookeeper list() and forceRelease()', () => {
  defineQueueAdminCases(() => new ZooKeeperDriver({ url: zk.url, sessionTimeoutMs: 4000 }));

  it('create: false under a root that does not exist: reads find no locks and nothing is created; a lock is refused', async () => {
    const root = `/fresh-${randomBytes(4).toString('hex')}`;
    const c = await connect(`zookeeper://${zk.connectionString}${root}?sessionTimeoutMs=4000`, { create: false });
    closers.push(() => c.close());
    expect(await c.list('')).toEqual([]);
    expect(await c.inspect('k')).toBeNull();
    expect(await c.forceRelease('k')).toEqual({ released: 0, fence: 0n });
    const err = await c.acquire('k', { waitMs: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoSuchDatabaseError);
    expect((err as Error).message).toContain('create: false');
    expect(await admin.children('/')).not.toContain(root.slice(1));
    // The same URL with create (the default) makes the root and locks there.
    const d = await connect(`zookeeper://${zk.connectionString}${root}?sessionTimeoutMs=4000`);
    closers.push(() => d.close());
    const lease = await d.acquire('k', { ttlMs: 10_000 });
    expect((await c.list('')).map((i) => i.key)).toEqual(['k']);
    expect((await c.forceRelease('k')).released).toBe(1);
    expect(await c.inspect('k')).toBeNull();
    expect(await lease.release()).toBe(false);
  });
});
