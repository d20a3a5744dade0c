/**
 * PostgreSQL admission beyond the conformance suite, on a real server:
 * - session mode: readers of ONE client share the main connection, where the server only counts
 *   a shared lock up (it would let them pass a queued writer): the writer still gets in; a
 *   k-permit Semaphore is refused with an error that points to the table mode;
 * - table mode: a database whose tables an older dlock created (no `queued` column, no holders
 *   or waiters table, a live row of an old holder) keeps working, and a run leaves no row behind;
 *   read-write locks and semaphores work through PgBouncer in transaction pooling (each step is
 *   one statement), with the handoff NOTIFY heard on a direct LISTEN connection;
 * - table mode's fencing tokens: a grant's token is drawn once the key is ours. The uncontended
 *   try is one `INSERT ... ON CONFLICT`, which once drew its token in the VALUES list, computed
 *   before the insert meets the key's row: a try that then waited on a release in flight (or
 *   whose backend was descheduled on a loaded host) inserted its row after other grants had
 *   come and gone, with a lower token (CI, beside two CPU hogs: "token 8 granted after token
 *   10"). Exclusion held, but a fenced store that had seen 10 rejects the new holder's writes.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { createPostgresDriver } from '../../src/drivers/postgres/index.js';
import { namesFor } from '../../src/drivers/postgres/schema.js';
import { notifyPayload } from '../../src/drivers/postgres/table.js';
import { UnsupportedModeError } from '../../src/errors.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { startPgBouncer } from '../support/pgbouncer.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';

let server: PostgresServer;
const clients: LockClient[] = [];
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

function client(mode: 'session' | 'table', tablePrefix?: string): LockClient {
  const c = new LockClient(createPostgresDriver({ connection: server.url, mode, ...(tablePrefix ? { tablePrefix } : {}) }), { ttlMs: 5000, waitMs: 20_000 });
  clients.push(c);
  return c;
}

describe('postgres session mode: shared holds', () => {
  it('readers of one client keep overlapping on its main connection; a queued writer of another client still gets in', async () => {
    const readers = client('session');
    const rwR = new ReadWriteLock(readers, 'pg-one-conn-readers');
    let inside = 0;
    let writing = false;
    let readsWhileWriting = 0;
    let stop = false;
    // Eight overlapping loops: the key is never free of readers of this client (without the
    // check for a queued writer, the writer waited 7 s here; with it, 0.25 s).
    const loops = Array.from({ length: 8 }, async (_, i) => {
      await sleep(i * 5);
      while (!stop) {
        await rwR.read.using(async () => {
          inside += 1;
          if (writing) readsWhileWriting += 1;
          await sleep(40);
          inside -= 1;
        });
      }
    });
    while (inside === 0) await sleep(5);
    const t0 = performance.now();
    const readersInside = await new ReadWriteLock(client('session'), rwR.name).write.using({ waitMs: 4000 }, async () => {
      writing = true;
      const n = inside;
      await sleep(20);
      writing = false;
      return n;
    });
    const waited = performance.now() - t0;
    stop = true;
    await Promise.all(loops);
    expect(readersInside).toBe(0);
    expect(readsWhileWriting).toBe(0);
    console.info(`[postgres-session] writer behind one client's readers waited ${Math.round(waited)} ms`);
  }, 30_000);

  it('a Semaphore taking several permits at once is refused with an error that names the table mode', async () => {
    const sem = new Semaphore(client('session'), 'pg-session-sem', { permits: 3 });
    expect(sem.construction).toBe('per-permit');
    const e = await sem.acquire({ permits: 2 }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(UnsupportedModeError);
    expect((e as Error).message).toMatch(/mode: 'table'/);
  });
});

describe('postgres table mode: admission tables', () => {
  it('works on tables an older dlock created, respecting its live row, and leaves no row behind', async () => {
    const p = 'old_';
    // The lease table as dlock 0.2 created it, with a live row of an old holder.
    await server.sql(`CREATE SEQUENCE "${p}tokens"`);
    await server.sql(`CREATE TABLE "${p}locks" (key text PRIMARY KEY, owner text NOT NULL, token bigint NOT NULL, expires_at timestamptz NOT NULL)`);
    await server.sql(`INSERT INTO "${p}locks" VALUES ('old-key', 'old-holder', nextval('"${p}tokens"'), clock_timestamp() + interval '800 milliseconds')`);
    const c = client('table', p);
    const rw = new ReadWriteLock(c, 'old-key');
    expect(await rw.read.tryAcquire()).toBeNull();
    // Its row expires; then readers share the key and a semaphore takes k permits at once.
    const [r1, r2] = await Promise.all([rw.read.acquire({ waitMs: 5000 }), rw.read.acquire({ waitMs: 5000 })]);
    expect((await rw.inspect()).holders).toHaveLength(2);
    await Promise.all([r1.release(), r2.release()]);
    const sem = new Semaphore(c, 'old-sem', { permits: 5 });
    const three = await sem.acquire({ permits: 3 });
    expect(await sem.tryAcquire({ permits: 3 })).toBeNull();
    const waiter = sem.acquire({ permits: 3, waitMs: 5000 });
    await sleep(100);
    await three.release();
    await (await waiter).release();
    const left = await server.sql<{ n: number }>(
      `SELECT (SELECT count(*) FROM "${p}locks") + (SELECT count(*) FROM "${p}holders") + (SELECT count(*) FROM "${p}waiters") AS n`,
    );
    expect(Number(left[0]!.n)).toBe(0);
  }, 20_000);

  it('read-write lock and k-permit semaphore through PgBouncer pool_mode=transaction', async () => {
    const bouncer = await startPgBouncer(server, { poolMode: 'transaction' });
    try {
      const make = (): LockClient => {
        const c = new LockClient(createPostgresDriver({ connection: bouncer.url, mode: 'table', listen: server.url, tablePrefix: 'pooled_' }), { ttlMs: 5000, waitMs: 10_000 });
        clients.push(c);
        return c;
      };
      const [a, b] = [make(), make()];
      const read = await new ReadWriteLock(a, 'pooled-rw').read.acquire();
      const writer = new ReadWriteLock(b, 'pooled-rw').write.acquire();
      await sleep(100);
      // The queued writer stops a new reader; the release hands the key to it.
      expect(await new ReadWriteLock(a, 'pooled-rw').read.tryAcquire()).toBeNull();
      await read.release();
      const w = await writer;
      expect(w.token).toBeGreaterThan(read.token);
      await w.release();
      const sem = new Semaphore(a, 'pooled-sem', { permits: 3 });
      const two = await sem.acquire({ permits: 2 });
      expect(await new Semaphore(b, 'pooled-sem', { permits: 3 }).tryAcquire({ permits: 2 })).toBeNull();
      await two.release();
      expect(await sem.inUse()).toBe(0);
    } finally {
      await bouncer.stop();
    }
  }, 30_000);
});

describe('postgres table mode: fencing tokens', () => {
  // The interleaving is made on purpose, with the driver's own steps: an administrator's
  // transaction releases the holder's row (uncommitted), a second client's try starts and waits
  // on that row, then, inside the same transaction, another owner is granted the key and releases
  // it; the commit lets the waiting try insert. Its token must be above the one granted meanwhile.
  it('a try that waited on a release in flight gets a token above every grant made meanwhile', async () => {
    const prefix = 'tokens_';
    const n = namesFor(prefix);
    const key = 'pg-token-order';
    const a = client('table', prefix);
    const b = client('table', prefix);
    const first = await a.tryAcquire(key);
    expect(first).not.toBeNull();
    // b's tables are checked (DDL) before the transaction below holds locks on them.
    expect(await b.tryAcquire('pg-token-order-warm-up').then((l) => l?.release())).toBe(true);
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      const release = (owner: string): Promise<unknown> =>
        admin.query(`SELECT ${n.fn.release}($1, $2, false, $3, $4, $5)`, [key, owner, n.handoffChannelName, n.channelName, notifyPayload(key)]);
      await admin.query('BEGIN');
      // The holder's release, not yet committed: the row is deleted, its lock held by this transaction.
      await release(first!.owner);
      const trying = b.tryAcquire(key);
      trying.catch(() => undefined); // awaited below; a failure before that must not go unhandled
      // The try is on the server, waiting for this transaction (its row lock), with nothing else to do.
      for (let i = 0; ; i++) {
        const rows = await server.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
          [n.fn.acquire],
        );
        if (rows[0]?.n === 1) break;
        if (i > 500) throw new Error('the second client\'s try never waited on the key');
        await sleep(10);
      }
      // Meanwhile another owner is granted the key (the driver's own step) and gives it back.
      const [granted] = (
        await admin.query<{ token: string }>(`SELECT o_token AS token FROM ${n.fn.acquire}($1, 'meanwhile', 5000, 'x', 0, 0, false, '', false, $2)`, [
          key,
          n.handoffChannelName,
        ])
      ).rows;
      expect(granted?.token).not.toBeNull();
      const meanwhile = BigInt(granted!.token);
      await release('meanwhile');
      await admin.query('COMMIT');
      const lease = await trying;
      expect(lease, 'the key was free once the transaction committed').not.toBeNull();
      expect(lease!.token > meanwhile, `token ${lease!.token} granted after token ${meanwhile}`).toBe(true);
      expect(lease!.token > first!.token).toBe(true);
      expect(await lease!.release()).toBe(true);
    } finally {
      await admin.end();
    }
  }, 30_000);
});
