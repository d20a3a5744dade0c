/**
 * Redlock fencing tokens never go backwards under node failures (property test, fast-check),
 * on 3 real redis-servers with `appendfsync always`: random sequences of acquisitions by three
 * clients interleaved with a node going down (so that node counters drift apart and the token
 * write-back is exercised), coming back, being killed -9 and restarted with its data, or being
 * paused. Every granted token must be greater than every token granted before it.
 * The control (a node restarted WITHOUT its data) is the hazard test in redlock-faults.test.ts,
 * where the token does go back.
 * Then the paused-holder cases (test/support/paused-holder-cases.ts) on the same nodes, the counter
 * in Redis behind FencedRedisHash: a holder frozen past its TTL loses no increment with fenced
 * reads; the control with plain reads loses one.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { RedlockDriver } from '../../src/drivers/redlock/index.js';
import { QuorumError } from '../../src/errors.js';
import { describePausedHolder } from '../support/paused-holder-cases.js';
import { startRedlock } from '../support/redlock.js';

const nodes = await startRedlock({ nodes: 3, persistence: 'fsync-always' });
const drivers = [0, 1, 2].map(() => new RedlockDriver({ url: nodes.url, nodeTimeoutMs: 1000 }));
const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  await Promise.all(cleanup.map((c) => c()));
  await Promise.all(drivers.map((d) => d.close()));
  await nodes.stop();
});

type Step =
  | { op: 'acquire'; client: number }
  | { op: 'down'; node: number }
  | { op: 'up'; node: number }
  | { op: 'crash-restart'; node: number }
  | { op: 'pause-acquire-resume'; node: number; client: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('acquire' as const), client: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('down' as const), node: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('up' as const), node: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('crash-restart' as const), node: fc.integer({ min: 0, max: 2 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('pause-acquire-resume' as const),
      node: fc.integer({ min: 0, max: 2 }),
      client: fc.integer({ min: 0, max: 2 }),
    }),
  },
);

describe('redlock fencing tokens under node failures', () => {
  it('every granted token is greater than all earlier ones (fsync always)', async () => {
    let run = 0;
    const stats = { grants: 0, busy: 0, quorumErrors: 0, runs: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 4, maxLength: 14 }), async (steps) => {
        const key = `fence-prop:${run++}`;
        stats.runs++;
        let highest = 0n;
        const acquire = async (client: number): Promise<void> => {
          const d = drivers[client];
          if (!d) return;
          const owner = `h:1:c${client}:${run}${Math.random().toString(16).slice(2, 8)}`;
          try {
            const r = await d.tryAcquire({ key, owner, ttlMs: 5000 });
            if (!r.ok) {
              stats.busy++;
              return;
            }
            stats.grants++;
            expect(r.grant.token, `token after ${highest}`).toBeGreaterThan(highest);
            highest = r.grant.token;
            await d.release(key, owner).catch(() => false);
          } catch (e) {
            if (!(e instanceof QuorumError)) throw e;
            stats.quorumErrors++;
          }
        };
        try {
          for (const s of steps) {
            const down = nodes.nodes.filter((n) => !n.running).length;
            switch (s.op) {
              case 'acquire':
                await acquire(s.client);
                break;
              case 'down':
                // Keep a majority up, so that grants keep happening.
                if (down < 1) await nodes.nodes[s.node]?.kill9();
                break;
              case 'up':
                if (!nodes.nodes[s.node]?.running) await nodes.nodes[s.node]?.restart();
                break;
              case 'crash-restart':
                await nodes.nodes[s.node]?.restart();
                break;
              case 'pause-acquire-resume': {
                const n = nodes.nodes[s.node];
                if (!n?.running || down > 0) break;
                n.pause();
                try {
                  await acquire(s.client);
                } finally {
                  n.resume();
                }
                break;
              }
            }
          }
        } finally {
          await Promise.all(nodes.nodes.filter((n) => !n.running).map((n) => n.restart()));
        }
      }),
      { numRuns: 12, endOnFailure: true },
    );
    console.info(`[redlock] fencing property: ${JSON.stringify(stats)}`);
    expect(stats.grants).toBeGreaterThan(10);
  }, 240_000);

  it('write-back: a majority whose counters differ grants the highest, and raises the lagging node', async () => {
    const key = 'fence-writeback';
    // A driver of its own: connections of the shared ones may still be reconnecting to nodes the
    // property test restarted (ioredis retries within 1 s).
    const d = new RedlockDriver({ url: nodes.url });
    cleanup.push(() => d.close());
    const lock = d.lockKey(key);
    const read = async (i: number, k: string): Promise<string | null> => {
      const r = new Redis(nodes.nodes[i]?.url ?? '', { lazyConnect: true });
      try {
        await r.connect();
        return await r.get(k);
      } finally {
        r.disconnect();
      }
    };
    // Node 3 misses two grants: nodes 1 and 2 count to 2, node 3 stays at 0.
    await nodes.nodes[2]?.kill9();
    for (const i of [1, 2]) {
      const r = await d.tryAcquire({ key, owner: `h:1:wb:${i}`, ttlMs: 5000 });
      expect(r.ok && r.grant.token).toBe(BigInt(i));
      await d.release(key, `h:1:wb:${i}`);
    }
    await nodes.nodes[2]?.restart();
    // Now the majority is nodes 2 and 3: they answer 3 and 1.
    await nodes.nodes[0]?.kill9();
    const fresh = new RedlockDriver({ url: nodes.url });
    try {
      const r = await fresh.tryAcquire({ key, owner: 'h:1:wb:3', ttlMs: 5000 });
      expect(r.ok).toBe(true);
      expect(r.ok && r.grant.token).toBe(3n);
      // Node 3 was brought up to the quorum's token, and its lock value carries it.
      expect(await read(2, `${lock}:fence`)).toBe('3');
      expect(await read(2, lock)).toBe('h:1:wb:3|3');
      expect((await fresh.inspect(key))?.token).toBe(3n);
      await fresh.release(key, 'h:1:wb:3');
      // So a later majority of nodes 1 (counter 2) and 3 gives 4, not 3.
      await nodes.nodes[0]?.restart();
      await nodes.nodes[1]?.kill9();
      const again = new RedlockDriver({ url: nodes.url });
      try {
        const r2 = await again.tryAcquire({ key, owner: 'h:1:wb:4', ttlMs: 5000 });
        expect(r2.ok && r2.grant.token).toBe(4n);
        await again.release(key, 'h:1:wb:4');
      } finally {
        await again.close();
      }
    } finally {
      await fresh.close();
      await Promise.all(nodes.nodes.filter((n) => !n.running).map((n) => n.restart()));
    }
  }, 60_000);
});

describePausedHolder({
  name: 'redlock',
  url: () => nodes.url,
  counter: 'redis',
  counterUrl: () => inject('redisUrl'),
  ttlMs: 600,
  longPauseMs: 900,
  longReason: 'expired',
});
