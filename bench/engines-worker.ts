/**
 * One process of the `engines` contended run (forked by engines.ts): connect dlock to the URL,
 * warm up, start at the shared instant, loop acquire -> read counter file -> write +1 -> release
 * until the stop instant, report what it saw.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { delay, msBetween, now } from './support.js';

export type EngineToWorker =
  | { type: 'prepare'; url: string; key: string; counter: string; dlock: 'dist' | 'src' }
  | { type: 'go'; startAt: string; stopAt: string };

export interface EngineDone {
  type: 'done';
  values: number[];
  waits: number[];
  inWindow: number;
}

type Dlock = typeof import('../src/index.js');

type Prepare = Extract<EngineToWorker, { type: 'prepare' }>;

function nextGo(): Promise<Extract<EngineToWorker, { type: 'go' }>> {
  return new Promise((resolve) => {
    const on = (m: EngineToWorker): void => {
      if (m.type !== 'go') return;
      process.off('message', on);
      resolve(m);
    };
    process.on('message', on);
  });
}

async function run(job: Prepare): Promise<void> {
  const dlock = job.dlock === 'dist' ? ((await import(new URL('../dist/esm/index.js', import.meta.url).href)) as Dlock) : await import('../src/index.js');
  const client = await dlock.connect(job.url, { ttlMs: 10_000, waitMs: 60_000 });
  for (let i = 0; i < 20; i++) await (await client.acquire(`${job.key}:warmup:${process.pid}`)).release();
  const go = nextGo();
  process.send?.({ type: 'ready' });
  const { startAt: start, stopAt: stop } = await go;
  const startAt = BigInt(start);
  const stopAt = BigInt(stop);
  const lead = msBetween(now(), startAt);
  if (lead > 2) await delay(lead - 2);
  while (now() < startAt) {
    // spin the last ~2 ms so that every process starts together
  }
  const values: number[] = [];
  const waits: number[] = [];
  let inWindow = 0;
  while (now() < stopAt) {
    const t = now();
    const lease = await client.acquire(job.key);
    waits.push(msBetween(t, now()));
    const v = Number(readFileSync(job.counter, 'utf8'));
    writeFileSync(job.counter, String(v + 1));
    values.push(v);
    await lease.release();
    if (now() <= stopAt) inWindow++;
  }
  await client.close();
  const done: EngineDone = { type: 'done', values, waits, inWindow };
  process.send?.(done);
}

process.on('disconnect', () => process.exit(0));
process.once('message', (job: Prepare) => {
  run(job).catch((e: unknown) => {
    process.send?.({ type: 'failed', error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  });
});
