/**
 * PostgreSQL table mode: a grant's fencing token is drawn once the key is ours, never before.
 *
 * The uncontended try is one `INSERT ... ON CONFLICT`. It once drew its token in the VALUES
 * list, before the insert met the key's row: a try that then waited on a release in flight (or
 * whose backend was descheduled on a loaded host) could insert its row after other grants of
 * the key had come and gone, with a token lower than theirs. CI saw it beside two CPU hogs:
 * "token 8 granted after token 10". Exclusion held, but a fenced store that had seen token 10
 * rejects the new holder's writes.
 *
 * Here the interleaving is made on purpose, with the driver's own steps: an administrator's
 * transaction releases the holder's row (uncommitted), a second client's try starts and waits
 * on that row, then, inside the same transaction, another owner is granted the key and releases
 * it; the commit lets the waiting try insert. Its token must be above the one granted meanwhile.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { createPostgresDriver } from '../../src/drivers/postgres/index.js';
import { notifyPayload } from '../../src/drivers/postgres/table.js';
import { namesFor } from '../../src/drivers/postgres/schema.js';
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

function client(): LockClient {
  const c = new LockClient(createPostgresDriver({ connection: server.url, mode: 'table' }), { ttlMs: 5000, waitMs: 10_000 });
  clients.push(c);
  return c;
}

it('a try that waited on a release in flight gets a token above every grant made meanwhile', async () => {
  const n = namesFor();
  const key = 'pg-token-order';
  const a = client();
  const b = client();
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
