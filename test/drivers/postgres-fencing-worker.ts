/**
 * Worker for postgres-fencing.test.ts: increments a counter row under a PostgreSQL lock.
 * argv: url(with ?mode=) key resourceId mode(fenced|plain) increments ttlMs victim(0|1)
 * The victim, on its first hold, reports 'holding' (with its holder backend pid) and waits for
 * 'write' from the parent, which SIGSTOPs it meanwhile and resumes it before sending 'write'.
 */
import pg from 'pg';
import { LockClient, isDlockError } from '../../src/index.js';
import { fencedUpdate, PostgresSessionDriver, postgresDriverFromUrl } from '../../src/drivers/postgres/index.js';

const [url = '', key = '', resource = '', mode = 'fenced', countArg = '10', ttlArg = '600', victimArg = '0'] = process.argv.slice(2);
const increments = Number(countArg);
const victim = victimArg === '1';

const send = (m: unknown): void => {
  process.send?.(m);
};
const nextMessage = (type: string): Promise<void> =>
  new Promise((resolve) => {
    const on = (m: { type?: string }): void => {
      if (m.type !== type) return;
      process.off('message', on);
      resolve();
    };
    process.on('message', on);
  });
process.on('disconnect', () => process.exit(3));

const db = new pg.Client({ connectionString: url.split('?')[0] });
db.on('error', () => undefined);
await db.connect();
const driver = postgresDriverFromUrl(url);
const locks = new LockClient(driver, { ttlMs: Number(ttlArg), waitMs: 30_000 });
const go = nextMessage('go');
send({ type: 'ready' });
await go;

let accepted = 0;
let rejected = 0;
let pausedReport: { abortedBeforeWrite: boolean; reason: string | undefined; token: string } | undefined;
for (let i = 0; i < increments; i++) {
  const lease = await locks.acquire(key);
  const { rows } = await db.query<{ count: number }>('SELECT count FROM fence_res WHERE id = $1', [resource]);
  const count = rows[0]?.count ?? 0;
  if (victim && i === 0) {
    const backendPid = driver instanceof PostgresSessionDriver ? driver.holderPid(key) : undefined;
    send({ type: 'holding', token: lease.token.toString(), pid: process.pid, backendPid });
    await nextMessage('write');
    const reason = (lease.signal.reason as { reason?: string } | undefined)?.reason;
    pausedReport = { abortedBeforeWrite: lease.signal.aborted, reason, token: lease.token.toString() };
  }
  // Deliberately write even if the lock was lost: the resource must be the one that says no.
  try {
    if (mode === 'fenced') await fencedUpdate(db, { table: 'fence_res', where: { id: resource }, set: { count: count + 1 }, token: lease.token });
    else await db.query('UPDATE fence_res SET count = $1 WHERE id = $2', [count + 1, resource]);
    accepted += 1;
  } catch (e) {
    if (!isDlockError(e) || e.code !== 'DLOCK_STALE_TOKEN') throw e;
    rejected += 1;
  }
  await lease.release().catch(() => false);
}
send({ type: 'done', accepted, rejected, paused: pausedReport });
await locks.close();
await db.end();
