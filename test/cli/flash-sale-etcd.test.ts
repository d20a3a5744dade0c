/**
 * `dlock demo flash-sale` on etcd, end to end through the built CLI (`npm test` builds first):
 * a standalone etcd member started for this file, stock and orders kept in etcd keys next to
 * the locks. The same cases as test/cli/flash-sale.test.ts.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { startEtcd } from '../support/etcd.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'dlock.js');
const server = await startEtcd();

afterAll(async () => {
  await server.dispose();
});

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

function dlock(args: readonly string[], timeoutMs = 90_000): Promise<CliRun> {
  const env = { ...process.env };
  delete env.DLOCK_URL;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGINT', env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

interface Summary {
  backend: string;
  lock: boolean;
  workers: number;
  buyers: number;
  stock: number;
  orders: number;
  oversold: number;
  ordersPerSec: number;
  lockWaitP50Ms: number;
  lockWaitP99Ms: number;
}

async function flashSale(args: readonly string[]): Promise<Summary> {
  const run = await dlock(['demo', 'flash-sale', '--url', server.url, '--workers', '8', '--buyers', '200', '--json', ...args]);
  expect(run.code, run.stderr).toBe(0);
  expect(run.stderr).toBe('');
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0] ?? '') as Summary;
}

describe('dlock demo flash-sale on etcd', () => {
  it.each([1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const s = await flashSale(['--stock', String(stock)]);
    expect(s).toMatchObject({ backend: 'etcd', lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
    expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
    expect(s.ordersPerSec).toBeGreaterThan(0);
  }, 120_000);

  it('without the lock oversells', async () => {
    const s = await flashSale(['--no-lock']);
    expect(s).toMatchObject({ backend: 'etcd', lock: false, workers: 8, stock: 1 });
    expect(s.oversold).toBeGreaterThan(0);
    expect(s.oversold).toBe(s.orders - s.stock);
  }, 120_000);

  it('an unreachable etcd fails fast with a clear message', async () => {
    const run = await dlock(['demo', 'flash-sale', '--url', 'etcd://127.0.0.1:1', '--workers', '2', '--json']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/Cannot reach etcd at http:\/\/127\.0\.0\.1:1/);
  });
});
