/**
 * ONE conformance suite that every driver runs, through a small factory per driver
 * (memory.test.ts, redis.test.ts, sqlite.test.ts, ...). Everything here goes through the public
 * LockClient over a real engine; cross-process tests fork real Node processes.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { LockClient, type LockClientOptions } from '../../src/core/client.js';
import type { Lease } from '../../src/core/lease.js';
import type { LockDriver } from '../../src/drivers/driver.js';
import { markStoreOf } from '../../src/drivers/id-store.js';
import { connect } from '../../src/connect.js';
import { LockLostError, UnavailableError } from '../../src/errors.js';
import { freePort } from '../support/ports.js';
import { assertExclusion, contendedGrants, maxConcurrentWaiters, sectionsFrom } from '../support/checkers.js';
import type { LogEntry } from '../support/protocol.js';
import { forkWorker, killWorkers, repoRoot, runLockLoops, startTogether } from '../support/workers.js';

/** A private engine that a test may make unavailable. */
export interface IsolatedEngine {
  /** A new driver on this private engine. */
  create(): Promise<LockDriver>;
  /** Make every engine operation fail or hang (stop the server, lock the database...). */
  makeUnavailable(): Promise<void>;
  /** Undo {@link makeUnavailable}. */
  restore(): Promise<void>;
  /** Free everything (servers, files, helper processes). */
  dispose(): Promise<void>;
  /**
   * How many lock operations the engine has executed so far (redis: EVAL/EVALSHA calls), when
   * the engine can tell; lets a test prove that a waiter does not poll.
   */
  operations?(): Promise<number>;
}

/** What a driver supplies to run the suite. */
export interface ConformanceFactory {
  name: string;
  /** A new driver instance (own connections) on the same engine, for clients in this process. */
  create(): Promise<LockDriver>;
  /**
   * URL that forked workers pass to connect(); undefined for process-local drivers (memory):
   * cross-process tests are then not defined for it.
   */
  url?: () => string;
  /**
   * URL a standalone child may connect to on its own, for the close()/open-handles check.
   * Defaults to {@link url}; process-local drivers can still give one (`memory:`).
   */
  standaloneUrl?: () => string;
  /** Remove a key behind the holder's back with a real engine operation (redis DEL / SQL DELETE / memory forget). */
  removeBehindBack(key: string): Promise<void>;
  /** A private engine instance that can be made unavailable. */
  isolated?(): Promise<IsolatedEngine>;
  /**
   * The engine frees a dead holder's lock as soon as it sees the holder's connection close (SQL
   * session locks: PostgreSQL advisory locks, MySQL GET_LOCK), not when a TTL runs out.
   */
  freesOnDisconnect?: boolean;
  /**
   * Counters of wait machinery left for `key` (memory: keys with open watches; redis: channel
   * subscribers...). Every counter must be 0 once no wait is in progress.
   */
  waitResidue?(key: string): Promise<Record<string, number>>;
}

/** Error of a call, whether it threw synchronously or rejected. Fails when it succeeds. */
async function errorOf(fn: () => unknown): Promise<Error & { code?: string; option?: string; reason?: string }> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`threw a non-Error: ${String(e)}`);
    return e;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** Resolve with the abort reason and the monotonic time it fired; reject after `timeoutMs`. */
function whenAborted(signal: AbortSignal, timeoutMs: number): Promise<{ reason: unknown; at: number }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      resolve({ reason: signal.reason, at: performance.now() });
      return;
    }
    const timer = setTimeout(() => reject(new Error(`lease.signal did not abort within ${timeoutMs} ms`)), timeoutMs);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve({ reason: signal.reason, at: performance.now() });
      },
      { once: true },
    );
  });
}

/** Bound a promise so that a hanging engine call fails the test instead of the whole run. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `fn` until it returns true or `ms` pass; returns the last answer. */
async function eventually(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  for (;;) {
    if (await fn()) return true;
    if (performance.now() > end) return false;
    await sleep(10);
  }
}

/**
 * A held lock's remaining TTL as inspect reports it: within (0, ttlMs], or -1 from a session
 * driver whose lock lives as long as the holder's session (LockState.remainingMs).
 */
function expectRemaining(remainingMs: number | undefined, ttlMs: number, driver: LockDriver): void {
  if (driver.info.liveness === 'session' && remainingMs === -1) return;
  expect(remainingMs).toBeGreaterThan(0);
  expect(remainingMs).toBeLessThanOrEqual(ttlMs);
}

/** Whether `e`, its causes, or the answers it carries mention `pattern` (message or code). */
function mentions(e: unknown, pattern: RegExp): boolean {
  return pattern.test(describeChain(e));
}

/** `e`'s message and code, then its causes' and carried errors', one per line. */
function describeChain(e: unknown, depth = 0): string {
  if (depth > 6 || e === undefined || e === null) return '';
  if (!(e instanceof Error)) return JSON.stringify(e) ?? '';
  const x = e as Error & { code?: string | number; errors?: unknown[]; answers?: unknown };
  const parts = [`${x.name}: ${x.message}${x.code === undefined ? '' : ` [${x.code}]`}`];
  if (x.cause !== undefined) parts.push(describeChain(x.cause, depth + 1));
  for (const inner of x.errors ?? []) parts.push(describeChain(inner, depth + 1));
  if (x.answers !== undefined) parts.push(JSON.stringify(x.answers, (_k, v: unknown) => (v instanceof Error ? `${v.name}: ${v.message}` : v)));
  return parts.filter(Boolean).join('\n');
}

/** One line of measurements, for the run log. */
function note(suite: string, what: string, values: Record<string, unknown>): void {
  console.info(`[conformance:${suite}] ${what}: ${JSON.stringify(values)}`);
}

const hostTag = hostname().replace(/[:\s]/g, '_') || 'unknown-host';

export function defineConformanceSuite(factory: ConformanceFactory): void {
  describe(`conformance: ${factory.name}`, () => {
    const clients: LockClient[] = [];
    const rawDrivers: LockDriver[] = [];

    const newClient = async (opts?: LockClientOptions): Promise<LockClient> => {
      const c = new LockClient(await factory.create(), opts);
      clients.push(c);
      return c;
    };
    const newDriver = async (): Promise<LockDriver> => {
      const d = await factory.create();
      rawDrivers.push(d);
      return d;
    };
    /** Wait machinery may linger briefly (e.g. a cached subscription), but must go away. */
    const expectNoWaitResidue = async (key: string): Promise<void> => {
      if (!factory.waitResidue) return;
      const residue = factory.waitResidue.bind(factory);
      let last: Record<string, number> = {};
      await eventually(async () => {
        last = await residue(key);
        return Object.values(last).every((n) => n === 0);
      }, 5000);
      expect(Object.entries(last).filter(([, n]) => n !== 0)).toEqual([]);
    };
    const uniqueKey = (name: string): string => `conf:${factory.name}:${name}:${randomBytes(4).toString('hex')}`;

    afterEach(async () => {
      await killWorkers();
      const all = clients.splice(0).map((c) => within(c.close(), 10_000, 'client.close()'));
      const drivers = rawDrivers.splice(0).map((d) => within(d.close(), 10_000, 'driver.close()'));
      await Promise.all([...all, ...drivers]);
    });

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
        expect(sections.filter((s) => s.stillHeld !== true || s.releaseOk !== true)).toEqual([]);
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

    // ---------------------------------------------------------------- ownership

    it('never lets a non-owner release or extend, and release answers the same every time', async () => {
      const key = uniqueKey('owner');
      const a = await newClient();
      const foreign = await newDriver();
      const lease = await a.acquire(key, { ttlMs: 10_000 });

      expect(await foreign.release(key, 'someone-else')).toBe(false);
      expect(lease.isHeld()).toBe(true);
      expect(await foreign.extend([{ key, owner: 'someone-else', ttlMs: 60_000 }])).toEqual([false]);
      const state = await a.inspect(key);
      expect(state?.owner).toBe(lease.owner);
      expect(state?.token).toBe(lease.token);
      // The foreign extend did not lengthen the holder's TTL.
      expect(state?.remainingMs).toBeLessThanOrEqual(10_000);

      expect(await lease.release()).toBe(true);
      expect(await lease.release()).toBe(true);
      expect(await foreign.release(key, lease.owner)).toBe(false);
      expect(await a.inspect(key)).toBeNull();
    });

    it('a release or extend of an expired lease never touches the next holder', async () => {
      const key = uniqueKey('expired-release');
      const a = await newClient();
      const b = await newClient();
      const foreign = await newDriver();
      const old = await a.acquire(key, { ttlMs: 200, renew: false });
      await sleep(400);
      expect(old.isHeld()).toBe(false);
      const next = await b.tryAcquire(key, { ttlMs: 10_000 });
      expect(next).not.toBeNull();
      if (!next) return;
      expect(next.token).toBeGreaterThan(old.token);

      expect(await old.release()).toBe(false);
      expect(await old.release()).toBe(false);
      expect(await foreign.release(key, old.owner)).toBe(false);
      expect(await foreign.extend([{ key, owner: old.owner, ttlMs: 60_000 }])).toEqual([false]);
      const state = await b.inspect(key);
      expect(state?.owner).toBe(next.owner);
      expect(state?.token).toBe(next.token);
      expect(state?.remainingMs).toBeLessThanOrEqual(10_000);
      expect(next.isHeld()).toBe(true);
      expect(await next.release()).toBe(true);
    });

    // ---------------------------------------------------------------- tokens

    it('tokens strictly increase across clients and across a driver re-open', async () => {
      const key = uniqueKey('tokens');
      const a = await newClient();
      const b = await newClient();
      const tokens: bigint[] = [];
      for (let i = 0; i < 4; i++) {
        for (const c of [a, b]) {
          const lease = await c.acquire(key, { ttlMs: 5000 });
          expect(typeof lease.token).toBe('bigint');
          tokens.push(lease.token);
          expect(await lease.release()).toBe(true);
        }
      }
      await a.close();
      await b.close();
      const reopened = await newClient();
      const lease = await reopened.acquire(key, { ttlMs: 5000 });
      tokens.push(lease.token);
      await lease.release();
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1] ?? 0n);
    });

    it('marks: raised only while held, never lowered, kept after release and across a driver re-open', async () => {
      const key = uniqueKey('mark');
      const d = markStoreOf(await newDriver());
      if (!d) throw new Error(`${factory.name} must implement readMark/raiseMark (worker-id leases need them)`);
      expect(await d.readMark(key)).toBe(0n);
      expect(await d.raiseMark(key, 'nobody:1:aa:1', 5n)).toBe(false);
      const grant = await d.tryAcquire({ key, owner: 'host:1:aa:1', ttlMs: 5000 });
      expect(grant.ok).toBe(true);
      expect(await d.raiseMark(key, 'someone-else:2:bb:1', 99n)).toBe(false);
      expect(await d.readMark(key)).toBe(0n);
      const big = 2n ** 62n + 12345n; // beyond 2^53: marks are exact bigints
      expect(await d.raiseMark(key, 'host:1:aa:1', big)).toBe(true);
      expect(await d.raiseMark(key, 'host:1:aa:1', 7n)).toBe(true);
      expect(await d.readMark(key)).toBe(big);
      expect(await d.release(key, 'host:1:aa:1')).toBe(true);
      expect(await d.raiseMark(key, 'host:1:aa:1', big + 1n)).toBe(false);
      const again = markStoreOf(await newDriver());
      expect(await again?.readMark(key)).toBe(big);
    });

    // ---------------------------------------------------------------- renewal

    it('renewal keeps a lock alive across several TTLs', async () => {
      const key = uniqueKey('renew');
      const a = await newClient();
      const b = await newClient();
      const lease = await a.acquire(key, { ttlMs: 300 });
      const signal = lease.signal;
      await sleep(1200);
      expect(signal.aborted).toBe(false);
      expect(lease.isHeld()).toBe(true);
      const state = await b.inspect(key);
      expect(state?.owner).toBe(lease.owner);
      expect(state?.token).toBe(lease.token);
      expectRemaining(state?.remainingMs, 300, a.driver);
      expect(await b.tryAcquire(key, { ttlMs: 300 })).toBeNull();
      expect(await lease.release()).toBe(true);
    });

    // ---------------------------------------------------------------- lost locks

    it("aborts lease.signal with LockLostError 'not-held' when the key is removed behind its back", async () => {
      const key = uniqueKey('lost-removed');
      const a = await newClient();
      const b = await newClient();
      const ttlMs = 600;
      const lease = await a.acquire(key, { ttlMs });
      const aborted = whenAborted(lease.signal, ttlMs + 3000);
      const removedAt = performance.now();
      await factory.removeBehindBack(key);
      const { reason, at } = await aborted;
      expect(reason).toBeInstanceOf(LockLostError);
      expect((reason as LockLostError).code).toBe('DLOCK_LOCK_LOST');
      expect((reason as LockLostError).reason).toBe('not-held');
      // Found by the next renewal (every ttl/3), well before the TTL would have run out.
      expect(at - removedAt).toBeLessThan(ttlMs + 500);
      expect(lease.isHeld()).toBe(false);
      expect(() => lease.assertHeld()).toThrow(LockLostError);
      await expect(lease.extend()).rejects.toBeInstanceOf(LockLostError);
      // The key is free, and the fencing counter did not go back.
      const next = await b.tryAcquire(key, { ttlMs: 5000 });
      expect(next).not.toBeNull();
      expect(next?.token).toBeGreaterThan(lease.token);
      expect(await lease.release()).toBe(false);
      expect((await b.inspect(key))?.owner).toBe(next?.owner);
    });

    if (factory.isolated) {
      const isolated = factory.isolated.bind(factory);
      it("aborts lease.signal with 'expired' at about the local deadline when the engine is unavailable", async () => {
        const engine = await isolated();
        const unhandled: unknown[] = [];
        const onUnhandled = (reason: unknown): void => {
          unhandled.push(reason);
        };
        process.on('unhandledRejection', onUnhandled);
        const local: LockClient[] = [];
        try {
          const ttlMs = 1000;
          const a = new LockClient(await engine.create());
          local.push(a);
          const key = uniqueKey('lost-unavailable');
          const lease = await a.acquire(key, { ttlMs });
          const aborted = whenAborted(lease.signal, ttlMs + 5000);
          await sleep(250); // at least one renewal went through
          expect(lease.isHeld()).toBe(true);
          const downAt = performance.now();
          await engine.makeUnavailable();
          // The local deadline once the engine is really gone (a renewal may still have succeeded
          // while it was going down).
          const deadline = performance.now() + lease.remainingMs();
          const { reason, at } = await aborted;
          expect(reason).toBeInstanceOf(LockLostError);
          expect((reason as LockLostError).reason).toBe('expired');
          // The last good renewal was at most ~ttl/3 before the outage; the local deadline is
          // that renewal + ttl - drift. Lost neither long before nor long after it.
          const afterDown = at - downAt;
          const late = at - deadline;
          note(factory.name, 'engine unavailable', { lostAfterOutageMs: Math.round(afterDown), lateVsLocalDeadlineMs: Math.round(late), ttlMs });
          // Told at that deadline: not before it, and not long after it.
          expect(late).toBeGreaterThan(-50);
          expect(late).toBeLessThan(1000);
          expect(afterDown).toBeGreaterThan(ttlMs * 0.5);
          expect(afterDown).toBeLessThan(ttlMs + 1000);
          expect(lease.isHeld()).toBe(false);

          await engine.restore();
          // Works again after the heal: the old lock is gone (or expires) and a new client gets it.
          const b = new LockClient(await engine.create());
          local.push(b);
          const again = await b.acquire(key, { ttlMs: 5000, waitMs: 10_000 });
          expect(again.isHeld()).toBe(true);
          await again.release();
          await within(a.close(), 10_000, 'close() after the outage');
          await sleep(100); // let stray rejections surface
          expect(unhandled).toEqual([]);
        } finally {
          process.off('unhandledRejection', onUnhandled);
          await Promise.allSettled(local.map((c) => within(c.close(), 10_000, 'close()')));
          await engine.dispose();
        }
      }, 60_000);
    }

    const refusing = factory.url;
    if (refusing) {
      it('an engine that refuses connections: acquire rejects with UnavailableError carrying the connection error, within waitMs + 1.5 s', async () => {
        const real = refusing();
        // Network engines: every host:port of the URL pointed at a port nobody listens on (one
        // each: Redlock refuses a node listed twice). The embedded engine: a file it cannot open.
        let url = 'sqlite:/proc/dlock-unreachable/locks.db';
        if (/^[a-z+]+:\/\//.test(real)) {
          const pairs = [...real.matchAll(/(@|\/\/|,)([^:@/,?]+):(\d+)(?=[/,?]|$)/g)];
          const closed = await Promise.all(pairs.map(() => freePort()));
          let i = 0;
          url = real.replace(/(@|\/\/|,)([^:@/,?]+):(\d+)(?=[/,?]|$)/g, (_m, lead: string, host: string) => `${lead}${host}:${closed[i++] ?? 1}`);
        }
        expect(url).not.toBe(real);
        const waitMs = 1500;
        let client: LockClient | undefined;
        try {
          const t0 = performance.now();
          // connect() may already say so (an embedded file it cannot open), or the wait does.
          const e = await errorOf(async () => {
            client = await connect(url);
            await client.acquire(uniqueKey('refused'), { waitMs, ttlMs: 5000 });
          });
          const elapsed = performance.now() - t0;
          note(factory.name, 'refused', { elapsedMs: Math.round(elapsed), waitMs, error: e.message.slice(0, 200) });
          expect(e).toBeInstanceOf(UnavailableError);
          expect(elapsed).toBeLessThan(waitMs + 1500);
          expect(mentions(e, /ECONNREFUSED|connect|refused|ENOENT|directory|unable to open/i), `the error chain names the connection failure: ${describeChain(e)}`).toBe(true);
          expect(describeChain(e)).not.toMatch(/max retries per request/i);
        } finally {
          if (client) await within(client.close(), 10_000, 'close() of the refused client');
        }
      }, 30_000);
    }

    it("aborts lease.signal with 'max-hold' once maxHoldMs is reached", async () => {
      const key = uniqueKey('max-hold');
      const a = await newClient();
      const b = await newClient();
      // maxHoldMs counts from when the acquire request was sent (before the call returns).
      const sent = performance.now();
      // TTL 600 ms: renewals (every 200 ms) have room for a loaded machine's latency; a renewal
      // that misses its deadline would show up as 'expired' instead of 'max-hold'.
      const lease = await a.acquire(key, { ttlMs: 600, maxHoldMs: 1500 });
      const start = performance.now();
      const { reason, at } = await whenAborted(lease.signal, 6000);
      expect(reason).toBeInstanceOf(LockLostError);
      expect((reason as LockLostError).reason).toBe('max-hold');
      note(factory.name, 'max-hold', { lostAfterMs: Math.round(at - sent), acquireMs: Math.round(start - sent), maxHoldMs: 1500 });
      expect(at - sent).toBeGreaterThan(1400);
      expect(at - start).toBeLessThan(2500);
      // Renewal stopped, so the engine lets the key go on its own.
      const next = await b.acquire(key, { ttlMs: 5000, waitMs: 2000 });
      expect(next.token).toBeGreaterThan(lease.token);
      await next.release();
    });

    // ---------------------------------------------------------------- waiting

    it('an aborted wait rejects with LockAbortedError and leaves nothing behind', async () => {
      const key = uniqueKey('abort');
      const a = await newClient();
      const b = await newClient();
      const holder = await a.acquire(key, { ttlMs: 10_000 });
      const ac = new AbortController();
      const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 20_000, signal: ac.signal });
      const outcome = waiting.then(
        () => 'granted',
        (e: unknown) => e,
      );
      await sleep(200);
      const abortAt = performance.now();
      ac.abort(new Error('caller gave up'));
      const err = await within(outcome, 2000, 'the aborted acquire');
      expect(performance.now() - abortAt).toBeLessThan(1000);
      expect(err).toMatchObject({ code: 'DLOCK_ABORTED', name: 'LockAbortedError' });
      expect(b.heldCount).toBe(0);
      expect(await holder.release()).toBe(true);
      await sleep(100);
      expect(await a.inspect(key)).toBeNull();
      expect(b.heldCount).toBe(0);
      await expectNoWaitResidue(key);
    });

    it('aborts racing releases leave no lock behind (20 rounds)', async () => {
      const key = uniqueKey('abort-race');
      const a = await newClient();
      const b = await newClient();
      let granted = 0;
      let aborted = 0;
      for (let i = 0; i < 20; i++) {
        const holder = await a.acquire(key, { ttlMs: 10_000, waitMs: 5000 });
        const ac = new AbortController();
        const outcome = b.acquire(key, { ttlMs: 10_000, waitMs: 5000, signal: ac.signal }).then(
          (lease): Lease | Error => lease,
          (e: unknown) => e as Error,
        );
        await sleep(i % 4);
        if (i % 2 === 0) {
          ac.abort();
          void holder.release();
        } else {
          void holder.release();
          ac.abort();
        }
        expect(await holder.release()).toBe(true);
        const r = await within(outcome, 5000, 'the racing acquire');
        if (r instanceof Error) {
          expect(r).toMatchObject({ code: 'DLOCK_ABORTED' });
          aborted++;
        } else {
          expect(r.isHeld()).toBe(true);
          expect(await r.release()).toBe(true);
          granted++;
        }
        // A grant that raced the abort may be given back asynchronously, but never kept.
        expect(await eventually(async () => (await a.inspect(key)) === null, 5000)).toBe(true);
        expect(b.heldCount).toBe(0);
      }
      expect(granted + aborted).toBe(20);
      await expectNoWaitResidue(key);
    });

    it('waitMs runs out with LockTimeoutError; tryAcquire answers null when busy', async () => {
      const key = uniqueKey('timeout');
      const a = await newClient();
      const b = await newClient();
      const holder = await a.acquire(key, { ttlMs: 10_000 });
      const start = performance.now();
      const err = await errorOf(() => b.acquire(key, { waitMs: 300 }));
      const took = performance.now() - start;
      expect(err.name).toBe('LockTimeoutError');
      expect(err.code).toBe('DLOCK_TIMEOUT');
      expect(took).toBeGreaterThanOrEqual(295);
      expect(took).toBeLessThan(1800);
      expect(await b.tryAcquire(key)).toBeNull();
      expect(b.heldCount).toBe(0);
      expect((await b.inspect(key))?.owner).toBe(holder.owner);
      expect(await holder.release()).toBe(true);
      const now = await b.tryAcquire(key);
      expect(now).not.toBeNull();
      await now?.release();
    });

    it('hands the lock to a waiter soon after release, long before the TTL (event-driven)', async () => {
      const key = uniqueKey('handoff');
      const a = await newClient();
      const b = await newClient();
      const holder = await a.acquire(key, { ttlMs: 10_000 });
      const start = performance.now();
      const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 20_000 });
      await sleep(100);
      expect(await holder.release()).toBe(true);
      const releasedAt = performance.now();
      const lease = await within(waiting, 5000, 'the waiter');
      const total = performance.now() - start;
      expect(total).toBeLessThan(2000);
      expect(performance.now() - releasedAt).toBeLessThan(1500);
      expect(lease.token).toBeGreaterThan(holder.token);
      expect(await lease.release()).toBe(true);
      note(factory.name, 'handoff', { releaseToGrantMs: Math.round(total - 100) });
    });

    it('fair drivers grant waiters in arrival order (FIFO), each one after the previous release', async () => {
      const probe = await newDriver();
      if (!probe.info.fair) {
        // Stated, not skipped silently: non-fair drivers promise no order; exclusion still holds.
        note(factory.name, 'fifo', { fair: false });
        expect(probe.info.fair).toBe(false);
        return;
      }
      const key = uniqueKey('fifo');
      const holderClient = await newClient();
      const holder = await holderClient.acquire(key, { ttlMs: 10_000 });
      const order: number[] = [];
      const waits: Promise<void>[] = [];
      for (let i = 0; i < 6; i++) {
        const c = await newClient();
        // Connected before it queues (a first connection can take longer than the spacing below).
        await c.inspect(key);
        waits.push(
          c.using(key, { ttlMs: 10_000, waitMs: 30_000 }, async () => {
            order.push(i);
            await sleep(20);
          }),
        );
        await sleep(300); // arrival order is unambiguous
      }
      expect(await holder.release()).toBe(true);
      await within(Promise.all(waits), 30_000, 'the queued waiters');
      expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    });

    if (factory.isolated) {
      const isolated = factory.isolated.bind(factory);
      it('a waiter does not poll the engine while the holder keeps the lock', async () => {
        const engine = await isolated();
        const local: LockClient[] = [];
        try {
          const a = new LockClient(await engine.create());
          const waiterDriver = await engine.create();
          const b = new LockClient(waiterDriver);
          local.push(a, b);
          // Count on the engine when it can tell; otherwise count the waiter driver's attempts
          // (its wait loop calls the instance's tryAcquire, which we wrap).
          let attempts = 0;
          const original = waiterDriver.tryAcquire.bind(waiterDriver);
          waiterDriver.tryAcquire = (...args) => {
            attempts++;
            return original(...args);
          };
          const operations = engine.operations?.bind(engine) ?? (() => Promise.resolve(attempts));
          const key = uniqueKey('no-poll');
          const holder = await a.acquire(key, { ttlMs: 10_000, renew: false });
          const waiting = b.acquire(key, { ttlMs: 10_000, waitMs: 20_000 });
          await sleep(300); // past the first tries and the watch setup
          const before = await operations();
          expect(before, 'the counter sees the attempts made so far').toBeGreaterThan(0);
          await sleep(1500);
          const during = (await operations()) - before;
          note(factory.name, 'lock operations by a waiter in 1.5 s', { during, counted: engine.operations ? 'engine' : 'driver' });
          // A 100 ms poll would be ~15; an event-driven waiter sleeps until a release or the TTL.
          expect(during).toBeLessThanOrEqual(2);
          expect(await holder.release()).toBe(true);
          const lease = await within(waiting, 5000, 'the waiter');
          expect(await lease.release()).toBe(true);
        } finally {
          await Promise.allSettled(local.map((c) => within(c.close(), 10_000, 'close()')));
          await engine.dispose();
        }
      });
    }

    // ---------------------------------------------------------------- reentrancy

    it('reentrant acquire re-enters inside using(); without reentrant the nested acquire times out', async () => {
      const key = uniqueKey('reentrant');
      const c = await newClient();
      const other = await newClient();
      await c.using(key, { reentrant: true, ttlMs: 5000 }, async (outer) => {
        const inner = await c.acquire(key, { reentrant: true, waitMs: 500 });
        expect(inner.token).toBe(outer.token);
        expect(inner.holdCount).toBe(2);
        expect(outer.holdCount).toBe(2);
        // Another client never re-enters this client's hold.
        expect(await other.tryAcquire(key, { reentrant: true })).toBeNull();
        expect(await inner.release()).toBe(true);
        expect(outer.holdCount).toBe(1);
        expect(outer.isHeld()).toBe(true);
        const state = await other.inspect(key);
        expect(state?.owner).toBe(outer.owner);
        expect(state?.token).toBe(outer.token);
      });
      expect(await other.inspect(key)).toBeNull();

      await c.using(key, { ttlMs: 5000 }, async (outer) => {
        const err = await errorOf(() => c.acquire(key, { waitMs: 300 }));
        expect(err.code).toBe('DLOCK_TIMEOUT');
        expect(outer.isHeld()).toBe(true);
        expect(outer.holdCount).toBe(1);
      });
      expect(await other.inspect(key)).toBeNull();

      // Outside any using()/run() scope, reentrant does not re-enter.
      const plain = await c.acquire(key, { ttlMs: 5000 });
      expect((await errorOf(() => c.acquire(key, { reentrant: true, waitMs: 200 }))).code).toBe('DLOCK_TIMEOUT');
      expect(await plain.release()).toBe(true);
      expect(c.heldCount).toBe(0);
    });

    // ---------------------------------------------------------------- inspect

    it('inspect: null when free; owner, holder, token and remaining TTL when held', async () => {
      const key = uniqueKey('inspect');
      const c = await newClient();
      const other = await newClient();
      expect(await other.inspect(key)).toBeNull();
      const ttlMs = 5000;
      const lease = await c.acquire(key, { ttlMs });
      const info = await other.inspect(key);
      expect(info).not.toBeNull();
      expect(info?.key).toBe(key);
      expect(info?.owner).toBe(lease.owner);
      expect(info?.holder?.pid).toBe(process.pid);
      expect(info?.holder?.host).toBe(hostTag);
      expect(info?.token).toBe(lease.token);
      expectRemaining(info?.remainingMs, ttlMs, other.driver);
      expect(await lease.release()).toBe(true);
      expect(await other.inspect(key)).toBeNull();
    });

    // ---------------------------------------------------------------- close

    const standalone = factory.standaloneUrl ?? factory.url;
    if (standalone) {
      it('close() leaves no open handles: a child that used the client exits by itself within 2 s', async () => {
        const key = uniqueKey('close-handles');
        const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test/support/close-check.ts'), standalone(), key], {
          cwd: repoRoot,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
          child.once('exit', (code) => resolve({ code, at: performance.now() })),
        );
        try {
          const reportedAt = await within(
            new Promise<number>((resolve, reject) => {
              child.stdout.on('data', () => {
                if (out.includes('\n')) resolve(performance.now());
              });
              void exited.then(() => reject(new Error(`child exited before reporting:\n${err}`)));
            }),
            30_000,
            'the close-check child',
          );
          const report = JSON.parse(out.split('\n')[0] ?? '{}') as {
            immediate: string[];
            afterTick: string[];
            after50ms: string[];
            tokens: string[];
          };
          const exit = await within(exited, 2000, `child exit after close() (active: ${JSON.stringify(report.afterTick)})`);
          expect(exit.code).toBe(0);
          expect(exit.at - reportedAt).toBeLessThan(2000);
          const leaks = report.afterTick.filter((r) => r !== 'PipeWrap' && r !== 'TTYWrap');
          expect(
            leaks,
            `active resources right after close(): ${JSON.stringify(report.immediate)}; after two loop turns: ${JSON.stringify(report.afterTick)}; 50 ms later: ${JSON.stringify(report.after50ms)}`,
          ).toEqual([]);
          expect(report.immediate.filter((r) => /Timeout|Immediate/.test(r))).toEqual([]);
          expect(BigInt(report.tokens[1] ?? '0')).toBeGreaterThan(BigInt(report.tokens[0] ?? '0'));
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
      });
    }

    it('close() aborts pending waits, loses held leases, releases their keys; a closed client refuses work', async () => {
      const key = uniqueKey('closed');
      const holderClient = await newClient();
      const waiterClient = await newClient();
      const observer = await newClient();
      const lease = await holderClient.acquire(key, { ttlMs: 10_000 });
      const waiting = waiterClient.acquire(key, { waitMs: 20_000 }).then(
        () => 'granted',
        (e: unknown) => e,
      );
      await sleep(100);
      await within(waiterClient.close(), 5000, 'close() with a pending wait');
      expect(await within(waiting, 2000, 'the pending wait')).toMatchObject({ code: 'DLOCK_CLOSED', name: 'ClosedError' });

      const signal = lease.signal;
      await within(holderClient.close(), 5000, 'close() with a held lease');
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(LockLostError);
      expect((signal.reason as LockLostError).reason).toBe('closed');
      expect(lease.isHeld()).toBe(false);
      expect(await observer.inspect(key)).toBeNull();

      for (const call of [
        () => holderClient.acquire(key),
        () => holderClient.tryAcquire(key),
        () => holderClient.using(key, () => 1),
        () => holderClient.inspect(key),
      ]) {
        const e = await errorOf(call);
        expect(e.code).toBe('DLOCK_CLOSED');
        expect(e.name).toBe('ClosedError');
      }
      await holderClient.close(); // idempotent
    });

    // ---------------------------------------------------------------- bad input

    it('refuses bad keys with TypeError DLOCK_INVALID_ARGUMENT', async () => {
      const c = await newClient();
      for (const bad of ['', 42, null, undefined, {}, ['k']] as unknown as string[]) {
        for (const call of [
          () => c.acquire(bad),
          () => c.tryAcquire(bad),
          () => c.using(bad, () => 1),
          () => c.inspect(bad),
        ]) {
          const e = await errorOf(call);
          expect(e).toBeInstanceOf(TypeError);
          expect(e.code).toBe('DLOCK_INVALID_ARGUMENT');
        }
      }
      expect(c.heldCount).toBe(0);
    });

    it('refuses out-of-range ttlMs / waitMs / maxHoldMs / renewRatio with RangeError DLOCK_OUT_OF_RANGE naming the option', async () => {
      const key = uniqueKey('range');
      const c = await newClient();
      const driver = await newDriver();
      const bads = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1.5, 2 ** 31];
      const expectRange = (e: Error & { code?: string; option?: string }, option: string, value: unknown): void => {
        expect(e, `${option}=${String(value)}`).toBeInstanceOf(RangeError);
        expect(e.code).toBe('DLOCK_OUT_OF_RANGE');
        expect(e.option).toBe(option);
        expect(e.message).toContain(option);
      };
      for (const option of ['ttlMs', 'waitMs', 'maxHoldMs'] as const) {
        for (const v of [...bads, ...(option === 'waitMs' ? [] : [0])]) {
          expectRange(await errorOf(() => c.acquire(key, { [option]: v })), option, v);
          expectRange(await errorOf(() => new LockClient(driver, { [option]: v })), option, v);
          if (option !== 'waitMs') expectRange(await errorOf(() => c.tryAcquire(key, { [option]: v })), option, v);
        }
      }
      for (const v of [1, 1.5, 0, -0.1, Number.NaN]) {
        expectRange(await errorOf(() => new LockClient(driver, { renewRatio: v })), 'renewRatio', v);
      }
      // Renewals need time to travel: a tiny TTL with renewal on is refused, without it allowed.
      expectRange(await errorOf(() => c.acquire(key, { ttlMs: 10 })), 'ttlMs', 10);
      // (It may still come back null: a grant whose validity ran out on the way is never reported.)
      const tiny = await c.tryAcquire(key, { ttlMs: 10, renew: false });
      await tiny?.release();
      expect(c.heldCount).toBe(0);
      expect(await c.inspect(key)).toBeNull();
    });

    it('reports bad input as a rejection, never as a synchronous throw', async () => {
      const c = await newClient();
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['acquire', () => c.acquire('')],
        ['tryAcquire', () => c.tryAcquire('')],
        ['tryAcquire ttlMs', () => c.tryAcquire('k', { ttlMs: Number.NaN })],
        ['using', () => c.using('', () => 1)],
        ['inspect', () => c.inspect('')],
      ];
      const sync: string[] = [];
      for (const [name, call] of calls) {
        let p: Promise<unknown> | undefined;
        try {
          p = call();
        } catch {
          sync.push(name);
        }
        if (p) await p.catch(() => undefined);
      }
      expect(sync).toEqual([]);
    });
  });
}
