/**
 * Forked by segment.test.ts (run through tsx): one SegmentIds generator in its own process.
 * argv[2] = JSON {@link SegmentWorkerSpec}. Talks JSON over IPC:
 *   worker -> { type: 'ready' }                       generator open, first range loaded
 *   parent -> { type: 'go', at }                      start at this process.hrtime.bigint() value
 *   worker -> { type: 'ids', ids: string[] }          ids in the order they were issued (chunks)
 *   parent -> { type: 'stop' }                        (stream mode) finish
 *   worker -> { type: 'done', stats }                 after the last chunk
 * Ids are reported only after they were issued, so a killed worker may have issued a few more
 * than it reported: those are never checked, which only hides duplicates, never invents them.
 */
import { createDriver } from '../../src/connect.js';
import { SegmentIds } from '../../src/ids/segment.js';

export interface SegmentWorkerSpec {
  readonly url: string;
  readonly name: string;
  readonly step: number;
  readonly adaptive: boolean;
  /** Stop after this many ids; 0: run until told to stop. */
  readonly count: number;
  /** Ids per IPC message. */
  readonly chunk: number;
  /** Pause between bursts of 25 ids, in ms (0: one loop turn), so that the processes overlap in time. */
  readonly pauseMs: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as SegmentWorkerSpec;
const send = (m: unknown): Promise<void> =>
  new Promise((resolve, reject) => {
    process.send?.(m, (e: Error | null) => (e ? reject(e) : resolve()));
  });

let stop = false;
let go: ((at: bigint) => void) | undefined;
const started = new Promise<bigint>((resolve) => (go = resolve));
process.on('message', (m: { type: string; at?: string }) => {
  if (m.type === 'go') go?.(BigInt(m.at ?? '0'));
  if (m.type === 'stop') stop = true;
});

const driver = await createDriver(spec.url);
const ids = await SegmentIds.open({ driver, name: spec.name, step: spec.step, adaptive: spec.adaptive });
await send({ type: 'ready' });
const at = await started;
while (process.hrtime.bigint() < at) await new Promise((resolve) => setImmediate(resolve));

let batch: string[] = [];
let drawn = 0;
while (spec.count === 0 ? !stop : drawn < spec.count) {
  // A burst of ids, then one loop turn: like request handlers, and it lets IPC messages in.
  for (let i = 0; i < 25; i++) {
    batch.push(String(await ids.next()));
    drawn += 1;
  }
  if (batch.length >= spec.chunk) {
    await send({ type: 'ids', ids: batch });
    batch = [];
  }
  await new Promise((resolve) => (spec.pauseMs > 0 ? setTimeout(resolve, spec.pauseMs) : setImmediate(resolve)));
}
if (batch.length > 0) await send({ type: 'ids', ids: batch });
const stats = ids.stats();
await ids.close();
await driver.close();
await send({ type: 'done', stats: { fetches: stats.fetches, waits: stats.waits, issued: String(stats.issued) } });
process.disconnect();
