/**
 * Worker for fencing.test.ts: increments a shared counter under a Redis lock.
 * argv: url key resource mode(fenced|plain) increments ttlMs victim(0|1)
 * The victim, on its first hold, reports 'holding' and waits for 'write' from the parent, which
 * SIGSTOPs it past its TTL and resumes it before sending 'write'.
 */
import { Redis } from 'ioredis';
import { LockClient, isDlockError } from '../../src/index.js';
import { FencedRedisHash, RedisDriver } from '../../src/drivers/redis/index.js';

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

const raw = new Redis(url);
const store = new FencedRedisHash(raw, resource);
const locks = new LockClient(new RedisDriver({ url }), { ttlMs: Number(ttlArg), waitMs: 30_000 });
await raw.ping();
const go = nextMessage('go');
send({ type: 'ready' });
await go;

let accepted = 0;
let rejected = 0;
let pausedReport: { abortedBeforeWrite: boolean; reason: string | undefined; token: string } | undefined;
for (let i = 0; i < increments; i++) {
  const lease = await locks.acquire(key);
  const count = Number((await store.read()).count ?? '0');
  if (victim && i === 0) {
    send({ type: 'holding', token: lease.token.toString(), pid: process.pid });
    await nextMessage('write');
    const reason = (lease.signal.reason as { reason?: string } | undefined)?.reason;
    pausedReport = { abortedBeforeWrite: lease.signal.aborted, reason, token: lease.token.toString() };
  }
  // Deliberately write even if the lock was lost: the resource must be the one that says no.
  try {
    if (mode === 'fenced') await store.write(lease.token, { count: count + 1 });
    else await raw.hset(resource, 'count', String(count + 1));
    accepted += 1;
  } catch (e) {
    if (!isDlockError(e) || e.code !== 'DLOCK_STALE_TOKEN') throw e;
    rejected += 1;
  }
  await lease.release();
}
send({ type: 'done', accepted, rejected, paused: pausedReport });
await locks.close();
raw.disconnect();
