/**
 * Liveness: renewal across several TTLs, the lost signal (key removed behind the back, engine
 * unavailable), an engine that refuses connections, and maxHoldMs.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { LockClient } from '../../../src/core/client.js';
import { connect } from '../../../src/connect.js';
import { isSessionDriver } from '../../../src/drivers/driver.js';
import { LockLostError, UnavailableError } from '../../../src/errors.js';
import { freePort } from '../../support/ports.js';
import type { SuiteContext } from './context.js';
import { describeChain, errorOf, expectRemaining, mentions, note, whenAborted, within } from './helpers.js';

export function defineLiveness(ctx: SuiteContext): void {
  const { factory, newClient, uniqueKey } = ctx;

  // ---------------------------------------------------------------- renewal

  it('renewal keeps a lock alive across several TTLs', async () => {
    const key = uniqueKey('renew');
    const a = await newClient();
    const b = await newClient();
    // A 1 s TTL renewed every ~333 ms: a renewal may run ~600 ms late (a loaded machine: CI runs
    // two Node lines side by side beside CPU hogs) before the lease is lost. With 300 ms, one
    // MariaDB table-mode renewal transaction stalled past 200 ms there and lost it.
    const ttlMs = 1000;
    const lease = await a.acquire(key, { ttlMs });
    const signal = lease.signal;
    await sleep(3.2 * ttlMs);
    expect(signal.aborted ? String(signal.reason) : 'not aborted').toBe('not aborted');
    expect(lease.isHeld()).toBe(true);
    const state = await b.inspect(key);
    expect(state?.owner).toBe(lease.owner);
    expect(state?.token).toBe(lease.token);
    expectRemaining(state?.remainingMs, ttlMs, a.driver);
    expect(await b.tryAcquire(key, { ttlMs })).toBeNull();
    expect(await lease.release()).toBe(true);
  });

  it('an idle session holding a lock stays connected: its own keep-alives alone never let it be suspended', async (t) => {
    const a = await newClient();
    const d = a.driver;
    if (d.info.liveness !== 'session' || !isSessionDriver(d)) t.skip(`${d.info.name} keeps its locks with TTLs, not a session (info.liveness): the renewal test covers it`);
    if (!isSessionDriver(d)) return;
    const lease = await a.acquire(uniqueKey('idle-session'), { ttlMs: 30_000 });
    const states: string[] = [];
    const off = d.onSessionState((s) => states.push(s));
    try {
      // Longer than every suite engine's session timeout (ZooKeeper 4 s, the others less):
      // nothing but the session's keep-alives and the lease's renewal runs meanwhile.
      await sleep(6000);
    } finally {
      off();
    }
    expect(states).toEqual([]);
    expect(d.sessionState).toBe('connected');
    expect(lease.isHeld()).toBe(true);
    expect(await lease.release()).toBe(true);
  }, 30_000);

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
}
