/**
 * The flash-sale demo on MySQL/MariaDB, end to end through the built CLI (`npm test` builds first),
 * in both lock modes, against a private server: with the lock it sells exactly the stock; without
 * it the blind read-minus-one writes oversell.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMysql, type MysqlServer } from '../support/mysql.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'dlock.js');

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

function dlock(args: readonly string[], timeoutMs = 50_000): Promise<CliRun> {
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
  const run = await dlock(['demo', 'flash-sale', '--workers', '8', '--buyers', '200', '--json', ...args]);
  const lines = run.stdout.trim().split('\n');
  expect(run.code, run.stderr).toBe(0);
  expect(run.stderr).toBe('');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0] ?? '') as Summary;
}

let server: MysqlServer;
beforeAll(async () => {
  server = await startMysql();
});
afterAll(async () => {
  await server?.stop();
});

describe.each(['session', 'table'])('dlock demo flash-sale on mysql (%s mode)', (mode) => {
  const url = (): string => `${server.url}?mode=${mode}`;

  it.each([1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const s = await flashSale(['--url', url(), '--stock', String(stock)]);
    expect(s).toMatchObject({ backend: 'mysql', lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
    expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
    expect(s.ordersPerSec).toBeGreaterThan(0);
  });

  it('without the lock oversells', async () => {
    const s = await flashSale(['--url', url(), '--no-lock']);
    expect(s).toMatchObject({ backend: 'mysql', lock: false, workers: 8, stock: 1 });
    expect(s.oversold).toBeGreaterThan(0);
    expect(s.oversold).toBe(s.orders - s.stock);
  });
});

it('an unreachable MySQL fails fast with a clear message', async () => {
  const run = await dlock(['demo', 'flash-sale', '--url', 'mysql://root@127.0.0.1:1/dlock', '--workers', '2', '--json']);
  expect(run.code).not.toBe(0);
  expect(run.stderr).toMatch(/Cannot connect to MySQL at 127\.0\.0\.1:1\/dlock/);
});
