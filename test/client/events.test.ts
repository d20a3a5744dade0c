/**
 * The client's event stream (src/core/events.ts) on a real Redis server and on the embedded
 * SQLite default: what each event carries, that values are right (not only present), and that a
 * listener that throws breaks nothing.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import type { LockClient } from '../../src/core/client.js';
import type { LockEventMap, LockEventName } from '../../src/core/events.js';
import { LockClient as Client } from '../../src/core/client.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { LockLostError } from '../../src/errors.js';
import { removeDir, tempDir } from '../support/processes.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startSqliteBlocker } from '../support/sqlite.js';

/** Every event of `client`, in order, as [name, event]. */
function record(client: LockClient): Array<[LockEventName, unknown]> {
  const seen: Array<[LockEventName, unknown]> = [];
  const names: LockEventName[] = ['acquired', 'waiting', 'not-acquired', 'released', 'lost', 'renewal-failed', 'handed-over', 'unavailable', 'session'];
  for (const n of names) client.on(n, (e) => seen.push([n, e]));
  return seen;
}

function only<K extends LockEventName>(seen: Array<[LockEventName, unknown]>, name: K): Array<LockEventMap[K]> {
  return seen.filter(([n]) => n === name).map(([, e]) => e as LockEventMap[K]);
}

describe('client events', () => {
  let redis: RedisServer;
  let dir: string;
  beforeAll(async () => {
    redis = await startRedis();
    dir = tempDir('dlock-events-');
  });
  afterAll(async () => {
    await redis?.stop();
    if (dir) removeDir(dir);
  });

  for (const engine of ['redis', 'sqlite'] as const) {
    it(`${engine}: acquired (wait time), waiting, released (hold time), not-acquired (busy, timeout) carry the right values`, async () => {
      const url = engine === 'redis' ? redis.url : `sqlite:${dir}/events.db`;
      const a = await connect(url);
      const b = await connect(url);
      const seenA = record(a);
      const seenB = record(b);
      try {
        const key = `ev:${engine}:${Math.random()}`;
        const lease = await a.acquire(key, { ttlMs: 5000 });
        expect(await b.tryAcquire(key)).toBeNull();
        const waited = b.acquire(key, { ttlMs: 5000, waitMs: 10_000 });
        await sleep(300);
        await lease.release();
        const second = await waited;
        await second.release();
        await a.acquire(key, { ttlMs: 5000 }).then((l) => b.acquire(key, { waitMs: 200 }).catch(() => l.release()));

        const [acqA] = only(seenA, 'acquired');
        expect(acqA).toMatchObject({ key, engine: engine === 'redis' ? 'redis' : 'sqlite', owner: lease.owner, token: lease.token, waited: false, reentrant: false });
        expect(acqA?.waitMs).toBeLessThan(1000);
        const relA = only(seenA, 'released')[0];
        expect(relA).toMatchObject({ key, owner: lease.owner, token: lease.token, ok: true });
        expect(relA?.holdMs).toBeGreaterThanOrEqual(250);

        const notB = only(seenB, 'not-acquired');
        expect(notB.map((e) => e.outcome)).toEqual(['busy', 'timeout']);
        expect(notB[1]?.waitMs).toBeGreaterThanOrEqual(190);
        expect(only(seenB, 'waiting').length).toBe(2);
        const acqB = only(seenB, 'acquired')[0];
        expect(acqB).toMatchObject({ key, owner: second.owner, token: second.token, waited: true });
        expect(acqB?.waitMs).toBeGreaterThanOrEqual(250);
        expect(acqB?.token).toBeGreaterThan(lease.token);
      } finally {
        await a.close();
        await b.close();
      }
    });
  }

  it('lost (with reason) and renewal-failed while the engine refuses writes; release after the loss is false at once; a throwing listener breaks nothing', async () => {
    const path = `${dir}/lost.db`;
    const client = await connect(`sqlite:${path}`);
    client.on('acquired', () => {
      throw new Error('a broken listener');
    });
    const seen = record(client);
    const blocker = await startSqliteBlocker(path);
    try {
      const lease = await client.acquire('ev:lost', { ttlMs: 1500 });
      await blocker.lock();
      const reason = await new Promise<unknown>((resolve) => lease.signal.addEventListener('abort', () => resolve(lease.signal.reason), { once: true }));
      expect(reason).toBeInstanceOf(LockLostError);
      const lost = only(seen, 'lost');
      expect(lost).toHaveLength(1);
      expect(lost[0]).toMatchObject({ key: 'ev:lost', owner: lease.owner, token: lease.token, reason: 'expired' });
      expect(lost[0]?.holdMs).toBeGreaterThan(1000);
      const failed = only(seen, 'renewal-failed');
      expect(failed.length).toBeGreaterThanOrEqual(1);
      expect(failed[0]).toMatchObject({ key: 'ev:lost', token: lease.token });
      // No renewal after the loss.
      const failures = failed.length;
      await sleep(600);
      expect(only(seen, 'renewal-failed').length).toBe(failures);
      // Released after the loss: false at once (the engine is still locked), and the event says so.
      const t0 = performance.now();
      expect(await lease.release()).toBe(false);
      expect(performance.now() - t0).toBeLessThan(200);
      expect(only(seen, 'released')[0]).toMatchObject({ ok: false, key: 'ev:lost' });
    } finally {
      await blocker.unlock().catch(() => undefined);
      await blocker.stop();
      await client.close();
    }
  });

  it('every lock event names the mode and the permits of its acquisition (memory driver)', async () => {
    const client = new Client(new MemoryDriver());
    const seen = record(client);
    try {
      const w = await client.acquire('ev:mode', { ttlMs: 5000 });
      const r = client.acquire('ev:mode', { admission: { mode: 'shared' }, waitMs: 5000 });
      await sleep(20);
      await w.release();
      await (await r).release();
      expect(await client.tryAcquire('ev:pool', { admission: { mode: 'permits', limit: 4, permits: 3 } }).then((l) => l?.release())).toBe(true);
      const modes = seen.filter(([n]) => n !== 'unavailable' && n !== 'session').map(([n, e]) => [n, (e as LockEventMap['waiting']).mode, (e as LockEventMap['waiting']).permits]);
      expect(modes).toEqual([
        ['acquired', 'exclusive', 1],
        ['waiting', 'shared', 1],
        ['handed-over', 'shared', 1], // the memory driver hands the key to its queue on release
        ['released', 'exclusive', 1],
        ['acquired', 'shared', 1],
        ['released', 'shared', 1],
        ['acquired', 'permits', 3],
        ['released', 'permits', 3],
      ]);
    } finally {
      await client.close();
    }
  });
});
