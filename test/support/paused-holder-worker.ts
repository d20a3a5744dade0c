/**
 * Worker for the paused-holder scenario (paused-holder.ts): increments a counter kept in an engine
 * (fenced-counter/<kind>.ts) under a lock from `connect(url)`.
 * argv: kind url key counterId mode(fenced|plain) increments ttlMs victim(0|1)
 * Messages: sends 'ready', waits for 'go'; the victim, on its first hold, sends 'holding' and
 * waits for 'write' (the parent SIGSTOPs it past its TTL meanwhile); at the end sends 'done'.
 */
import { connect } from '../../src/connect.js';
import { isDlockError } from '../../src/index.js';
import { isCounterKind, openCounter } from './fenced-counter/index.js';

const [kind = '', url = '', key = '', counterId = '', mode = 'fenced', countArg = '10', ttlArg = '600', victimArg = '0'] = process.argv.slice(2);
if (!isCounterKind(kind)) throw new Error(`Unknown counter kind "${kind}".`);
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
// The parent is gone: nothing to report to.
process.on('disconnect', () => process.exit(3));

const counter = await openCounter(kind, url, counterId);
const locks = await connect(url, { ttlMs: Number(ttlArg), waitMs: 60_000 });
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
  const count = await counter.read();
  const paused = victim && i === 0;
  if (paused) {
    send({ type: 'holding', token: lease.token.toString(), pid: process.pid, ...counter.holding?.(locks.driver, key) });
    await nextMessage('write');
    const reason = (lease.signal.reason as { reason?: string } | undefined)?.reason;
    pausedReport = { abortedBeforeWrite: lease.signal.aborted, reason, token: lease.token.toString() };
  }
  // Deliberately write even if the lock was lost: the resource must be the one that says no.
  try {
    if (mode === 'fenced') await counter.writeFenced(lease.token, count + 1);
    else await counter.writePlain(count + 1);
    accepted += 1;
  } catch (e) {
    if (!isDlockError(e) || e.code !== 'DLOCK_STALE_TOKEN') throw e;
    rejected += 1;
  }
  // The paused holder's lock is gone; giving it back may fail (e.g. its session was terminated).
  if (paused) await lease.release().catch(() => false);
  else await lease.release();
}
send({ type: 'done', accepted, rejected, paused: pausedReport });
await locks.close();
await counter.close();
