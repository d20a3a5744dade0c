/**
 * Chaos scenario 2 (reliability.md) over every primitive that guards one writer: the holder is
 * paused past its TTL, once with SIGSTOP and once with its event loop blocked by Atomics.wait,
 * while 2 other workers increment a counter (3 times each) in a fenced resource (a Redis hash behind
 * FencedRedisHash; the tokens are the lock engine's). The scenario is test/support/paused-holder.ts
 * (the per-driver fencing tests' own), given the primitive. The pause lasts past the time the
 * engine frees a silent holder (TTL, or the 1 s worker session) plus 1 s; on SQL session locks
 * (kept while the connection lives) it lasts TTL + 1 s and the engine keeps the lock meanwhile.
 * Pass, each pause: the interleaving happened (a newer holder read before the paused one wrote),
 * its stale write was refused, 0 increments lost, its lease signal aborted before it wrote. The
 * mutex cell adds the control run (plain reads): the stale write is accepted and an increment is
 * lost, which proves the checker sees it.
 */
import { expect } from 'vitest';
import { runPausedHolder } from '../support/paused-holder.js';
import { chaosEngine } from './engines.js';
import { defineScenario } from './matrix.js';

const TTL_MS = 600;
const INCREMENTS = 3;

defineScenario(
  {
    number: 2,
    title: 'holder paused past its TTL (SIGSTOP, Atomics.wait), fenced resource',
    crossProcess: true,
    fastPrimitives: ['mutex', 'write', 'multi', 'election', 'snowflake'],
    timeoutMs: 180_000,
  },
  async ({ engine, primitive, skip }) => {
    if (primitive === 'read' || primitive === 'semaphore') skip(`a ${primitive === 'read' ? 'read lock' : 'semaphore of 3'} admits several writers at once: one fenced counter is not its resource`);
    const counterUrl = (await chaosEngine('redis').start()).localUrl;
    const bound = engine.freeBoundMs(TTL_MS);
    const pauseMs = (bound > 0 ? bound : TTL_MS) + 1000;
    const run = (reads: 'fenced' | 'plain', pauseBy: 'sigstop' | 'atomics') =>
      runPausedHolder({ counter: 'redis', url: engine.workerUrl!, counterUrl, reads, ttlMs: TTL_MS, pauseMs, increments: INCREMENTS, resumeAfterNewerRead: bound > 0, primitive, pauseBy });
    const figures: Record<string, number> = { pauseMs };
    let violations = 0;
    for (const pauseBy of ['sigstop', 'atomics'] as const) {
      const r = await run('fenced', pauseBy);
      violations += r.staleAccepted + r.lost;
      figures[`${pauseBy}PausedMs`] = Math.round(r.pausedMs);
      expect(r.newerReadFirst, `${pauseBy}: a newer holder read before the paused one wrote`).toBe(true);
      expect(r.staleAccepted, `${pauseBy}: stale writes accepted`).toBe(0);
      expect(r.lost, `${pauseBy}: increments lost`).toBe(0);
      // The paused holder's write at least; on a loaded machine another worker's 1 s session may
      // lapse too and its write be refused as well (the fence doing its job, not a violation).
      expect(r.rejected, `${pauseBy}: stale writes refused`).toBeGreaterThanOrEqual(1);
      figures[`${pauseBy}Refused`] = r.rejected;
      expect(r.done[0]!.paused!.abortedBeforeWrite, `${pauseBy}: the paused holder's signal aborted before its write`).toBe(true);
    }
    let runs = 2;
    if (primitive === 'mutex') {
      const control = await run('plain', 'sigstop');
      runs += 1;
      figures.controlLost = control.lost;
      expect(control.staleAccepted, 'control: the stale write is accepted').toBe(1);
      expect(control.lost, 'control: an increment is lost').toBeGreaterThanOrEqual(1);
    }
    return { runs, violations, figures };
  },
);
