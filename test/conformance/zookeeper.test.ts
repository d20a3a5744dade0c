/**
 * The conformance suite on a real standalone ZooKeeper server (Debian package `zookeeper`) started
 * for this file. In-process drivers use 4 s sessions; forked workers use 1 s sessions, so that a
 * worker killed with kill -9 frees its lock within the suite's bound (TTL 1 s + 1.5 s).
 */
import { afterAll } from 'vitest';
import { ZooKeeperDriver } from '../../src/drivers/zookeeper/index.js';
import { startZooKeeper, zooKeeperAdmin } from '../support/zookeeper.js';
import { defineConformanceSuite } from './suite.js';

const zk = await startZooKeeper();
const admin = await zooKeeperAdmin(zk.connectionString);
/** Every driver this file created, to sum their waits and watch callbacks. */
const created: ZooKeeperDriver[] = [];
/** Only asked for znode paths. */
const names = new ZooKeeperDriver({ url: zk.url });

afterAll(async () => {
  await admin.close();
  await zk.stop();
});

/** A driver whose session is already connected, so that a test's first call is not a handshake. */
async function open(url: string): Promise<ZooKeeperDriver> {
  const d = new ZooKeeperDriver({ url: `${url}?sessionTimeoutMs=4000` });
  created.push(d);
  await d.connect();
  return d;
}

defineConformanceSuite({
  name: 'zookeeper',
  create: () => open(zk.url),
  url: () => `${zk.url}?sessionTimeoutMs=1000`,
  removeBehindBack: async (key) => {
    const dir = names.lockPath(key);
    const holder = (await admin.children(dir)).sort((a, b) => a.slice(-10).localeCompare(b.slice(-10)))[0];
    if (!holder) throw new Error(`no znode under ${dir}: the lock was not there`);
    await admin.remove(`${dir}/${holder}`);
  },
  waitResidue: async (key) => {
    let waits = 0;
    let watchCallbacks = 0;
    for (const d of created) {
      waits += d.waitResidue.waits;
      watchCallbacks += d.waitResidue.watchCallbacks;
    }
    return { queueZnodes: (await admin.children(names.lockPath(key))).length, waits, watchCallbacks };
  },
  isolated: async () => {
    const own = await startZooKeeper();
    const mine: ZooKeeperDriver[] = [];
    return {
      create: async () => {
        const d = await open(own.url);
        mine.push(d);
        return d;
      },
      // kill -9: the clients see their connection drop; restore() restarts the server on the same
      // port with the same data, so sessions that have not timed out carry on.
      makeUnavailable: () => own.servers[0]!.kill9(),
      restore: () => own.servers[0]!.restart(),
      dispose: () => own.stop(),
      // Requests the drivers sent for lock operations (ZooKeeper cannot count them per kind).
      operations: () => Promise.resolve(mine.reduce((n, d) => n + d.requestCount, 0)),
    };
  },
});
