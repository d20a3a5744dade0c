/**
 * PostgreSQL faults: a holder killed with kill -9 (session mode: free as soon as the server sees
 * the disconnect, long before any TTL), an administrator ending the holder's session
 * (pg_terminate_backend: lease.signal aborts, the session state goes lost then connected, no
 * unhandled rejection), and a server restart while waiters wait (typed errors while it is down,
 * recovery without a new client), in both modes.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { SessionState } from '../../src/drivers/driver.js';
import { createPostgresDriver, PostgresSessionDriver } from '../../src/drivers/postgres/index.js';
import { LockAbortedError, LockLostError } from '../../src/errors.js';
import { abortWhileConnecting } from '../support/abort-while-connecting.js';
import { startDelayProxy } from '../support/delay-proxy.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { forkWorker, killWorkers, startTogether } from '../support/workers.js';

let server: PostgresServer;
const clients: LockClient[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(async () => {
  server = await startPostgres();
  process.on('unhandledRejection', onUnhandled);
});
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await server?.stop();
});
afterEach(async () => {
  await killWorkers();
  await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  await sleep(50); // let stray rejections surface
  expect(unhandled).toEqual([]);
});

function client(mode: 'session' | 'table', s: PostgresServer = server, ttlMs = 5000): LockClient {
  const c = new LockClient(createPostgresDriver({ connection: s.url, mode }), { ttlMs, waitMs: 20_000 });
  clients.push(c);
  return c;
}

function whenAborted(signal: AbortSignal, ms: number): Promise<{ reason: unknown; at: number }> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve({ reason: signal.reason, at: performance.now() });
    const t = setTimeout(() => reject(new Error(`signal not aborted within ${ms} ms`)), ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve({ reason: signal.reason, at: performance.now() });
    });
  });
}

describe('postgres session mode faults', () => {
  it('kill -9 of the holder process: the waiter gets the lock as soon as the server sees the disconnect (TTL 60 s)', async () => {
    const key = `faults:kill9:${Date.now()}`;
    const ttlMs = 60_000;
    const worker = forkWorker({ mode: 'hold', url: `${server.url}?mode=session`, key, ttlMs });
    await startTogether([worker]);
    const held = await worker.next('held', 30_000);
    const c = client('session');
    expect((await c.inspect(key))?.holder?.pid).toBe(worker.pid);
    const waiting = c.acquire(key, { ttlMs: 5000, waitMs: 20_000 });
    await sleep(300); // the waiter is queued in the server's lock manager
    const killedAt = performance.now();
    process.kill(worker.pid, 'SIGKILL');
    const lease = await waiting;
    const tookMs = performance.now() - killedAt;
    console.info(`[postgres-faults] kill -9 holder -> waiter granted after ${tookMs.toFixed(1)} ms (TTL ${ttlMs} ms)`);
    expect(tookMs).toBeLessThan(3000); // far below the TTL: freed by the disconnect
    expect(lease.token).toBeGreaterThan(BigInt(held.token));
    expect(await lease.release()).toBe(true);
  });

  it('pg_terminate_backend of the holder: lease.signal aborts (session-lost), states lost -> connected, and the client recovers', async () => {
    const key = `faults:terminate:${Date.now()}`;
    const driver = createPostgresDriver({ connection: server.url, mode: 'session' }) as PostgresSessionDriver;
    const a = new LockClient(driver, { ttlMs: 5000 });
    clients.push(a);
    const b = client('session');
    const states: SessionState[] = [];
    driver.onSessionState((s) => states.push(s));
    const lease = await a.acquire(key);
    const waiting = b.acquire(key, { waitMs: 20_000 });
    await sleep(200);
    const pid = driver.holderPid(key);
    expect(pid).toBeGreaterThan(0);
    const aborted = whenAborted(lease.signal, 5000);
    const killedAt = performance.now();
    expect(await server.sql('SELECT pg_terminate_backend($1) AS ok', [pid])).toEqual([{ ok: true }]);
    const { reason, at } = await aborted;
    expect(reason).toBeInstanceOf(LockLostError);
    expect((reason as LockLostError).reason).toBe('session-lost');
    expect(at - killedAt).toBeLessThan(2000);
    expect(lease.isHeld()).toBe(false);
    const next = await waiting;
    expect(next.token).toBeGreaterThan(lease.token);
    expect(await lease.release()).toBe(false);
    expect(await next.release()).toBe(true);
    // The same client works again: a new session is opened.
    const again = await a.acquire(key);
    expect(again.token).toBeGreaterThan(next.token);
    expect(await again.release()).toBe(true);
    expect(states).toContain('lost');
    expect(states.at(-1)).toBe('connected');
    expect(driver.sessionState).toBe('connected');
  });
});

describe.each(['session', 'table'] as const)('postgres %s mode: server restart while waiters wait', (mode) => {
  let own: PostgresServer;
  beforeAll(async () => {
    own = await startPostgres();
  });
  afterAll(async () => {
    await own?.stop();
  });

  it('clear typed errors while down, recovery without a new client', async () => {
    const key = `faults:restart:${mode}`;
    const a = client(mode, own, 3000);
    const b = client(mode, own, 3000);
    const c = client(mode, own, 3000);
    const lease = await a.acquire(key);
    const bWaits = b.acquire(key, { waitMs: 30_000 });
    await sleep(200);

    await own.shutdown();
    // While down: an acquisition fails with a typed error within its wait.
    const started = performance.now();
    const err = await c.acquire(`${key}:other`, { waitMs: 800 }).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(err?.code).toBe('DLOCK_UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(3000);
    if (mode === 'session') {
      // The holder's session ended with the server: told at once.
      expect(lease.signal.aborted).toBe(true);
      expect((lease.signal.reason as LockLostError).reason).toBe('session-lost');
    }
    await sleep(300);
    await own.start();

    // The waiter recovers within its own wait (no new client). Table mode: the lease row survived
    // the restart, and its holder still renews it, so the waiter gets it after the release.
    if (mode === 'table') {
      await sleep(300);
      expect(lease.isHeld()).toBe(true);
      expect(await lease.release()).toBe(true);
    }
    const next = await bWaits;
    expect(next.token).toBeGreaterThan(lease.token);
    expect(await next.release()).toBe(true);
    // Every client works again.
    for (const x of [a, c]) {
      const l = await x.acquire(key, { waitMs: 10_000 });
      expect(l.token).toBeGreaterThan(next.token);
      expect(await l.release()).toBe(true);
    }
  }, 60_000);

  it('a shutdown while statements run raises no uncaught exception in the host (busy clients, 3 restarts)', async () => {
    // pg-pool listens for a connection's errors only while it is idle: the server's FATAL (57P01
    // on shutdown) reaching a checked-out or discarded pooled connection used to be emitted with
    // no listener. Session mode opens its own connections; both modes run the same load.
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => void uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      for (let round = 0; round < 3; round++) {
        const busy = [0, 1, 2, 3].map(() => client(mode, own, 3000));
        let stop = false;
        const loops = busy.map(async (c, i) => {
          while (!stop) {
            try {
              const l = await c.acquire(`faults:uncaught:${mode}:${i % 2}`, { waitMs: 500 });
              await l.release();
            } catch {
              await sleep(20);
            }
          }
        });
        await sleep(300);
        await own.shutdown();
        await sleep(500);
        await own.start();
        await sleep(300);
        stop = true;
        await Promise.all(loops);
        await Promise.all(busy.map((c) => c.close()));
      }
      await sleep(100);
      expect(uncaught.map((e) => (e as Error).message)).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  }, 60_000);
});

describe('postgres session mode: abort while the wait opens its connection', () => {
  it('ends the wait promptly and leaves nothing waiting or held on the server', async () => {
    const key = `faults:abort-connecting:${Date.now()}`;
    const holder = client('session');
    const held = await holder.acquire(key);
    // The waiter reaches the server through a delaying proxy: opening its wait connection is slow.
    const proxy = await startDelayProxy(server.port);
    try {
      const waiter = client('session', { ...server, url: `postgres://postgres@127.0.0.1:${proxy.port}/postgres` });
      const { outcome, settledAfterMs } = await abortWhileConnecting(waiter, proxy, key);
      expect(outcome).toBeInstanceOf(LockAbortedError);
      expect(settledAfterMs).toBeLessThan(1000);
      // Long enough for the slow connection to open and a missed abort to start its server wait.
      await sleep(3000);
      const waits = await server.sql<{ n: string }>(`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`);
      expect(Number(waits[0]?.n)).toBe(0);
      // The holder still holds it alone; once released, anyone gets it at once.
      expect(await held.release()).toBe(true);
      const next = await client('session').tryAcquire(key);
      expect(next).not.toBeNull();
      expect(await next?.release()).toBe(true);
    } finally {
      await Promise.allSettled(clients.splice(0).map((c) => c.close()));
      await proxy.close();
    }
  }, 30_000);
});
