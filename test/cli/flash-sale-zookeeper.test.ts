/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on ZooKeeper: a real standalone server
 * started for this file. The stock is a znode written blind and orders are sequential znodes, so
 * the run without the lock really oversells; afterwards no demo znode may be left.
 */
import { expect } from 'vitest';
import { startZooKeeper, zooKeeperAdmin } from '../support/zookeeper.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'zookeeper',
  start: () => startZooKeeper(),
  stop: (zk) => zk.stop(),
  url: (zk) => zk.url,
  checks: [
    {
      title: 'leaves no demo znodes behind',
      run: async (zk) => {
        const admin = await zooKeeperAdmin(zk.connectionString);
        try {
          expect(await admin.children('/dlock/demo/flash-sale')).toEqual([]);
        } finally {
          await admin.close();
        }
      },
    },
  ],
  unreachable: { url: 'zookeeper://127.0.0.1:1', message: /Cannot reach ZooKeeper at zookeeper:\/\/127\.0\.0\.1:1/ },
});
