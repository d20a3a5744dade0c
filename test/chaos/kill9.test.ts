/**
 * Chaos scenario 8 (reliability.md): a holder killed with kill -9, on every engine and primitive.
 * A forked worker takes the hold; a client in this process already waits for the conflicting
 * hold (the write side for a read lock; the semaphore's last permit, the other two being held
 * here). Pass: the waiter is not granted while the holder lives; it is granted within the
 * engine's bound after the kill (the TTL, the 1 s worker session, or at once for SQL session
 * locks; plus slack for a loaded machine); its tokens are greater than the dead holder's (never
 * reused), the snowflake's ids are above every id the dead one issued, the semaphore's permit is
 * recovered (3 of 3 held again), and nothing is left on the engine after the release.
 */
import { expect } from 'vitest';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { leftovers, forkChaosWorker, msBetween, pause } from './harness.js';
import { defineScenario } from './matrix.js';
import { contender, fillOthers, hold, keysOf, SEMAPHORE_PERMITS } from './primitives.js';

const TTL_MS = 1000;
/** Scheduling on a loaded 2-core machine (the conformance suite allows TTL + 1.5 s). */
const SLACK_MS = 3000;

defineScenario({ number: 8, title: 'holder kill -9', crossProcess: true }, async ({ engine, primitive, key, client }) => {
  const local = await client({ ttlMs: TTL_MS });
  const o = { ttlMs: TTL_MS, waitMs: 30_000 };
  const filled = await fillOthers(local, primitive, key, o);
  const worker = await forkChaosWorker(engine.workerUrl!);
  worker.send({ type: 'hold', id: 1, primitive, key, ttlMs: TTL_MS, waitMs: 20_000, issue: primitive === 'snowflake' ? 1000 : undefined });
  const held = await worker.next('held', 30_000);

  let grantedAt: bigint | undefined;
  const successor = hold(local, contender(primitive), key, o).then((h) => {
    grantedAt = process.hrtime.bigint();
    return h;
  });
  successor.catch(() => undefined);
  // The waiter must not get in while the holder lives (it renews: 2 TTLs is past its first TTL).
  await pause(2 * TTL_MS);
  const grantedWhileAlive = grantedAt !== undefined;

  const killedAt = process.hrtime.bigint();
  worker.child.kill('SIGKILL');
  await worker.exited;
  const next = await successor;
  const freedMs = Math.round(msBetween(killedAt, grantedAt!));
  const bound = engine.freeBoundMs(TTL_MS);

  const newer = next.tokens.every((t, i) => t > BigInt(held.tokens[i] ?? '-1'));
  const firstId = next.issue?.(1);
  const idsAbove = held.lastId === undefined || (firstId !== undefined && firstId > BigInt(held.lastId));
  const permits = primitive === 'semaphore' ? await new Semaphore(local, key, { permits: SEMAPHORE_PERMITS }).inUse() : undefined;

  await next.release();
  for (const f of filled) await f.release();
  const left = await leftovers(local, key, keysOf(primitive, key));

  expect(grantedWhileAlive, 'granted while the holder was alive').toBe(false);
  expect(freedMs).toBeLessThan(bound + SLACK_MS);
  expect(newer, `tokens ${next.tokens.join(',')} not above the dead holder's ${held.tokens.join(',')}`).toBe(true);
  expect(idsAbove, `first id ${firstId} not above the dead generator's last ${held.lastId}`).toBe(true);
  if (permits !== undefined) expect(permits).toBe(SEMAPHORE_PERMITS);
  expect(left).toEqual([]);
  const violations = [grantedWhileAlive, freedMs >= bound + SLACK_MS, !newer, !idsAbove, left.length > 0].filter(Boolean).length;
  return { runs: 1, violations, figures: { freedMs, boundMs: bound } };
});
