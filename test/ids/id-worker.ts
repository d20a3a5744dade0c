/**
 * A forked id worker (run with `--import tsx`; argv[2] is a JSON IdWorkerSpec). It sends `ready`,
 * waits for `go` (and `run` with waitForRun), generates ids chunk by chunk (writing each chunk to its file before the next, so
 * a kill -9 loses only ids that were never "used"), and on `stop` (or after `count`) sends `done`
 * with its error counts and exits. Dies with the parent's IPC channel.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { IdGenerator } from '../../src/ids/generator.js';
import { DEFAULT_EPOCH_MS } from '../../src/ids/layout.js';
import { Snowflake } from '../../src/ids/snowflake.js';
import type { IdTestMessage, IdWorkerMessage, IdWorkerSpec } from './id-protocol.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as IdWorkerSpec;

function send(msg: IdWorkerMessage): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (!process.send) {
      reject(new Error('id-worker must be forked with an IPC channel'));
      return;
    }
    process.send(msg, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}

let goResolve: () => void = () => undefined;
const go = new Promise<void>((resolve) => (goResolve = resolve));
let runResolve: () => void = () => undefined;
const runNow = new Promise<void>((resolve) => (runResolve = resolve));
let stopped = false;
process.on('message', (m: IdTestMessage) => {
  if (m.type === 'go') goResolve();
  if (m.type === 'run') runResolve();
  if (m.type === 'stop') stopped = true;
});
process.on('disconnect', () => process.exit(3));

/** What most npm snowflake packages do: the wall clock, a sequence reset on every new ms. */
class NaiveSnowflake {
  private last = -1;
  private seq = 0;
  constructor(private readonly workerId: number) {}
  next(): bigint {
    let t = Date.now() - DEFAULT_EPOCH_MS;
    if (t === this.last) {
      this.seq += 1;
      if (this.seq > 4095) {
        while ((t = Date.now() - DEFAULT_EPOCH_MS) <= this.last) {
          // wait for the next ms
        }
        this.seq = 0;
      }
    } else {
      this.seq = 0;
    }
    this.last = t;
    return (BigInt(t) << 22n) | (BigInt(this.workerId) << 12n) | BigInt(this.seq);
  }
}

interface Source {
  next(): bigint;
}

async function setup(): Promise<{ gen: Source; workerId: number; close: () => Promise<void> }> {
  if (spec.kind === 'generator') {
    const g = await IdGenerator.start({
      url: spec.url,
      name: spec.name ?? 'test',
      slot: spec.slot,
      ttlMs: spec.ttlMs,
      waitMs: spec.waitMs,
      layout: spec.layout,
      maxBorrowMs: spec.maxBorrowMs,
      maxWaitMs: spec.maxWaitMs,
      onClockBehind: spec.onClockBehind,
    });
    return { gen: g, workerId: g.workerId, close: () => g.close() };
  }
  const workerId = spec.workerId ?? 0;
  if (spec.kind === 'snowflake') {
    const s = new Snowflake({
      workerId,
      layout: spec.layout,
      maxBorrowMs: spec.maxBorrowMs,
      maxWaitMs: spec.maxWaitMs,
      onClockBehind: spec.onClockBehind,
    });
    return { gen: s, workerId, close: () => Promise.resolve() };
  }
  return { gen: new NaiveSnowflake(workerId), workerId, close: () => Promise.resolve() };
}

/** Generate up to `n` ids into `buf`; stops at the first error (counted). Returns how many. */
function fill(gen: Source, buf: BigInt64Array, n: number, errors: Record<string, number>, firstErrors: Record<string, string>): number {
  let i = 0;
  try {
    for (; i < n; i++) buf[i] = gen.next();
  } catch (e) {
    const code = (e as { code?: string }).code ?? (e instanceof Error ? e.name : 'unknown');
    errors[code] = (errors[code] ?? 0) + 1;
    firstErrors[code] ??= e instanceof Error ? e.message : String(e);
  }
  return i;
}

async function main(): Promise<void> {
  let s = spec.claimAfterGo ? undefined : await setup();
  await send({ type: 'ready', pid: process.pid, workerId: s?.workerId ?? null });
  await go;
  s ??= await setup();
  await send({ type: 'started', pid: process.pid, workerId: s.workerId });
  if (spec.waitForRun) await runNow;
  const fd = openSync(spec.out, 'a');
  const control = spec.controlOut ? new NaiveSnowflake(s.workerId) : undefined;
  const cfd = spec.controlOut ? openSync(spec.controlOut, 'a') : undefined;
  const buf = new BigInt64Array(spec.chunk);
  const errors: Record<string, number> = {};
  const firstErrors: Record<string, string> = {};
  const controlErrors: Record<string, number> = {};
  let issued = 0;
  let controlIssued = 0;
  const cbuf = new BigInt64Array(spec.chunk);
  while (!stopped && (spec.count === undefined || issued < spec.count)) {
    const want = spec.count === undefined ? spec.chunk : Math.min(spec.chunk, spec.count - issued);
    let n = 0;
    let c = 0;
    if (control) {
      // Alternate id by id, so that both generators see every ms of the clock.
      for (; n < want; ) {
        const got = fill(s.gen, buf.subarray(n), 1, errors, firstErrors);
        if (got === 0) break;
        n += got;
        c += fill(control, cbuf.subarray(c), 1, controlErrors, {});
      }
    } else {
      n = fill(s.gen, buf, want, errors, firstErrors);
    }
    if (n > 0) writeSync(fd, new Uint8Array(buf.buffer, 0, n * 8));
    issued += n;
    if (c > 0 && cfd !== undefined) writeSync(cfd, new Uint8Array(cbuf.buffer, 0, c * 8));
    controlIssued += c;
    if (spec.intervalMs) await sleep(spec.intervalMs);
    else await yieldToLoop();
  }
  closeSync(fd);
  if (cfd !== undefined) closeSync(cfd);
  await s.close();
  await send({ type: 'done', pid: process.pid, workerId: s.workerId, issued, controlIssued, errors, firstErrors });
}

main().then(
  () => process.exit(0),
  async (e: unknown) => {
    const message = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e);
    await send({ type: 'error', pid: process.pid, message }).catch(() => undefined);
    process.exit(1);
  },
);
