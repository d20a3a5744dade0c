/**
 * Chaos scenario 11 (reliability.md): fair mode. A holder keeps the primitive (all 3 permits of
 * the semaphore); 20 waiters queue with `fair: true`, 150 ms apart, each on its own client;
 * waiter 5 is a forked process killed with kill -9 while queued (on the process-local memory
 * engine: its client is closed instead) and waiter 12 aborts its wait. Then the holder lets go.
 * Pass: the 18 others are all granted, and in enqueue order: sorted by fencing token (the
 * engine's grant order, strictly increasing per key), their indices increase. Only on drivers
 * whose `info.fairness` is `fifo` or `choice` (strict FIFO when asked).
 */
import { expect } from 'vitest';
import type { LockClient } from '../../src/core/client.js';
import { forkChaosWorker, pause, type ChaosWorker } from './harness.js';
import { defineScenario } from './matrix.js';
import { hold, SEMAPHORE_PERMITS, type Held } from './primitives.js';

const WAITERS = 20;
const KILLED = 5;
const ABORTED = 12;
const TTL_MS = 5000;

defineScenario(
  {
    number: 11,
    title: `fair mode: ${WAITERS} waiters, one killed and one aborted while queued`,
    // The fast slice: engines that order waiters today (the full matrix asks every driver's info).
    fastEngines: ['memory', 'redis', 'zookeeper', 'etcd'],
    fastPrimitives: ['mutex', 'write', 'semaphore', 'multi', 'election'],
  },
  async ({ engine, primitive, key, client, skip }) => {
    const fairness = engine.info.fairness ?? (engine.info.fair ? 'fifo' : 'none');
    if (fairness === 'none') skip(`${engine.info.name} does not order waiters (info.fairness = none)`);
    if (primitive === 'read') skip('readers queued behind a writer are admitted together: there is no order among them to check');
    if (primitive === 'snowflake') skip('a snowflake worker slot is claimed by a scan of free slots, not by a queue');
    const o = { ttlMs: TTL_MS, waitMs: 60_000, fair: true };
    const owner = await client({ ttlMs: TTL_MS, fair: true });
    const blockers: Held[] = [];
    for (let i = 0; i < (primitive === 'semaphore' ? SEMAPHORE_PERMITS : 1); i++) blockers.push(await hold(owner, primitive, key, o));

    if (primitive === 'semaphore' && !engine.info.modes?.includes('permits')) {
      skip(`${engine.info.name} has no permits mode: the semaphore is one lock per permit, and a waiter takes whichever permit frees first (no single queue)`);
    }
    const clients: LockClient[] = [];
    for (let i = 0; i < WAITERS; i++) {
      const c = await client({ ttlMs: TTL_MS, fair: true });
      // Connected (and, on session engines, its session open) before it queues: its arrival is
      // the enqueue itself, not a cold connection's setup.
      await (await c.tryAcquire(`${key}:warm:${i}`))?.release();
      clients.push(c);
    }
    const worker: ChaosWorker | undefined = engine.workerUrl ? await forkChaosWorker(engine.workerUrl) : undefined;
    const abort = new AbortController();
    const granted: Array<{ index: number; token: bigint }> = [];
    const waits: Array<Promise<unknown>> = [];
    for (let i = 0; i < WAITERS; i++) {
      if (i === KILLED && worker) {
        worker.send({ type: 'hold', id: 1, primitive, key, ttlMs: TTL_MS, waitMs: 60_000, fair: true });
      } else {
        const signal = i === ABORTED ? abort.signal : undefined;
        const w = hold(clients[i]!, primitive, key, { ...o, signal }).then(async (h) => {
          granted.push({ index: i, token: h.tokens[0]! });
          await pause(20);
          await h.release();
        });
        waits.push(i === KILLED || i === ABORTED ? w.then(() => 'granted', () => 'ended') : w);
      }
      await pause(150);
    }
    if (worker) {
      worker.child.kill('SIGKILL');
      await worker.exited;
    } else {
      await clients[KILLED]!.close();
    }
    abort.abort();
    await pause(200);
    for (const b of blockers) await b.release();
    const outcomes = await Promise.all(waits);

    const order = [...granted].sort((a, b) => (a.token < b.token ? -1 : 1)).map((g) => g.index);
    const expected = Array.from({ length: WAITERS }, (_, i) => i).filter((i) => i !== KILLED && i !== ABORTED);
    expect(outcomes.filter((x) => x === 'granted')).toEqual([]);
    expect(order).toEqual(expected);
    const overtaken = order.filter((v, i) => i > 0 && v < order[i - 1]!).length;
    return { runs: 1, violations: overtaken, figures: { granted: granted.length, killed: worker ? 'kill -9 of a queued process' : 'client closed (process-local engine)' } };
  },
);
