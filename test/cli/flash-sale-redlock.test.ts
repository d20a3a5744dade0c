/**
 * The flash-sale demo on Redlock (3 independent redis-servers started here), end to end through
 * the built CLI like test/cli/flash-sale.test.ts: the lock on a majority of the nodes, the stock
 * and orders on the first node (see src/cli/flash-sale/stores/redlock.ts).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { startRedlock } from '../support/redlock.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'dlock.js');
const nodes = await startRedlock({ nodes: 3 });
afterAll(() => nodes.stop());

interface Summary {
  backend: string;
  lock: boolean;
  workers: number;
  buyers: number;
  stock: number;
  orders: number;
  oversold: number;
}

function flashSale(args: readonly string[]): Promise<{ code: number; summary: Summary; stderr: string }> {
  const env = { ...process.env };
  delete env.DLOCK_URL;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'demo', 'flash-sale', '--url', nodes.url, '--workers', '8', '--buyers', '200', '--json', ...args],
      { cwd: ROOT, timeout: 110_000, killSignal: 'SIGINT', env },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        const last = stdout.trim().split('\n').at(-1) ?? '{}';
        resolve({ code, summary: JSON.parse(last) as Summary, stderr });
      },
    );
  });
}

describe('dlock demo flash-sale on redlock (3 nodes)', () => {
  it.each([1, 3])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const { code, summary, stderr } = await flashSale(['--stock', String(stock)]);
    expect(code, stderr).toBe(0);
    expect(summary).toMatchObject({ backend: 'redlock', lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
  }, 120_000);

  it('without the lock oversells', async () => {
    const { code, summary, stderr } = await flashSale(['--no-lock']);
    expect(code, stderr).toBe(0);
    expect(summary).toMatchObject({ backend: 'redlock', lock: false, stock: 1 });
    expect(summary.oversold).toBeGreaterThan(0);
  }, 120_000);
});
