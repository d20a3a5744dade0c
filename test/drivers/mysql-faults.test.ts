/**
 * MySQL/MariaDB fault tests on a private MariaDB (real root user over TCP, grant tables on):
 * - kill -9 of the holder's process: in session mode the lock is free as soon as the server sees
 *   the disconnect (long before the TTL);
 * - an admin's `KILL <id>` of the holder's connection: `lease.signal` aborts ('session-lost'),
 *   `sessionState` reports it, nothing is left unhandled, the client keeps working;
 * - a server restart while waiters wait: typed errors only (never a raw driver error or an
 *   unhandled rejection), then the same clients work again without being recreated;
 * - a connection reset with a statement in flight (server killed while stopped): a typed error,
 *   then the same client works again (the reset connection is replaced, not reused).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import type { SessionState } from '../../src/drivers/driver.js';
import { createMysqlDriver, keyNames, MysqlSessionDriver, type MysqlMode } from '../../src/drivers/mysql/index.js';
import { isDlockError, LockAbortedError, LockLostError, UnsupportedModeError } from '../../src/errors.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { abortWhileConnecting } from '../support/abort-while-connecting.js';
import { startDelayProxy } from '../support/delay-proxy.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { forkWorker, killWorkers, startTogether } from '../support/workers.js';

let server: MysqlServer;
const clients: LockClient[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(async () => {
  server = await startMysql();
  process.on('unhandledRejection', onUnhandled);
}, 120_000);

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await server?.stop();
});

afterEach(async () => {
  await killWorkers();
  await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  await sleep(50);
  expect(unhandled).toEqual([]);
});

const url = (mode: MysqlMode): string => `${server.url}?mode=${mode}`;
const client = (mode: MysqlMode): LockClient => {
  const c = new LockClient(createMysqlDriver({ url: url(mode) }));
  clients.push(c);
  return c;
};
let n = 0;
const uniqueKey = (name: string): string => `faults:${name}:${process.pid}:${++n}`;

/** Resolve with the signal's reason once it aborts; reject after `ms`. */
function aborted(signal: AbortSignal, ms: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      resolve(signal.reason);
      return;
    }
    const timer = setTimeout(() => reject(new Error(`signal did not abort within ${ms} ms`)), ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve(signal.reason);
      },
      { once: true },
    );
  });
}

describe('mysql session mode: holder faults', () => {
  it('kill -9 of the holder process frees the lock as soon as the server sees the disconnect (TTL 30 s)', async () => {
    const key = uniqueKey('kill9');
    const worker = forkWorker({ mode: 'hold', url: url('session'), key, ttlMs: 30_000 });
    await startTogether([worker]);
    const held = await worker.next('held', 30_000);
    const c = client('session');
    expect((await c.inspect(key))?.holder?.pid).toBe(worker.pid);
    expect(await c.tryAcquire(key)).toBeNull();

    // A waiter blocked in the server (GET_LOCK) is granted the moment the connection drops.
    const waiting = c.acquire(key, { ttlMs: 5000, waitMs: 20_000 });
    await sleep(200);
    const killedAt = performance.now();
    process.kill(worker.pid, 'SIGKILL');
    const lease = await waiting;
    const freedAfterMs = performance.now() - killedAt;
    console.info(`[mysql-faults] session kill -9: freed after ${freedAfterMs.toFixed(1)} ms (TTL 30000 ms)`);
    expect(freedAfterMs).toBeLessThan(2000);
    expect(lease.token).toBeGreaterThan(BigInt(held.token));
    expect(await lease.release()).toBe(true);
  });

  it("an admin's KILL of the holder's connection aborts lease.signal (session-lost); the client keeps working", async () => {
    const key = uniqueKey('admin-kill');
    const driver = createMysqlDriver({ url: url('session') }) as MysqlSessionDriver;
    const states: SessionState[] = [];
    driver.onSessionState((s) => states.push(s));
    const c = new LockClient(driver);
    clients.push(c);
    const other = client('session');
    const lease = await c.acquire(key, { ttlMs: 10_000 });
    expect(driver.sessionState).toBe('connected');
    const names = keyNames('dlock', 'dlock_', key);
    const rows = (await server.sql('SELECT IS_USED_LOCK(?) AS id', [names.lock])) as Array<{ id: number | null }>;
    const id = Number(rows[0]?.id);
    expect(id).toBeGreaterThan(0);

    const lost = aborted(lease.signal, 5000);
    const killedAt = performance.now();
    await server.sql(`KILL ${id}`);
    const reason = await lost;
    console.info(`[mysql-faults] admin KILL: lease.signal aborted after ${(performance.now() - killedAt).toFixed(1)} ms`);
    expect(reason).toBeInstanceOf(LockLostError);
    expect((reason as LockLostError).reason).toBe('session-lost');
    expect(lease.isHeld()).toBe(false);
    expect(states).toContain('lost');
    expect(await lease.release()).toBe(false);

    // The server let it go: another client takes it at once, with a higher token.
    const next = await other.tryAcquire(key, { ttlMs: 5000 });
    expect(next).not.toBeNull();
    expect(next?.token).toBeGreaterThan(lease.token);
    await next?.release();

    // The same client opens a new session on its next acquisition.
    const again = await c.acquire(key, { ttlMs: 5000, waitMs: 5000 });
    expect(driver.sessionState).toBe('connected');
    expect(again.token).toBeGreaterThan(next?.token ?? 0n);
    expect(await again.release()).toBe(true);
  });
});

describe('mysql session mode: long server waits', () => {
  it('a waiter blocked in GET_LOCK for longer than its TTL still gets a valid lease', async () => {
    const key = uniqueKey('long-wait');
    const a = client('session');
    const b = client('session');
    const holder = await a.acquire(key, { ttlMs: 10_000 });
    const waiting = b.acquire(key, { ttlMs: 1000, waitMs: 20_000 });
    await sleep(2500); // 2.5 waiter TTLs
    expect(await holder.release()).toBe(true);
    const lease = await waiting;
    expect(lease.isHeld()).toBe(true);
    expect(lease.token).toBeGreaterThan(holder.token);
    await sleep(2000); // renewed past its TTL
    expect(lease.isHeld()).toBe(true);
    expect((await a.inspect(key))?.owner).toBe(lease.owner);
    expect(await lease.release()).toBe(true);
  });
});

describe('mysql: session and table mode on one key', () => {
  it('a key held in one mode is busy for the other, and tokens keep increasing across modes', async () => {
    const key = uniqueKey('mixed');
    const session = client('session');
    const table = client('table');
    const s1 = await session.acquire(key, { ttlMs: 5000 });
    expect(await table.tryAcquire(key)).toBeNull();
    expect((await table.inspect(key))?.owner).toBe(s1.owner);
    expect(await s1.release()).toBe(true);
    const t1 = await table.acquire(key, { ttlMs: 5000 });
    expect(t1.token).toBeGreaterThan(s1.token);
    expect(await session.tryAcquire(key)).toBeNull();
    expect(await t1.release()).toBe(true);
    const s2 = await session.acquire(key, { ttlMs: 5000 });
    expect(s2.token).toBeGreaterThan(t1.token);
    expect(await s2.release()).toBe(true);
  });
});

describe('mysql: admission modes (read-write locks, semaphores)', () => {
  it('session mode refuses a read-write lock with UnsupportedModeError that points to the table mode, which grants it', async () => {
    const key = uniqueKey('rw-session');
    const e = (() => {
      try {
        new ReadWriteLock(client('session'), key);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(e).toBeInstanceOf(UnsupportedModeError);
    expect((e as UnsupportedModeError).code).toBe('DLOCK_UNSUPPORTED_MODE');
    expect((e as Error).message).toMatch(/GET_LOCK, which has no shared mode/);
    expect((e as Error).message).toMatch(/mode: 'table'/);
    const rw = new ReadWriteLock(client('table'), key);
    const [r1, r2] = [await rw.read.acquire(), await new ReadWriteLock(client('table'), key).read.acquire()];
    expect(r2.token).toBeGreaterThan(r1.token);
    await Promise.all([r1.release(), r2.release()]);
  });

  it('table-mode readers and permits are busy for session mode; tokens keep increasing across modes and admissions', async () => {
    const key = uniqueKey('rw-mixed');
    const session = client('session');
    const table = client('table');
    const read = await new ReadWriteLock(table, key).read.acquire({ ttlMs: 5000 });
    expect(await session.tryAcquire(key)).toBeNull();
    await read.release();
    const s1 = await session.acquire(key, { ttlMs: 5000 });
    expect(s1.token).toBeGreaterThan(read.token);
    // A session holder is exclusive for the table mode's permits too.
    expect(await new Semaphore(table, key, { permits: 3 }).tryAcquire()).toBeNull();
    await s1.release();
    const p = await new Semaphore(table, key, { permits: 3 }).acquire({ permits: 2 });
    expect(p.token).toBeGreaterThan(s1.token);
    expect(await session.tryAcquire(key)).toBeNull();
    await p.release();
    const s2 = await session.acquire(key, { ttlMs: 5000 });
    expect(s2.token).toBeGreaterThan(p.token);
    await s2.release();
  });

  it('tables of an older version (no holders/waiters tables, no crowded column) keep their tokens and get the new modes', async () => {
    const prefix = `old${process.pid}_`;
    const key = uniqueKey('old-table');
    await server.sql(
      `CREATE TABLE dlock.${prefix}locks (id BINARY(32) NOT NULL PRIMARY KEY, name TEXT NOT NULL, owner VARBINARY(255) NULL, token BIGINT NOT NULL,
         expires_at DATETIME(6) NULL, session_id BIGINT UNSIGNED NULL, mark BIGINT NOT NULL DEFAULT 0) ENGINE = InnoDB`,
    );
    await server.sql(`INSERT INTO dlock.${prefix}locks (id, name, owner, token) VALUES (?, ?, NULL, 41)`, [keyNames('dlock', prefix, key).id, key]);
    const c = new LockClient(createMysqlDriver({ url: `${url('table')}&tablePrefix=${prefix}` }));
    clients.push(c);
    const w = await new ReadWriteLock(c, key).write.acquire();
    expect(w.token).toBe(42n);
    await w.release();
    const r = await new ReadWriteLock(c, key).read.acquire();
    expect(r.token).toBe(43n);
    await r.release();
  });
});

describe.each(['session', 'table'] as const)('mysql %s mode: connection reset with a statement in flight', (mode) => {
  // A server killed while a statement sits unread in its socket answers with a TCP reset, not a
  // close: mysql2 then hands the (fatal) error to that statement only and emits neither 'error'
  // nor 'end'. The driver must still treat the connection as dead, or every later statement on
  // it fails ("connection is in closed state") and the client never recovers.
  it('the statement fails with a typed error, then the same client works again after the restart', async () => {
    const key = uniqueKey(`reset-${mode}`);
    const c = client(mode);
    const warm = await c.acquire(key, { ttlMs: 5000 });
    expect(await warm.release()).toBe(true);
    server.pause(); // SIGSTOP: the next statement stays unread in the server's socket buffer
    let outcome: { lease: unknown } | { error: unknown };
    try {
      await sleep(200); // the stop has landed
      const inFlight = c.tryAcquire(key, { ttlMs: 5000 }).then(
        (lease) => ({ lease }),
        (error: unknown) => ({ error }),
      );
      await sleep(300);
      // SIGKILL while still stopped (so the statement is never read): the kernel resets the
      // socket. Then reap it (halt) before starting it again.
      process.kill(server.pid, 'SIGKILL');
      await server.halt({ hard: true });
      outcome = await inFlight;
    } finally {
      await server.start();
    }
    expect('error' in outcome && isDlockError(outcome.error), String('error' in outcome ? outcome.error : 'granted')).toBe(true);

    // Waits, single tries and reads (these use the key's home connection, the one reset).
    const lease = await c.acquire(key, { ttlMs: 5000, waitMs: 15_000 });
    expect(lease.isHeld()).toBe(true);
    expect((await c.inspect(key))?.owner).toBe(lease.owner);
    expect(await lease.release()).toBe(true);
    const again = await c.tryAcquire(key, { ttlMs: 5000 });
    expect(again?.isHeld()).toBe(true);
    expect(await again?.release()).toBe(true);
  }, 90_000);
});

describe.each(['session', 'table'] as const)('mysql %s mode: server restart while waiters wait', (mode) => {
  it('waiters get typed errors (or the lock after the restart), then the same clients work again', async () => {
    const key = uniqueKey(`restart-${mode}`);
    const holderClient = client(mode);
    const waiterClients = [client(mode), client(mode), client(mode)];
    const holder = await holderClient.acquire(key, { ttlMs: 2000 });
    const holderLost = aborted(holder.signal, 20_000).catch((e: unknown) => e);
    // Short waits run out while the server is down; a long one outlives the outage.
    const waits = waiterClients.map((c, i) =>
      c.acquire(key, { ttlMs: 5000, waitMs: i < 2 ? 1500 : 30_000 }).then(
        (lease) => ({ lease }),
        (error: unknown) => ({ error }),
      ),
    );
    await sleep(300);
    const restartAt = performance.now();
    await server.restart({ hard: true, downMs: 2500 });
    const restartMs = performance.now() - restartAt;

    const outcomes = await Promise.all(waits);
    for (const [i, o] of outcomes.entries()) {
      if ('error' in o) {
        // Typed, with a code; the short waits that ran out during the outage say it was unavailable.
        expect(isDlockError(o.error), String(o.error)).toBe(true);
        expect(['DLOCK_UNAVAILABLE', 'DLOCK_TIMEOUT']).toContain((o.error as { code: string }).code);
        if (i < 2) expect((o.error as { code: string }).code).toBe('DLOCK_UNAVAILABLE');
      } else {
        expect(i).toBe(2);
        await o.lease.release();
      }
    }
    const errorCodes = outcomes.map((o) => ('error' in o ? (o.error as { code: string }).code : 'granted'));
    console.info(
      `[mysql-faults] ${mode} restart: back after ${restartMs.toFixed(0)} ms, waiter outcomes ${JSON.stringify(errorCodes)}`,
    );
    expect(errorCodes.slice(0, 2)).toEqual(['DLOCK_UNAVAILABLE', 'DLOCK_UNAVAILABLE']);
    // The long waiter outlives the outage (its 30 s wait minus the restart time is left).
    const long = outcomes[2];
    const why = long && 'error' in long ? `${String(long.error)} <- ${String((long.error as Error).cause)}` : '';
    expect(errorCodes[2], `restart took ${restartMs.toFixed(0)} ms; ${why}`).toBe('granted');

    // The holder was told: at once in session mode (its connection ended), at its local deadline
    // in table mode (renewals failed while the server was down), unless a renewal went through
    // after the restart and the long waiter then took over.
    const reason = await holderLost;
    expect(reason).toBeInstanceOf(LockLostError);
    if (mode === 'session') expect((reason as LockLostError).reason).toBe('session-lost');

    // Recovery without new clients: every client acquires and releases again.
    for (const c of [holderClient, ...waiterClients]) {
      const lease = await c.acquire(key, { ttlMs: 5000, waitMs: 10_000 });
      expect(lease.isHeld()).toBe(true);
      expect(await lease.release()).toBe(true);
    }
  }, 90_000);
});

describe('mysql session mode: abort while the wait opens its connection', () => {
  it('ends the wait promptly and leaves nothing waiting or held on the server', async () => {
    const key = uniqueKey('abort-connecting');
    const holder = client('session');
    const held = await holder.acquire(key, { ttlMs: 10_000 });
    // The waiter reaches the server through a delaying proxy: opening its wait connection is slow.
    const proxy = await startDelayProxy(server.port);
    const waiter = new LockClient(createMysqlDriver({ url: `mysql://root@127.0.0.1:${proxy.port}/dlock?mode=session` }));
    try {
      const { outcome, settledAfterMs } = await abortWhileConnecting(waiter, proxy, key);
      expect(outcome).toBeInstanceOf(LockAbortedError);
      expect(settledAfterMs).toBeLessThan(1000);
      // Long enough for the slow connection to open and a missed abort to start its server wait.
      await sleep(4000);
      const waits = (await server.sql(
        `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE '%GET_LOCK%' AND ID <> CONNECTION_ID()`,
      )) as Array<{ n: number }>;
      expect(Number(waits[0]?.n)).toBe(0);
      // The holder still holds it alone; once released, anyone gets it at once.
      expect(await held.release()).toBe(true);
      const next = await client('session').tryAcquire(key);
      expect(next).not.toBeNull();
      expect(await next?.release()).toBe(true);
    } finally {
      await waiter.close();
      await proxy.close();
    }
  }, 30_000);
});
