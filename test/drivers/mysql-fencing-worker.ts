/**
 * Worker for mysql-fencing.test.ts: increments a counter row under a MySQL lock.
 * argv: url resourceId mode(fenced|plain) increments ttlMs victim(0|1) key
 * The victim, on its first hold, reports 'holding' and waits for 'write' from the parent, which
 * SIGSTOPs it past its TTL and resumes it before sending 'write'.
 */
import mysql from 'mysql2/promise';
import { connect } from '../../src/connect.js';
import { FencedMysqlTable } from '../../src/drivers/mysql/index.js';
import { isDlockError } from '../../src/index.js';

const [url = '', resourceId = '', mode = 'fenced', countArg = '10', ttlArg = '600', victimArg = '0', key = ''] = process.argv.slice(2);
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

const plainUrl = url.split('?')[0] ?? url;
const pool = mysql.createPool({ uri: plainUrl, connectionLimit: 2, supportBigNumbers: true, bigNumberStrings: true });
const row = new FencedMysqlTable(pool, { table: 'fence_res', where: { id: resourceId } });
const locks = await connect(url, { ttlMs: Number(ttlArg), waitMs: 60_000 });
await pool.query('SELECT 1');
const go = nextMessage('go');
send({ type: 'ready' });
await go;

let accepted = 0;
let rejected = 0;
let pausedReport: { abortedBeforeWrite: boolean; reason: string | undefined; token: string } | undefined;
for (let i = 0; i < increments; i++) {
  const t0 = performance.now();
  const lease = await locks.acquire(key).catch((e: unknown) => {
    throw new Error(`acquire failed after ${Math.round(performance.now() - t0)} ms in cycle ${i}`, { cause: e });
  });
  const count = Number((await row.read()).count);
  if (victim && i === 0) {
    send({ type: 'holding', token: lease.token.toString(), pid: process.pid });
    await nextMessage('write');
    const reason = (lease.signal.reason as { reason?: string } | undefined)?.reason;
    pausedReport = { abortedBeforeWrite: lease.signal.aborted, reason, token: lease.token.toString() };
  }
  // Deliberately write even if the lock was lost: the resource must be the one that says no.
  try {
    if (mode === 'fenced') await row.write(lease.token, { count: count + 1 });
    else await pool.query('UPDATE fence_res SET count = ? WHERE id = ?', [count + 1, resourceId]);
    accepted += 1;
  } catch (e) {
    if (!isDlockError(e) || e.code !== 'DLOCK_STALE_TOKEN') throw e;
    rejected += 1;
  }
  await lease.release();
}
send({ type: 'done', accepted, rejected, paused: pausedReport });
await locks.close();
await pool.end();
