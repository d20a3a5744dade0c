/**
 * Chaos scenario 7 (reliability.md): the wall clock of a holder and of a waiter jumps by ±1 h
 * (libfaketime, Debian `faketime`; CLOCK_MONOTONIC left alone, as on a host whose NTP steps the
 * clock). Two forked workers share one libfaketime timestamp file: A holds (renewing), B waits
 * for the conflicting hold (the semaphore's other permits are held here). While A holds, their
 * clock goes +1 h, then −1 h, then back, over more than 3 TTLs.
 * Pass: the jump took effect (Date.now() in the worker moved by an hour); A is never told it lost
 * the lock and still holds it when it leaves its section; B is not granted while A holds (no
 * double grant: the history's sections do not overlap) and does not time out (no spurious loss
 * of its wait); B is granted once A releases, with a greater token.
 */
import { join } from 'node:path';
import { expect } from 'vitest';
import { tempDir } from '../support/processes.js';
import { fakeTime } from '../ids/harness.js';
import { checkExclusive, forkChaosWorker, msBetween, pause, readHistory } from './harness.js';
import { defineScenario } from './matrix.js';
import { contender, fillOthers } from './primitives.js';

const TTL_MS = 1000;
const HOUR_S = 3600;

defineScenario({ number: 7, title: 'wall clock jumps ±1 h', crossProcess: true }, async ({ engine, primitive, key, client }) => {
  const local = await client({ ttlMs: TTL_MS });
  const filled = await fillOthers(local, primitive, key, { ttlMs: TTL_MS, waitMs: 10_000 });
  const dir = tempDir('dlock-chaos-clock-');
  const clock = await fakeTime(dir);
  const env = clock.env(false);
  const history = join(dir, 'history.jsonl');
  const [a, b] = await Promise.all([forkChaosWorker(engine.workerUrl!, { env, history }), forkChaosWorker(engine.workerUrl!, { env, history })]);
  a.send({ type: 'hold', id: 1, primitive, key, ttlMs: TTL_MS, waitMs: 20_000 });
  const held = await a.next('held', 30_000);
  b.send({ type: 'hold', id: 1, primitive: contender(primitive), key, ttlMs: TTL_MS, waitMs: 30_000 });
  let bGranted = false;
  const bHeld = b.next('held', 60_000).then((m) => {
    bGranted = true;
    return m;
  });
  bHeld.catch(() => undefined);

  const jumps: number[] = [];
  const wallBefore = (await (a.send({ type: 'now' }), a.next('now', 5000))).wallMs;
  for (const offset of [HOUR_S, -HOUR_S, HOUR_S, 0]) {
    clock.set(`${offset >= 0 ? '+' : ''}${offset}`);
    a.send({ type: 'now' });
    jumps.push(Math.round(((await a.next('now', 5000)).wallMs - wallBefore) / 60_000));
    await pause(TTL_MS);
  }
  const grantedDuringJumps = bGranted;
  a.send({ type: 'release', id: 1 });
  const released = await a.next('released', 10_000);
  const next = await bHeld;
  b.send({ type: 'release', id: 1 });
  await b.next('released', 10_000);
  for (const f of filled) await f.release();

  const events = readHistory(history);
  const lost = events.filter((e) => e.phase === 'lost' || e.phase === 'failed');
  const verdict = checkExclusive(events, process.hrtime.bigint());
  const stillHeld = events.find((e) => e.pid === a.pid && e.phase === 'released')?.stillHeld;
  const handOverMs = Math.round(msBetween(released.t, next.t));

  // Minutes the worker's wall clock was off after each jump: about +60, -60, +60, 0.
  expect(jumps.map((m) => Math.round(m / 60))).toEqual([1, -1, 1, 0]);
  expect(lost.map((e) => `${e.pid} ${e.phase} ${e.code ?? ''}`)).toEqual([]);
  expect(stillHeld).toBe(true);
  expect(released.ok).toBe(true);
  expect(grantedDuringJumps).toBe(false);
  expect(verdict.overlaps).toEqual([]);
  expect(verdict.sections).toBe(2);
  expect(next.tokens.every((t, i) => BigInt(t) > BigInt(held.tokens[i] ?? '-1'))).toBe(true);
  return { runs: 1, violations: 0, figures: { heldMs: Math.round(msBetween(held.t, released.t)), handOverMs } };
});
