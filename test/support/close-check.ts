/**
 * Standalone child (spawned with `--import tsx`, no IPC channel): argv[2] = URL, argv[3] = key.
 * Connects two clients, makes an acquisition wait for another (so the wake-up machinery is
 * opened), releases, closes both, prints one JSON line with the active resources, and must then
 * exit on its own. The contended pair runs on one client, so that it also works for `memory:`,
 * where every connect() is its own engine.
 */
import { connect } from '../../src/connect.js';

const [url, key] = process.argv.slice(2);
if (!url || !key) throw new Error('usage: close-check.ts URL KEY');

const a = await connect(url);
const b = await connect(url);
const other = await b.acquire(`${key}:b`, { ttlMs: 10_000 });
const first = await a.acquire(key, { ttlMs: 10_000 });
const waiting = a.acquire(key, { ttlMs: 10_000, waitMs: 10_000 });
await new Promise<void>((resolve) => setTimeout(resolve, 100));
await first.release();
const second = await waiting;
await second.release();
await other.release();
await a.close();
await b.close();
const immediate = process.getActiveResourcesInfo();
// Two loop turns: handles that close() already closed are freed in the close-callbacks phase.
await new Promise<void>((resolve) => setImmediate(resolve));
await new Promise<void>((resolve) => setImmediate(resolve));
const afterTick = process.getActiveResourcesInfo();
// For diagnosis only: what is still closing a little later (the timer itself is filtered out).
await new Promise<void>((resolve) => setTimeout(resolve, 50));
const after50ms = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
// Judged here: a file read of the module loader (FSReqCallback) still in flight 50 ms after
// close() on a loaded machine (seen once, memory engine, which touches no file) is done by now;
// a handle close() left open is not.
await new Promise<void>((resolve) => setTimeout(resolve, 500));
const after500ms = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
process.stdout.write(`${JSON.stringify({ ok: true, tokens: [String(first.token), String(second.token)], immediate, afterTick, after50ms, after500ms })}\n`);
