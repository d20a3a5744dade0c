/**
 * `dlock demo flash-sale --dashboard`: the race on a page. Both phases run one after the other
 * (without the lock, then with it) once a page is open; the page shows the buyers, the stock,
 * the orders, which worker holds the lock (sampled from the engine's listing) and how often it
 * changed hands, next to the lock table and feed of `dlock dashboard`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../../connect.js';
import type { LockClient } from '../../core/client.js';
import { summaryTable } from '../flash-sale/report.js';
import { runFlashSale, type FlashSaleOptions, type FlashSaleResult, type LiveRun } from '../flash-sale/run.js';
import { withTimeout, type CliIo } from '../output.js';
import type { KeyView } from './feed.js';
import { LockSource } from './locks.js';
import { startDashboardServer, type DashboardSource } from './server.js';

/** One phase as the page gets it. */
interface PhaseView {
  lock: boolean;
  state: 'waiting' | 'running' | 'done';
  workers: number;
  buyers: number;
  done: number;
  stock: number;
  stockNow: number | null;
  orders: number;
  oversold: number;
  holder: { worker: number; pid: number; token: string } | null;
  handoffs: number;
  /** Lock acquisitions by worker (reported by the workers). */
  locks: number[];
  verdict: string | null;
}

/** The lock source plus the sale's phases. */
class SaleSource implements DashboardSource {
  readonly phases: PhaseView[];
  private live: LiveRun | undefined;
  private current: PhaseView | undefined;

  constructor(
    private readonly locks: LockSource,
    opts: { workers: number; buyers: number; stock: number },
  ) {
    this.phases = [false, true].map((lock) => ({
      lock,
      state: 'waiting',
      workers: opts.workers,
      buyers: opts.buyers,
      done: 0,
      stock: opts.stock,
      stockNow: opts.stock,
      orders: 0,
      oversold: 0,
      holder: null,
      handoffs: 0,
      locks: new Array<number>(opts.workers).fill(0),
      verdict: null,
    }));
  }

  begin(phase: PhaseView): void {
    this.current = phase;
    phase.state = 'running';
  }

  attach(run: LiveRun | undefined): void {
    // The run is over: keep its final counts (every worker reported them before it ended).
    if (!run && this.live && this.current) this.current.locks = this.live.locks();
    this.live = run;
  }

  finish(phase: PhaseView, r: FlashSaleResult): void {
    phase.handoffs = Math.max(0, phase.locks.reduce((a, b) => a + b, 0) - 1);
    Object.assign(phase, { state: 'done', done: r.buyers, orders: r.orders, stockNow: r.finalStock, oversold: r.oversold, verdict: r.verdict, holder: null });
    this.current = undefined;
  }

  async poll(): Promise<Record<string, unknown>> {
    const snapshot = await this.locks.poll();
    const phase = this.current;
    const live = this.live;
    if (phase && live) {
      const { done, orders } = live.progress();
      phase.done = done;
      phase.orders = orders;
      phase.oversold = Math.max(0, orders - phase.stock);
      phase.stockNow = await live.readStock().catch(() => phase.stockNow);
      const held = (snapshot.locks as KeyView[]).find((k) => k.key === live.lockKey)?.holders[0];
      const worker = held?.pid == null ? -1 : live.pids.indexOf(held.pid);
      phase.holder = held && worker >= 0 ? { worker, pid: held.pid ?? 0, token: held.token } : null;
      phase.locks = live.locks();
      // Every acquisition after the first is the lock changing hands (reported by the workers).
      phase.handoffs = Math.max(0, phase.locks.reduce((a, b) => a + b, 0) - 1);
    }
    return { ...snapshot, sale: { phases: this.phases } };
  }

  forceRelease(): Promise<never> {
    return Promise.reject(new Error('the flash-sale page is read-only'));
  }

  describeFailure(e: unknown): string {
    return this.locks.describeFailure(e);
  }
}

/** How to serve the demo's page. */
export interface SaleDashboardOptions {
  readonly host: string;
  readonly port: number;
  readonly authToken?: string;
  readonly signal: AbortSignal;
}

/** Serve the page, wait for a viewer, run both phases, keep serving until `signal` aborts. */
export async function runSaleDashboard(sale: Omit<FlashSaleOptions, 'lock'>, dash: SaleDashboardOptions, io: CliIo): Promise<FlashSaleResult[]> {
  let tempDir: string | undefined;
  let client: LockClient | undefined;
  let close: (() => Promise<void>) | undefined;
  const aborted = new Promise<void>((resolve) => dash.signal.addEventListener('abort', () => resolve(), { once: true }));
  try {
    let url = sale.url;
    if (url === undefined) {
      tempDir = await mkdtemp(join(tmpdir(), 'dlock-flash-sale-'));
      url = `sqlite:${join(tempDir, 'flash-sale.db')}`;
    }
    client = await connect(url);
    const intervalMs = 100;
    const source = new SaleSource(new LockSource(client, { url, prefix: 'flash-sale:', limit: 100, intervalMs }), {
      workers: sale.workers,
      buyers: sale.buyers ?? sale.workers * 50,
      stock: sale.stock,
    });
    const server = await startDashboardServer(source, {
      host: dash.host,
      port: dash.port,
      ...(dash.authToken === undefined ? {} : { token: dash.authToken }),
      allowAdmin: false,
      intervalMs,
      title: 'dlock flash sale',
    });
    close = () => server.close();
    io.stderr.write(`flash sale dashboard on ${server.url} (open it: the sale starts when the page connects; Ctrl-C to stop)\n`);
    await Promise.race([server.firstViewer(), aborted]);
    const results: FlashSaleResult[] = [];
    for (const phase of source.phases) {
      dash.signal.throwIfAborted();
      source.begin(phase);
      const result = await runFlashSale(
        { ...sale, url, lock: phase.lock, staggerMs: sale.staggerMs ?? 25 },
        { status: (line) => io.stderr.write(`${line}\n`), signal: dash.signal, live: (run) => source.attach(run) },
      );
      source.finish(phase, result);
      results.push(result);
      io.stdout.write(`${summaryTable(result)}\n`);
    }
    io.stderr.write(`both phases done; the page stays up at ${server.url} (Ctrl-C to quit)\n`);
    await aborted;
    return results;
  } finally {
    await close?.();
    if (client) await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
    if (tempDir) await rm(tempDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
