/**
 * The soak (chaos scenario 12) in a process of its own (spawned with `--expose-gc
 * --unhandled-rejections=strict --import tsx`, no IPC channel, so that nothing but the client
 * can keep it alive). argv[2]: JSON { url, primitive, key, waiters, cycles, warmup }.
 * `waiters` tasks on one client share `KEYS` keys and take and give back holds until `cycles`
 * holds have been taken; first a warm-up of `warmup` holds, then a GC and the heap baseline, then
 * the cycles, a GC and the heap again. Prints one JSON line, then closes the client and prints
 * `closed` with the monotonic time: the parent measures how long the process takes to exit.
 */
import { connect } from '../../src/connect.js';
import { hold, type PrimitiveName } from './primitives.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as { url: string; primitive: PrimitiveName; key: string; waiters: number; cycles: number; warmup: number };
const KEYS = 10;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('soak-child needs --expose-gc');

const warnings: string[] = [];
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));

const client = await connect(spec.url, { ttlMs: 10_000, waitMs: 120_000 });
let maxConcurrent = 0;
let inside = 0;

async function run(total: number): Promise<number> {
  let taken = 0;
  const task = async (i: number): Promise<void> => {
    const key = `${spec.key}:${i % KEYS}`;
    while (taken < total) {
      taken += 1;
      const h = await hold(client, spec.primitive, key, { ttlMs: 10_000, waitMs: 120_000 });
      inside += 1;
      maxConcurrent = Math.max(maxConcurrent, inside);
      await new Promise<void>((r) => setImmediate(r));
      inside -= 1;
      await h.release();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: spec.waiters }, (_, i) => task(i)));
  return performance.now() - t0;
}

const heap = (): number => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

await run(spec.warmup);
const before = heap();
const ms = await run(spec.cycles);
// Let the last releases' clean-ups (wake-ups, cached watches) settle before measuring.
await new Promise<void>((r) => setTimeout(r, 200));
const after = heap();
process.stdout.write(`${JSON.stringify({ type: 'result', heapGrowthBytes: after - before, heapBefore: before, ms, maxConcurrent, warnings })}\n`);
await client.close();
process.stdout.write(`${JSON.stringify({ type: 'closed', t: process.hrtime.bigint().toString(), resources: process.getActiveResourcesInfo() })}\n`);
