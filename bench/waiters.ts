/**
 * `waiters` (issue 11): N waiters (default 10,000) on ONE key in ONE process, while another
 * client holds the key. Measured per library in the same run:
 * - RSS growth (after a full GC) from before the waiters queue to while they wait;
 * - engine commands per second while the key stays held (dlock: 0, its waiters watch for the
 *   release; redis-semaphore's Mutex polls every 10 ms per waiter);
 * - after the holder releases: how many of the N are served (each takes the key and releases it
 *   at once) and how long that takes.
 * dlock runs on the bench's redis-server and on the embedded SQLite default; the peer on the same
 * redis-server, after one untimed warm-up round. Targets (the issue's): RSS growth < 50 MB, 0
 * commands/s while held, all N served.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { Mutex as PeerMutex } from 'redis-semaphore';
import type { DlockSource } from './libs.js';
import { fmt, table } from './support.js';

export interface WaitersBenchOptions {
  readonly redisUrl: string;
  readonly count: number;
  readonly dlock: DlockSource;
  readonly json: boolean;
  readonly log: (s: string) => void;
}

type Dlock = typeof import('../src/index.js');

/** One library's figures. */
export interface WaitersResult {
  readonly library: string;
  readonly engine: string;
  readonly waiters: number;
  readonly rssGrowthMb: number;
  readonly heapGrowthMb: number;
  readonly commandsPerSecondWhileHeld: number | null;
  readonly served: number;
  readonly serveSeconds: number;
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function settledMemory(): Promise<{ rss: number; heap: number }> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(50);
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
}

/** Every command the server ran (Lua-internal calls included), from INFO commandstats. */
async function calls(probe: Redis): Promise<number> {
  let n = 0;
  for (const m of (await probe.info('commandstats')).matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

const WINDOW_MS = 2000;
const SERVE_CAP_MS = 60_000;

async function loadDlock(source: DlockSource): Promise<Dlock> {
  return (await (source === 'src' ? import('../src/index.js') : import(new URL('../dist/esm/index.js', import.meta.url).href))) as Dlock;
}

type Memory = Awaited<ReturnType<typeof settledMemory>>;

function result(library: string, engine: string, waiters: number, before: Memory, during: Memory, cps: number | null, served: number, serveSeconds: number): WaitersResult {
  const mb = (bytes: number): number => bytes / 2 ** 20;
  return { library, engine, waiters, rssGrowthMb: mb(during.rss - before.rss), heapGrowthMb: mb(during.heap - before.heap), commandsPerSecondWhileHeld: cps, served, serveSeconds };
}

/**
 * Count the engine's commands for WINDOW_MS while the key stays held (no count without a
 * server), then release it and time how long the waiters take to be served (capped).
 */
async function holdThenRelease(probe: Redis | undefined, release: () => Promise<unknown>, waits: readonly Promise<unknown>[]): Promise<{ cps: number | null; serveSeconds: number }> {
  let cps: number | null = null;
  if (probe) {
    const c0 = await calls(probe);
    await sleep(WINDOW_MS);
    cps = ((await calls(probe)) - c0 - 1) / (WINDOW_MS / 1000);
  } else {
    await sleep(WINDOW_MS);
  }
  const t0 = performance.now();
  await release();
  await Promise.race([Promise.all(waits), sleep(SERVE_CAP_MS)]);
  return { cps, serveSeconds: (performance.now() - t0) / 1000 };
}

async function dlockRun(dl: Dlock, url: string, engine: string, count: number, probe: Redis | undefined): Promise<WaitersResult> {
  const holderClient = await dl.connect(url, { ttlMs: 30_000 });
  const waiterClient = await dl.connect(url, { ttlMs: 30_000 });
  const key = `bench:waiters:${engine}:${Date.now()}`;
  try {
    const held = await holderClient.acquire(key);
    const before = await settledMemory();
    let served = 0;
    const waits = Array.from({ length: count }, () =>
      waiterClient.acquire(key, { waitMs: 120_000 }).then(
        async (lease) => {
          served += 1;
          await lease.release();
        },
        () => undefined, // close() below ends what the cap left waiting
      ),
    );
    await sleep(500); // every waiter has tried once and is now watching
    const during = await settledMemory();
    const { cps, serveSeconds } = await holdThenRelease(probe, () => held.release(), waits);
    return result('dlock', engine, count, before, during, cps, served, serveSeconds);
  } finally {
    await Promise.all([holderClient.close(), waiterClient.close()]);
  }
}

async function peerRun(url: string, count: number, probe: Redis): Promise<WaitersResult> {
  const redis = new Redis(url);
  redis.on('error', () => undefined);
  const key = `bench:waiters:peer:${Date.now()}`;
  const holder = new PeerMutex(redis, key, { lockTimeout: 30_000, acquireTimeout: 120_000 });
  await holder.acquire();
  const before = await settledMemory();
  let served = 0;
  const waiters = Array.from({ length: count }, () => new PeerMutex(redis, key, { lockTimeout: 30_000, acquireTimeout: SERVE_CAP_MS + 5_000 }));
  const waits = waiters.map((m) =>
    m.acquire().then(
      async () => {
        served += 1;
        await m.release();
      },
      () => undefined,
    ),
  );
  await sleep(500);
  const during = await settledMemory();
  const { cps, serveSeconds } = await holdThenRelease(probe, () => holder.release(), waits);
  await Promise.all(waits);
  redis.disconnect();
  return result('redis-semaphore Mutex', 'redis', count, before, during, cps, served, serveSeconds);
}

function verdict(ok: boolean): string {
  return ok ? 'MET' : 'MISSED';
}

/** Run the scenario and print its table (or one JSON object per row) and the target lines. */
export async function runWaitersBench(o: WaitersBenchOptions): Promise<WaitersResult[]> {
  const dl = await loadDlock(o.dlock);
  const probe = new Redis(o.redisUrl);
  const dir = mkdtempSync(join(tmpdir(), 'dlock-bench-waiters-'));
  const results: WaitersResult[] = [];
  try {
    // One untimed round first, so that the figures below are the waiters' own cost, not the
    // process's one-time growth (JIT code, the young generation growing to its working size).
    o.log(`  [waiters] warm-up: dlock on redis, ${o.count} waiters (not reported)`);
    await dlockRun(dl, o.redisUrl, 'redis', o.count, undefined);
    o.log(`  [waiters] dlock on redis: ${o.count} waiters`);
    results.push(await dlockRun(dl, o.redisUrl, 'redis', o.count, probe));
    o.log(`  [waiters] dlock on sqlite: ${o.count} waiters`);
    results.push(await dlockRun(dl, `sqlite:${join(dir, 'locks.db')}`, 'sqlite', o.count, undefined));
    o.log(`  [waiters] redis-semaphore Mutex on redis: ${o.count} waiters`);
    results.push(await peerRun(o.redisUrl, o.count, probe));
  } finally {
    probe.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
  if (o.json) {
    for (const r of results) console.log(JSON.stringify({ scenario: 'waiters', ...r }));
  } else {
    console.log(`\n## waiters: ${o.count} waiters on one key in one process, held ${WINDOW_MS / 1000} s, then released`);
    console.log(
      table(
        ['library', 'engine', 'RSS growth MB', 'heap growth MB', 'commands/s while held', 'served', 'serve s'],
        results.map((r) => [r.library, r.engine, fmt(r.rssGrowthMb), fmt(r.heapGrowthMb), r.commandsPerSecondWhileHeld === null ? 'n/a (no server)' : fmt(r.commandsPerSecondWhileHeld), `${r.served}/${r.waiters}`, fmt(r.serveSeconds)]),
      ),
    );
  }
  for (const r of results.filter((x) => x.library === 'dlock')) {
    const idle = r.commandsPerSecondWhileHeld;
    console.log(
      `target (dlock on ${r.engine}): RSS growth < 50 MB: ${fmt(r.rssGrowthMb)} MB, ${verdict(r.rssGrowthMb < 50)}; ` +
        `0 commands/s while held: ${idle === null ? 'no engine commands exist (embedded), MET' : `${fmt(idle)}, ${verdict(idle === 0)}`}; ` +
        `all served: ${r.served}/${r.waiters}, ${verdict(r.served === r.waiters)}`,
    );
  }
  return results;
}
