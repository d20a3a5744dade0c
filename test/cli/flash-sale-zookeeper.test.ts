/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on ZooKeeper: a real standalone server
 * started for this file. The stock is a znode written blind and orders are sequential znodes, so
 * the run without the lock really oversells; afterwards no demo znode may be left.
 */
import { expect } from 'vitest';
import { connect } from '../../src/connect.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { dlock } from './flash-sale-cases.js';
import { startZooKeeper, zooKeeperAdmin } from '../support/zookeeper.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'zookeeper',
  start: () => startZooKeeper(),
  stop: (zk) => zk.stop(),
  url: (zk) => zk.url,
  checks: [
    {
      title: 'dlock inspect shows every reader, their tokens and the queued writer',
      run: async (zk) => {
        const [a, b, w] = [await connect(zk.url), await connect(zk.url), await connect(zk.url)];
        try {
          const r1 = await new ReadWriteLock(a, 'cli:rw').read.acquire();
          const r2 = await new ReadWriteLock(b, 'cli:rw').read.acquire();
          const writing = new ReadWriteLock(w, 'cli:rw').write.acquire({ waitMs: 30_000 });
          await new Promise((r) => setTimeout(r, 300));
          const text = await dlock(['inspect', 'cli:rw', '--url', zk.url]);
          expect(text.code, text.stderr).toBe(0);
          expect(text.stdout).toContain('lock "cli:rw" is held by readers (2); 1 waiting');
          expect(text.stdout).toContain(r1.token.toString());
          const json = await dlock(['inspect', 'cli:rw', '--url', zk.url, '--json']);
          const body = JSON.parse(json.stdout.trim()) as { mode: string; waiters: number; holders: Array<{ owner: string; mode: string }> };
          expect(body.mode).toBe('shared');
          expect(body.waiters).toBe(1);
          expect(body.holders.map((h) => h.owner).sort()).toEqual([r1.owner, r2.owner].sort());
          await Promise.all([r1.release(), r2.release()]);
          await (await writing).release();
        } finally {
          await Promise.all([a.close(), b.close(), w.close()]);
        }
      },
    },
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
