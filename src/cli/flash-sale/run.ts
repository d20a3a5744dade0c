/**
 * The flash-sale demo, parent side: set up the store, fork the workers, start them all at one
 * monotonic instant, show progress, collect the results and clean up, whatever happens.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../../connect.js';
import { withTimeout } from '../output.js';
import type { WorkerConfig } from './protocol.js';
import { WorkerPool } from './pool.js';
import type { ProgressView } from './progress.js';
import { percentile, round2 } from './stats.js';
import { DemoError, storeFactoryFor, type Store } from './store.js';

export interface FlashSaleOptions {
  /** Engine URL; a fresh temporary SQLite file when omitted. */
  readonly url?: string;
  readonly workers: number;
  readonly stock: number;
  /** Default: workers x 50. */
  readonly buyers?: number;
  readonly lock: boolean;
  readonly ttlMs: number;
  readonly waitMs: number;
  /** Buyer n of each worker starts n x this many ms late (the dashboard's slower, watchable race). */
  readonly staggerMs?: number;
}

export interface FlashSaleResult {
  readonly backend: string;
  /** The engine, for display (password redacted). */
  readonly target: string;
  readonly lock: boolean;
  readonly lockKey: string;
  readonly workers: number;
  readonly buyers: number;
  readonly stock: number;
  readonly orders: number;
  /** Stock left in the store at the end. */
  readonly finalStock: number;
  readonly oversold: number;
  readonly durationMs: number;
  readonly ordersPerSec: number;
  readonly buyersPerSec: number;
  readonly lockWaitP50Ms: number;
  readonly lockWaitP99Ms: number;
  readonly lockWaitMaxMs: number;
  /** How far apart the workers really started (max lateness after the start instant). */
  readonly startSpreadMs: number;
  readonly verdict: string;
  /** With the lock: exactly min(stock, buyers) sold and the stored stock agrees. Always true without. */
  readonly correct: boolean;
}

export interface FlashSaleHooks {
  /** Status lines (stderr); not called in --json mode. */
  readonly status?: (line: string) => void;
  readonly progress?: ProgressView;
  /** Aborts the run (Ctrl-C): workers are killed and everything is cleaned up. */
  readonly signal?: AbortSignal;
  /** Told when the buyers start (what a live view reads), and with undefined when the run ends. */
  readonly live?: (run: LiveRun | undefined) => void;
}

/** A run in progress, as a live view reads it. */
export interface LiveRun {
  readonly lockKey: string;
  /** Worker pids by worker index. */
  readonly pids: readonly (number | undefined)[];
  /** Buyers done and orders placed so far (as the workers last reported). */
  progress(): { done: number; orders: number };
  /** The stock as stored now. */
  readStock(): Promise<number>;
  /** Lock acquisitions by worker index, as the workers last reported. */
  locks(): number[];
}

const PREFLIGHT_TIMEOUT_MS = 15_000;
/** The item on sale. */
const ITEM = 'sku-1';

function errorText(e: unknown): string {
  const err = e as Error;
  const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
  return `${err.message}${cause}`;
}

/** Split `total` buyers over `n` workers as evenly as possible. */
export function split(total: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

export async function runFlashSale(opts: FlashSaleOptions, hooks: FlashSaleHooks = {}): Promise<FlashSaleResult> {
  const buyers = opts.buyers ?? opts.workers * 50;
  if (buyers < opts.workers) {
    throw new DemoError(`--buyers (${buyers}) must be at least --workers (${opts.workers}): every worker needs a buyer.`);
  }
  const status = hooks.status ?? (() => undefined);
  // One lock key per item on an engine (the fencing counter the driver keeps for it is reused by
  // every run); the stock and orders are per run, so concurrent runs never mix their data.
  const lockKey = `flash-sale:${ITEM}`;
  const item = `${ITEM}:${randomBytes(4).toString('hex')}`;

  let tempDir: string | undefined;
  let store: Store | undefined;
  let pool: WorkerPool | undefined;
  let progressStarted = false;
  try {
    let url = opts.url;
    if (url === undefined) {
      tempDir = await mkdtemp(join(tmpdir(), 'dlock-flash-sale-'));
      url = `sqlite:${join(tempDir, 'flash-sale.db')}`;
    }
    const factory = await storeFactoryFor(url);
    const target = factory.describe(url);
    status(
      `flash sale on ${target}: ${opts.workers} workers, ${buyers} buyers, stock ${opts.stock}, lock ${opts.lock ? 'on' : 'OFF'}`,
    );

    // Fail fast, before forking anything, when the engine is unreachable.
    store = await withTimeout(factory.open(url, item), PREFLIGHT_TIMEOUT_MS, `Connecting to ${target}`);
    await store.setup(opts.stock);
    if (opts.lock) {
      const client = await connect(url);
      try {
        await withTimeout(client.inspect(lockKey), PREFLIGHT_TIMEOUT_MS, `Reaching the lock engine at ${target}`);
      } catch (e) {
        throw new DemoError(`Cannot use the lock engine at ${target}: ${errorText(e)}`, { cause: e });
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    }
    hooks.signal?.throwIfAborted();

    const progress = hooks.progress;
    const p = new WorkerPool(() => {
      progress?.update(
        p.done.reduce((a, b) => a + b, 0),
        p.orders.reduce((a, b) => a + b, 0),
      );
    });
    pool = p;
    let first = 0;
    const configs: WorkerConfig[] = split(buyers, opts.workers).map((n, index) => {
      const cfg: WorkerConfig = {
        index,
        url,
        item,
        lockKey,
        lock: opts.lock,
        buyers: n,
        firstBuyer: first,
        ttlMs: opts.ttlMs,
        waitMs: opts.waitMs,
        ...(opts.staggerMs ? { staggerMs: opts.staggerMs } : {}),
      };
      first += n;
      return cfg;
    });
    p.spawn(configs);
    await p.until(() => p.ready.size === opts.workers, 30_000 + 2_000 * opts.workers, 'waiting for the workers to be ready', hooks.signal);

    // Far enough ahead for the 'go' to reach every worker, all on the shared monotonic clock.
    const startNs = process.hrtime.bigint() + BigInt(Math.max(100, 5 * opts.workers)) * 1_000_000n;
    p.send({ type: 'go', startNs: String(startNs) });
    progress?.start(buyers);
    progressStarted = true;
    const st = store;
    hooks.live?.({
      lockKey,
      pids: p.pids(),
      progress: () => ({ done: p.done.reduce((a, b) => a + b, 0), orders: p.orders.reduce((a, b) => a + b, 0) }),
      readStock: () => st.readStock(),
      locks: () => Array.from({ length: opts.workers }, (_, i) => p.locks[i] ?? 0),
    });
    const runTimeoutMs = (opts.lock ? opts.waitMs : 0) + 120_000;
    await p.until(
      () => p.results.filter(Boolean).length === opts.workers,
      runTimeoutMs,
      'waiting for the buyers to finish',
      hooks.signal,
    );
    progress?.stop();
    await p.exited(5000);

    const done = p.results.flatMap((r) => (r ? [r] : []));
    const endNs = done.reduce((m, r) => (BigInt(r.endNs) > m ? BigInt(r.endNs) : m), startNs);
    const durationMs = Number(endNs - startNs) / 1e6;
    const waits = done.flatMap((r) => r.waitsMs);
    const spreadNs = done.reduce((m, r) => (BigInt(r.lateNs) > m ? BigInt(r.lateNs) : m), 0n);

    const { stock: finalStock, orders } = await store.results();
    const oversold = Math.max(0, orders - opts.stock);
    const expected = Math.min(opts.stock, buyers);
    const correct = !opts.lock || (orders === expected && finalStock === opts.stock - orders);
    const verdict =
      oversold > 0
        ? `OVERSOLD by ${oversold}`
        : orders === opts.stock
          ? `exact: sold ${orders} of ${opts.stock}`
          : `sold ${orders} of ${opts.stock}`;
    const seconds = Math.max(durationMs, 0.001) / 1000;
    return {
      backend: factory.backend,
      target,
      lock: opts.lock,
      lockKey,
      workers: opts.workers,
      buyers,
      stock: opts.stock,
      orders,
      finalStock,
      oversold,
      durationMs: round2(durationMs),
      ordersPerSec: round2(orders / seconds),
      buyersPerSec: round2(buyers / seconds),
      lockWaitP50Ms: round2(percentile(waits, 50)),
      lockWaitP99Ms: round2(percentile(waits, 99)),
      lockWaitMaxMs: round2(percentile(waits, 100)),
      startSpreadMs: round2(Number(spreadNs) / 1e6),
      verdict,
      correct,
    };
  } finally {
    hooks.live?.(undefined);
    if (progressStarted) hooks.progress?.stop();
    await pool?.kill();
    await pool?.exited(3000);
    if (store) {
      // A temporary database goes away with its directory; elsewhere remove this run's data.
      if (!tempDir) await withTimeout(store.cleanup(), 5000, 'Cleaning up').catch(() => undefined);
      await withTimeout(store.close(), 5000, 'Closing the store').catch(() => undefined);
    }
    if (tempDir) await rm(tempDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
