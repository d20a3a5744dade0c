/**
 * Worker for the paused-holder scenario (paused-holder.ts): increments a counter kept in a fenced
 * resource (fenced-counter/<kind>.ts) under a lock from `connect(lockUrl)`.
 * argv: kind lockUrl counterUrl key counterId reads(fenced|plain) increments ttlMs victim(0|1) [primitive]
 * (primitive: one of the chaos suite's, test/chaos/primitives.ts; default mutex).
 * Messages from the parent: 'go' (start); 'arm' {token} (the victim holds `token` and is frozen: the
 * first read with a newer token reports 'newer-read' and waits for 'continue' before it writes);
 * 'disarm'; to the victim, 'write' (write your stale value now) and 'block' {ms} (block the event
 * loop with Atomics.wait for ms, as a long GC pause would).
 * To the parent: 'ready'; the victim's 'holding' and, after its write, 'wrote'; 'done'.
 */
import { connect } from '../../src/connect.js';
import { isDlockError } from '../../src/index.js';
import { hold, isPrimitiveName } from '../chaos/primitives.js';
import { isCounterKind, openCounter } from './fenced-counter/index.js';

const [kind = '', lockUrl = '', counterUrl = '', key = '', counterId = '', reads = 'fenced', countArg = '10', ttlArg = '600', victimArg = '0', primitive = 'mutex'] =
  process.argv.slice(2);
if (!isCounterKind(kind)) throw new Error(`Unknown counter kind "${kind}".`);
if (!isPrimitiveName(primitive)) throw new Error(`Unknown primitive "${primitive}".`);
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
let armedAbove: bigint | undefined;
process.on('message', (m: { type?: string; token?: string; ms?: number }) => {
  if (m.type === 'arm') armedAbove = BigInt(m.token ?? '0');
  if (m.type === 'disarm') armedAbove = undefined;
  if (m.type === 'block') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, m.ms ?? 0);
});
// The parent is gone: nothing to report to.
process.on('disconnect', () => process.exit(3));

const isStale = (e: unknown): boolean => isDlockError(e) && e.code === 'DLOCK_STALE_TOKEN';

const counter = await openCounter(kind, counterUrl, counterId);
const locks = await connect(lockUrl, { ttlMs: Number(ttlArg), waitMs: 60_000 });
const go = nextMessage('go');
send({ type: 'ready' });
await go;

let accepted = 0;
let rejected = 0;
let readsRefused = 0;
let pausedReport: { abortedBeforeWrite: boolean; reason: string | undefined; token: string } | undefined;
for (let i = 0; i < increments; i++) {
  const t0 = performance.now();
  const held = await hold(locks, primitive, key, { ttlMs: Number(ttlArg), waitMs: 60_000 }).catch((e: unknown) => {
    throw new Error(`acquire failed after ${Math.round(performance.now() - t0)} ms in cycle ${i}`, { cause: e });
  });
  const lease = { token: held.tokens[0]!, release: () => held.release() };
  const paused = victim && i === 0;
  let count: number | undefined;
  try {
    count = reads === 'fenced' ? await counter.readFenced(lease.token) : await counter.readPlain();
  } catch (e) {
    if (!isStale(e)) throw e;
    readsRefused += 1;
  }
  if (paused) {
    const write = nextMessage('write');
    send({ type: 'holding', token: lease.token.toString(), pid: process.pid, ...counter.holding?.(locks.driver, key) });
    await write;
    // Read through the getter now (it checks the local deadline): resumed, this process may run
    // the parent's 'write' message before its own renewal timer.
    const signal = held.signal;
    const reason = (signal.reason as { reason?: string } | undefined)?.reason;
    pausedReport = { abortedBeforeWrite: signal.aborted, reason, token: lease.token.toString() };
  } else if (armedAbove !== undefined && lease.token > armedAbove) {
    // The first holder after the frozen victim: hold the write until the victim has written.
    const proceed = nextMessage('continue');
    send({ type: 'newer-read', token: lease.token.toString() });
    await proceed;
  }
  // Deliberately write even if the lock was lost: the resource must be the one that says no.
  let ok = false;
  if (count !== undefined) {
    try {
      await counter.writeFenced(lease.token, count + 1);
      ok = true;
      accepted += 1;
    } catch (e) {
      if (!isStale(e)) throw e;
      rejected += 1;
    }
  }
  if (paused) send({ type: 'wrote', accepted: ok });
  // The paused holder's lock is gone; giving it back may fail (e.g. its session was terminated).
  if (paused) await lease.release().catch(() => false);
  else await lease.release();
}
send({ type: 'done', accepted, rejected, readsRefused, paused: pausedReport });
await locks.close();
await counter.close();
