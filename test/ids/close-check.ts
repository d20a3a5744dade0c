/**
 * Standalone child (run with `--import tsx`): argv[2] = engine URL. Starts an IdGenerator, issues
 * ids, lets a few mark writes happen, closes it, prints one JSON line with the resources still
 * active, and must then exit on its own (the test fails on a timeout otherwise).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { IdGenerator } from '../../src/ids/generator.js';

const url = process.argv[2];
if (!url) throw new Error('usage: close-check.ts URL');
const gen = await IdGenerator.start({ url, name: 'close-check', ttlMs: 600 });
const ids = gen.nextBatch(1000);
await sleep(400);
await gen.close();
await new Promise<void>((resolve) => setImmediate(resolve));
await new Promise<void>((resolve) => setImmediate(resolve));
process.stdout.write(`${JSON.stringify({ ids: ids.length, afterTick: process.getActiveResourcesInfo() })}\n`);
