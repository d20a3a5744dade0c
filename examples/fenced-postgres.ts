/**
 * Fenced writes to PostgreSQL: a holder that was paused past its lock's TTL (GC, SIGSTOP, a slow
 * network) must not overwrite the newer holder's data. Each write carries the lease's fencing
 * token; the row keeps the highest token written, and an older token's write is refused.
 *
 *   DATABASE_URL=postgres://app:secret@127.0.0.1:5432/app npx tsx examples/fenced-postgres.ts
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { connect, StaleTokenError } from 'dlock';
import { fencedUpdate } from 'dlock/postgres';

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const db = new pg.Pool({ connectionString: url });
await db.query('CREATE TABLE IF NOT EXISTS stock (id int PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0)');
await db.query('INSERT INTO stock VALUES (42, 10, 0) ON CONFLICT (id) DO UPDATE SET count = 10, fence = 0');

// Lease rows with a TTL (mode=table); two clients stand for two processes.
const a = await connect(`${url}?mode=table`, { ttlMs: 1_000, renew: false });
const b = await connect(`${url}?mode=table`, { ttlMs: 1_000 });

async function take(lease: { token: bigint }, by: string): Promise<void> {
  const { rows } = await db.query<{ count: number }>('SELECT count FROM stock WHERE id = 42');
  await fencedUpdate(db, { table: 'stock', where: { id: 42 }, set: { count: rows[0]!.count - 1 }, token: lease.token });
  console.log(`${by} wrote with token ${lease.token}`);
}

const slow = await a.acquire('stock:42');
await sleep(1_500); // A "pauses" past its TTL (renewal is off here to show it)...
await b.using('stock:42', (lease) => take(lease, 'B')); // ...and B gets the lock and writes.
try {
  await take(slow, 'A'); // A wakes up and writes with its old token
} catch (e) {
  if (!(e instanceof StaleTokenError)) throw e;
  console.log(`A refused: ${e.code}`);
}
const { rows } = await db.query<{ count: number }>('SELECT count FROM stock WHERE id = 42');
console.log(`count = ${rows[0]!.count}`);
await slow.release();
await a.close();
await b.close();
await db.end();
