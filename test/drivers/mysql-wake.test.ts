/**
 * MySQL/MariaDB table mode, waking waiters (src/drivers/mysql/table.ts, "Waking waiters"), on a
 * private MariaDB that nothing else uses, with holders and waiters in separate clients (separate
 * connections, as separate processes would have):
 * - a release by a holder that is not the key's first holder (the second of two readers) wakes the
 *   queued writer, and the writer sends nothing to the server while it waits (counted with the
 *   server's `Questions` counter: one per statement, also inside a multi-statement batch);
 * - a semaphore holder's release admits the queued waiter while the other holder keeps its
 *   permits: the waiter is woken at once, not at the holders' TTL (30 s here).
 * Bounds are generous (seconds, against a 30 s TTL): the suite runs on a loaded machine.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { createMysqlDriver } from '../../src/drivers/mysql/index.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { startMysql, statementCounter, type MysqlServer } from '../support/mysql.js';

let server: MysqlServer;
const clients: LockClient[] = [];

beforeAll(async () => {
  server = await startMysql();
  questions = statementCounter(server);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

const TTL_MS = 30_000;

function client(): LockClient {
  const c = new LockClient(createMysqlDriver({ url: `${server.url}?mode=table` }), { ttlMs: TTL_MS });
  clients.push(c);
  return c;
}

/** Statements the server ran so far (see statementCounter). */
let questions: () => Promise<number>;

it("the second reader's release wakes the queued writer; the writer sends nothing while the other reader holds", async () => {
  const [a, b, w] = [client(), client(), client()];
  const key = `wake:rw:${Date.now()}`;
  const first = await new ReadWriteLock(a, key).read.acquire();
  const second = await new ReadWriteLock(b, key).read.acquire();
  let gotAt = 0;
  const writing = new ReadWriteLock(w, key).write.acquire({ waitMs: 60_000 }).then((l) => {
    gotAt = performance.now();
    return l;
  });
  await sleep(300);
  await first.release();
  // The writer may look once after that release; then nothing until the second reader's.
  await sleep(300);
  const before = await questions();
  await sleep(1500);
  const during = (await questions()) - before;
  expect(gotAt).toBe(0);
  const releasedAt = performance.now();
  await second.release();
  const lease = await writing;
  // Polling (20 ms, 40 ms, ... 250 ms) sent several tries of ~6 statements each in 1.5 s.
  expect(during).toBeLessThanOrEqual(3);
  expect(gotAt - releasedAt).toBeLessThan(5000);
  expect(lease.token).toBeGreaterThan(second.token);
  await lease.release();
}, 60_000);

it("a permit holder's release admits the queued waiter at once while the other holder keeps its permits", async () => {
  const [a, b, w] = [client(), client(), client()];
  const key = `wake:permits:${Date.now()}`;
  const one = await new Semaphore(a, key, { permits: 3 }).acquire({ permits: 1 });
  const two = await new Semaphore(b, key, { permits: 3 }).acquire({ permits: 2 });
  let gotAt = 0;
  const waiting = new Semaphore(w, key, { permits: 3 }).acquire({ permits: 2, waitMs: 60_000 }).then((l) => {
    gotAt = performance.now();
    return l;
  });
  await sleep(500);
  expect(gotAt).toBe(0);
  const releasedAt = performance.now();
  await two.release();
  const lease = await waiting;
  // Woken by that release, not at the first holder's TTL (30 s).
  expect(gotAt - releasedAt).toBeLessThan(5000);
  await Promise.all([lease.release(), one.release()]);
}, 60_000);
