/**
 * The paused-holder fencing cases (test/support/paused-holder.ts), written once and run by every
 * lock engine's fencing test file: for each pause, a run with fenced reads (the helpers' default)
 * must lose no increment and accept no stale write, and the control run with plain reads (writes
 * still fenced) must show the loss, which proves the checker can see it.
 *
 * Pauses:
 * - `long`: the engine frees the lock while the holder is frozen (its TTL, or its session timeout,
 *   runs out); the holder is resumed once a newer holder has read.
 * - `short` (session engines): longer than the lease's TTL but shorter than the session timeout:
 *   the engine keeps the frozen holder's lock (nobody else gets it during the pause); resumed, the
 *   holder's core sees the lease past its local deadline and gives the lock back.
 */
import { describe, expect, it } from 'vitest';
import type { CounterKind } from './fenced-counter/index.js';
import { runPausedHolder, type PausedHolderOptions } from './paused-holder.js';

export interface PausedHolderEngine {
  /** For the test names, e.g. `etcd` or `mysql session mode`. */
  name: string;
  /** The lock URL (read when a case runs, after the servers have started). */
  url(): string;
  counter: CounterKind;
  /** Where the counter is. Default the lock URL. */
  counterUrl?(): string;
  ttlMs: number;
  /** Session engines: a pause past the TTL that the engine's session outlives. */
  shortPauseMs?: number;
  /** The least the victim stays frozen in the long case (it also waits for a newer holder's read). */
  longPauseMs: number;
  /** The reason the victim's lease reports after the long pause, when the engine says it for sure. */
  longReason?: string;
  prepare?: PausedHolderOptions['prepare'];
  /** Runs during the long pause (e.g. an administrator terminates the holder's session). */
  whileLongPaused?: PausedHolderOptions['whilePaused'];
  /** Per test, in ms. Default 60,000. */
  timeoutMs?: number;
}

const WORKERS = 3;
const INCREMENTS = 5;

export function describePausedHolder(engine: PausedHolderEngine): void {
  const pauses = [
    { pause: 'long' as const, pauseMs: engine.longPauseMs },
    ...(engine.shortPauseMs !== undefined ? [{ pause: 'short' as const, pauseMs: engine.shortPauseMs }] : []),
  ];
  describe.each(pauses)(`paused holder and fencing (${engine.name}), $pause pause`, ({ pause, pauseMs }) => {
    const run = (reads: 'fenced' | 'plain') =>
      runPausedHolder({
        counter: engine.counter,
        url: engine.url(),
        counterUrl: engine.counterUrl?.(),
        reads,
        workers: WORKERS,
        increments: INCREMENTS,
        ttlMs: engine.ttlMs,
        pauseMs,
        resumeAfterNewerRead: pause === 'long',
        prepare: engine.prepare,
        whilePaused: pause === 'long' ? engine.whileLongPaused : undefined,
      });
    const timeout = engine.timeoutMs ?? 60_000;

    it('fenced reads: the stale write is refused, 0 increments lost, 0 stale writes accepted', async () => {
      const r = await run('fenced');
      expect(r.pausedMs).toBeGreaterThanOrEqual(engine.ttlMs);
      // The interleaving happened: a newer holder read before the paused holder wrote.
      expect(r.newerReadFirst).toBe(true);
      // Short pause: the engine kept the paused holder's lock; long: it gave it away meanwhile.
      if (pause === 'short') expect(r.newerReadDuringPause).toBe(false);
      else if (engine.whileLongPaused === undefined) expect(r.newerReadDuringPause).toBe(true);
      expect(r.staleAccepted).toBe(0);
      expect(r.lost).toBe(0);
      expect(r.rejected).toBe(1);
      expect(r.accepted).toBe(WORKERS * INCREMENTS - 1);
      const paused = r.done[0]!.paused!;
      expect(paused.abortedBeforeWrite).toBe(true);
      if (pause === 'long' && engine.longReason !== undefined) expect(paused.reason).toBe(engine.longReason);
    }, timeout);

    it('control, plain reads and fenced writes: the stale write is accepted and an increment is lost', async () => {
      const r = await run('plain');
      expect(r.newerReadFirst).toBe(true);
      expect(r.staleAccepted).toBe(1);
      expect(r.lost).toBeGreaterThanOrEqual(1);
      expect(r.done[0]!.paused!.abortedBeforeWrite).toBe(true);
    }, timeout);
  });
}
