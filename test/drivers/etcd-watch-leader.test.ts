/**
 * The etcd driver's deletion watches ask for a leader (src/drivers/etcd/watch.ts, gRPC metadata
 * `hasleader: true`): a member that lost its leader fails such a stream, so the waiters read the
 * queue again (through a member that has one) instead of waiting on a stream that will never
 * carry the majority's deletions. Real 3-member cluster on loopback; the member a client talks to
 * loses its leader when the two others are paused (SIGSTOP, resumed after). The control is a plain
 * watch stream on the same member, opened at the same time: still open when ours has failed.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeletionWatches } from '../../src/drivers/etcd/watch.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';

describe('etcd deletion watches on a member that loses its leader', () => {
  let cluster: EtcdCluster;
  beforeAll(async () => {
    cluster = await startEtcdCluster();
  });
  afterAll(async () => {
    for (const m of cluster?.members ?? []) m.resume();
    await cluster?.dispose();
  });

  it('the watch stream fails (the waiter is woken to read again), a plain stream stays open and silent', async () => {
    const leader = await cluster.leader();
    const alone = cluster.members.find((m) => m !== leader);
    if (!alone) throw new Error('no follower');
    const client = new Etcd3({ hosts: alone.endpoint });
    const watches = new DeletionWatches(client);
    try {
      const key = Buffer.from(`watch-leader-${Date.now()}`);
      await client.put(key.toString()).value('x');
      let woken: { deleted: boolean; at: number } | undefined;
      const w = watches.watch(key, (deleted) => (woken = { deleted, at: Date.now() }));
      await w.ready;
      // The control: etcd3's raw stream without the metadata, on the same member.
      const plain = await client.watchClient.watch();
      let plainEnded = false;
      plain.on('error', () => (plainEnded = true));
      plain.on('end', () => (plainEnded = true));
      plain.on('data', () => undefined);
      plain.write({ create_request: { key, watch_id: '1' } });
      const pausedAt = Date.now();
      for (const m of cluster.members) if (m !== alone) m.pause();
      try {
        const limit = pausedAt + 30_000;
        while (!woken && Date.now() < limit) await new Promise((r) => setTimeout(r, 50));
      } finally {
        for (const m of cluster.members) m.resume();
      }
      expect(woken, 'the watch was woken once its member had no leader').toBeDefined();
      expect(woken?.deleted).toBe(false);
      expect(plainEnded, 'the plain stream on the same member is still open').toBe(false);
      plain.end();
      plain.cancel();
    } finally {
      watches.close();
      client.close();
    }
  });
});
