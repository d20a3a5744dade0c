/**
 * The conformance suite over Redlock on 3 independent redis-servers started for this file.
 * Behind-the-back removal deletes the key on every node; `isolated` is a private set of 3 nodes
 * that a test stops (all of them) and restarts on the same ports.
 */
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';
import { defineConformanceSuite, type IsolatedEngine } from './suite.js';

const nodes = await startRedlock({ nodes: 3 });
const admins = nodes.nodes.map((n) => new Redis(n.url, { lazyConnect: true }));
/** Every driver this file created, to sum their open watches. */
const created: RedlockDriver[] = [];
const names = new RedlockDriver({ url: nodes.url });

afterAll(async () => {
  await names.close();
  for (const a of admins) a.disconnect();
  await nodes.stop();
});

function open(url: string): Promise<RedlockDriver> {
  const d = new RedlockDriver({ url });
  created.push(d);
  return Promise.resolve(d);
}

async function isolatedNodes(): Promise<IsolatedEngine> {
  const own: RedlockNodes = await startRedlock({ nodes: 3 });
  return {
    create: () => open(own.url),
    makeUnavailable: async () => {
      await Promise.all(own.nodes.map((n) => n.stop()));
    },
    restore: async () => {
      await Promise.all(own.nodes.map((n) => n.restart()));
    },
    dispose: () => own.stop(),
    operations: async () => {
      let calls = 0;
      for (const n of own.nodes) {
        const probe = new Redis(n.url, { lazyConnect: true });
        try {
          await probe.connect();
          const stats = await probe.info('commandstats');
          for (const m of stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(m[2]);
        } finally {
          probe.disconnect();
        }
      }
      return calls;
    },
  };
}

defineConformanceSuite({
  name: 'redlock',
  create: () => open(nodes.url),
  url: () => nodes.url,
  removeBehindBack: async (key) => {
    const lock = names.lockKey(key);
    const removed = (await Promise.all(admins.map((a) => a.del(lock)))).reduce((s, n) => s + n, 0);
    if (removed < names.quorum) throw new Error(`DEL ${lock} removed it on ${removed} nodes: the lock was not held by a majority`);
  },
  waitResidue: async (key) => {
    const channel = `${names.lockKey(key)}:released`;
    const residue: Record<string, number> = { openWatches: created.reduce((n, d) => n + d.openWatches, 0) };
    for (const [i, a] of admins.entries()) {
      const reply = (await a.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
      residue[`node${i + 1} NUMSUB ${channel}`] = Number(reply[1]);
    }
    return residue;
  },
  isolated: isolatedNodes,
});
