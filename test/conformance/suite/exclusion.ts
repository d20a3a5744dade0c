/**
 * Exclusion: overlapping contenders in one process and in separate processes, and a holder
 * killed with kill -9 whose lock the engine frees once its TTL runs out.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { assertExclusion, contendedGrants, maxConcurrentWaiters, sectionsFrom } from '../../support/checkers.js';
import type { LogEntry } from '../../support/protocol.js';
import { forkWorker, runLockLoops, startTogether } from '../../support/workers.js';
import type { SuiteContext } from './context.js';
import { note } from './helpers.js';

export function defineExclusion(ctx: SuiteContext): void {
  const { factory, newClient, uniqueKey } = ctx;

  // ---------------------------------------------------------------- exclusion

  it('excludes truly overlapping contenders in one process (4 clients x 10 cycles)', async () => {
    const key = uniqueKey('excl-local');
    const cs = await Promise.all([0, 1, 2, 3].map(() => newClient()));
    const log: LogEntry[] = [];
    const t = (): string => process.hrtime.bigint().toString();
    await Promise.all(
      cs.map(async (c, pid) => {
        for (let cycle = 0; cycle < 10; cycle++) {
          log.push({ pid, op: 'lock', phase: 'request', t: t(), cycle });
          const lease = await c.acquire(key, { ttlMs: 5000, waitMs: 30_000 });
          log.push({ pid, op: 'lock', phase: 'acquired', t: t(), token: lease.token.toString(), cycle });
          await sleep(2);
          const end = t();
          const stillHeld = lease.isHeld();
          const releaseOk = await lease.release();
          log.push({ pid, op: 'lock', phase: 'released', t: end, token: lease.token.toString(), cycle, stillHeld, releaseOk });
        }
      }),
    );
    const sections = sectionsFrom(log);
    expect(sections).toHaveLength(40);
    assertExclusion(sections, { minContended: 3 });
    expect(sections.filter((s) => s.stillHeld !== true || s.releaseOk !== true)).toEqual([]);
  });

  // Cross-process tests need a URL another process can connect() to; process-local drivers
  // (memory) cannot share a lock with another process, so these tests are not defined for them.
  if (factory.url) {
    const url = factory.url;

    it('excludes truly overlapping contenders in separate processes (6 workers x 15 cycles)', async () => {
      const key = uniqueKey('excl-procs');
      const workers = 6;
      const cycles = 15;
      const spec = { mode: 'loop', url: url(), key, cycles, holdMs: 3, ttlMs: 5000, waitMs: 30_000 } as const;
      const { logs } = await runLockLoops(
        Array.from({ length: workers }, () => spec),
        { timeoutMs: 45_000 },
      );
      const sections = sectionsFrom(logs);
      expect(sections).toHaveLength(workers * cycles);
      expect(new Set(sections.map((s) => s.pid)).size).toBe(workers);
      // All start at one instant, so the first round alone has workers-1 waiting on one holder;
      // ask for half of that so a starved CPU cannot fail a correct run, while a run whose
      // workers went one after another (0 contended grants) still fails.
      assertExclusion(sections, { minContended: Math.ceil(workers / 2) });
      const maxWaiters = maxConcurrentWaiters(sections);
      expect(maxWaiters).toBeGreaterThanOrEqual(2);
      note(factory.name, 'cross-process exclusion', {
        grants: sections.length,
        contended: contendedGrants(sections),
        maxConcurrentWaiters: maxWaiters,
        spanMs: Number((sections.at(-1)?.end ?? 0n) - (sections[0]?.start ?? 0n)) / 1e6,
      });
      // Every section ended held. Every release answered true, except one whose lease was
      // reported lost meanwhile (its signal aborted: a session engine whose session could not be
      // kept alive on a starved machine; exclusion is checked above either way). A false answer
      // without that signal fails here.
      expect(sections.filter((s) => s.stillHeld !== true || (s.releaseOk !== true && s.lost !== true))).toEqual([]);
    }, 60_000);

    it('frees the lock of a holder killed with kill -9 once its TTL runs out', async () => {
      const key = uniqueKey('kill9');
      const ttlMs = 1000;
      const worker = forkWorker({ mode: 'hold', url: url(), key, ttlMs });
      await startTogether([worker]);
      const held = await worker.next('held', 30_000);
      // Let it renew at least once, so that what expires is a renewed TTL.
      await sleep(ttlMs / 2);
      const c = await newClient();
      const before = await c.inspect(key);
      expect(before?.owner).toBe(held.owner);
      expect(before?.holder?.pid).toBe(worker.pid);

      process.kill(worker.pid, 'SIGKILL');
      await worker.exited;
      const killedAt = performance.now();
      // Freed on disconnect: the server may already have let it go; otherwise still held here.
      if (!factory.freesOnDisconnect) expect(await c.tryAcquire(key, { ttlMs: 5000 })).toBeNull();

      const margin = 1500;
      const lease = await c.acquire(key, { ttlMs: 5000, waitMs: ttlMs + margin });
      const tookMs = performance.now() - killedAt;
      expect(tookMs).toBeLessThanOrEqual(ttlMs + margin);
      note(factory.name, 'kill -9 holder', { freedAfterMs: Math.round(tookMs), ttlMs });
      expect(lease.token).toBeGreaterThan(BigInt(held.token));
      expect((await c.inspect(key))?.owner).toBe(lease.owner);
      expect(await lease.release()).toBe(true);
    });
  }
}
