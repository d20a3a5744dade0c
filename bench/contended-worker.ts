/**
 * One process of the `contended` scenario (forked by contended.ts). Per library: connect, warm
 * up, then loop lock -> GET counter -> SET counter+1 -> unlock on the shared key until the stop
 * time, and report what it saw.
 */
import { Redis } from 'ioredis';
import { libById, useDlockFrom, type DlockSource, type Locker } from './libs.js';
import { delay, msBetween, now } from './support.js';

export type ToWorker =
  | { type: 'prepare'; lib: string; url: string; key: string; counter: string; dlock: DlockSource }
  | { type: 'go'; startAt: string; stopAt: string; warmup: boolean }
  | { type: 'close' }
  | { type: 'exit' };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; values: number[]; waits: number[]; inWindow: number; giveUps: number; errors: string[] }
  | { type: 'closed' }
  | { type: 'failed'; error: string };

let locker: Locker | undefined;
let redis: Redis | undefined;
let job: Extract<ToWorker, { type: 'prepare' }> | undefined;

function send(m: FromWorker): void {
  process.send?.(m);
}

async function prepare(m: Extract<ToWorker, { type: 'prepare' }>): Promise<void> {
  job = m;
  useDlockFrom(m.dlock);
  redis ??= new Redis(m.url);
  locker = await libById(m.lib).create(m.url);
  // Warm up on a private key: connections, scripts, JIT (ioredis's paths are shared by all libraries).
  const own = `${m.key}:warmup:${process.pid}`;
  for (let i = 0; i < 300; i++) {
    const held = await locker.acquire(own);
    await redis.set(`${own}:n`, String(Number((await redis.get(`${own}:n`)) ?? 0) + 1));
    await held.release();
  }
  send({ type: 'ready' });
}

async function go(startAt: bigint, stopAt: bigint, warmup: boolean): Promise<void> {
  if (!locker || !redis || !job) throw new Error('go before prepare');
  // The warm-up round contends on keys of its own, so that the measured counter starts at 0.
  const key = warmup ? `${job.key}:warmup` : job.key;
  const counter = warmup ? `${job.counter}:warmup` : job.counter;
  const values: number[] = [];
  const waits: number[] = [];
  const errors: string[] = [];
  let inWindow = 0;
  let giveUps = 0;
  const lead = msBetween(now(), startAt);
  if (lead > 2) await delay(lead - 2);
  while (now() < startAt) {
    // spin the last ~2 ms so that every process starts together
  }
  while (now() < stopAt) {
    const t = now();
    let held;
    try {
      held = await locker.acquire(key);
    } catch (e) {
      giveUps++;
      if (errors.length < 3) errors.push(String(e));
      continue;
    }
    waits.push(msBetween(t, now()));
    const v = Number((await redis.get(counter)) ?? 0);
    await redis.set(counter, String(v + 1));
    values.push(v);
    await held.release();
    if (now() <= stopAt) inWindow++;
  }
  send({ type: 'done', values, waits, inWindow, giveUps, errors });
}

// The parent is gone (crash, Ctrl-C): nothing may outlive it.
process.on('disconnect', () => process.exit(0));

process.on('message', (m: ToWorker) => {
  const fail = (e: unknown): void => send({ type: 'failed', error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  switch (m.type) {
    case 'prepare':
      prepare(m).catch(fail);
      break;
    case 'go':
      go(BigInt(m.startAt), BigInt(m.stopAt), m.warmup).catch(fail);
      break;
    case 'close': {
      const l = locker;
      locker = undefined;
      (l ? l.close() : Promise.resolve()).then(() => send({ type: 'closed' }), fail);
      break;
    }
    case 'exit':
      void (redis ? redis.quit().catch(() => undefined) : Promise.resolve()).then(() => process.exit(0));
      break;
  }
});
