import type { FlashSaleResult } from './run.js';

function ms(x: number): string {
  return `${x.toFixed(x < 10 ? 2 : 1)} ms`;
}

/** The two-column summary table (ASCII, so it survives any terminal and any log). */
export function summaryTable(r: FlashSaleResult): string {
  const rows: [string, string][] = [
    ['backend', `${r.backend} (${r.target})`],
    ['lock', r.lock ? `on (${r.lockKey})` : 'OFF (--no-lock)'],
    ['workers', String(r.workers)],
    ['buyers', String(r.buyers)],
    ['stock', String(r.stock)],
    ['orders', String(r.orders)],
    ['oversold', String(r.oversold)],
    ['stock left', String(r.finalStock)],
    ['duration', ms(r.durationMs)],
    ['orders/s', r.ordersPerSec.toFixed(1)],
    ['buyers/s', r.buyersPerSec.toFixed(1)],
    ['lock wait p50', r.lock ? ms(r.lockWaitP50Ms) : '-'],
    ['lock wait p99', r.lock ? ms(r.lockWaitP99Ms) : '-'],
    ['lock wait max', r.lock ? ms(r.lockWaitMaxMs) : '-'],
    ['start spread', ms(r.startSpreadMs)],
  ];
  const w0 = Math.max(...rows.map(([k]) => k.length));
  const w1 = Math.max(...rows.map(([, v]) => v.length));
  const line = `+-${'-'.repeat(w0)}-+-${'-'.repeat(w1)}-+`;
  const body = rows.map(([k, v]) => `| ${k.padEnd(w0)} | ${v.padEnd(w1)} |`);
  return [line, ...body, line, verdictLine(r)].join('\n');
}

export function verdictLine(r: FlashSaleResult): string {
  if (!r.correct) {
    return `LOCK VIOLATION: ${r.verdict} with the lock on (expected ${Math.min(r.stock, r.buyers)} orders, stock left ${r.finalStock}).`;
  }
  if (r.oversold > 0) return `${r.verdict}: ${r.orders} orders for a stock of ${r.stock}. This is what the lock is for.`;
  return r.verdict;
}

/** The single JSON object of --json. */
export function summaryJson(r: FlashSaleResult): string {
  return JSON.stringify({
    backend: r.backend,
    lock: r.lock,
    workers: r.workers,
    buyers: r.buyers,
    stock: r.stock,
    orders: r.orders,
    oversold: r.oversold,
    stockLeft: r.finalStock,
    durationMs: r.durationMs,
    ordersPerSec: r.ordersPerSec,
    buyersPerSec: r.buyersPerSec,
    lockWaitP50Ms: r.lockWaitP50Ms,
    lockWaitP99Ms: r.lockWaitP99Ms,
    lockWaitMaxMs: r.lockWaitMaxMs,
    startSpreadMs: r.startSpreadMs,
    verdict: r.verdict,
    correct: r.correct,
  });
}
