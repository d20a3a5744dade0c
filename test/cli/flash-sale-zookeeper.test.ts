/**
 * `dlock demo flash-sale` on ZooKeeper, end to end through the built CLI (`npm test` builds
 * first): real worker processes, a real standalone ZooKeeper server started for this file. The
 * stock is a znode written blind and orders are sequential znodes, so the run without the lock
 * really oversells.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startZooKeeper, zooKeeperAdmin, type ZooKeeperCluster } from '../support/zookeeper.js';

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
  expect(run.code, run.stderr).toBe(0);
  expect(run.stderr).toBe('');
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0] ?? '') as Summary;
}

let zk: ZooKeeperCluster;

beforeAll(async () => {
  zk = await startZooKeeper();
});

afterAll(async () => {
  await zk.stop();
});

describe('dlock demo flash-sale on zookeeper', () => {
  it.each([1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const s = await flashSale(['--url', zk.url, '--stock', String(stock)]);
    expect(s).toMatchObject({ backend: 'zookeeper', lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
    expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
    expect(s.ordersPerSec).toBeGreaterThan(0);
  }, 60_000);

  it('without the lock oversells', async () => {
    const s = await flashSale(['--url', zk.url, '--no-lock']);
    expect(s).toMatchObject({ backend: 'zookeeper', lock: false, workers: 8, stock: 1 });
    expect(s.oversold).toBeGreaterThan(0);
    expect(s.oversold).toBe(s.orders - s.stock);
  }, 60_000);

  it('leaves no demo znodes behind', async () => {
    const admin = await zooKeeperAdmin(zk.connectionString);
    try {
      expect(await admin.children('/dlock/demo/flash-sale')).toEqual([]);
    } finally {
      await admin.close();
    }
  });

  it('an unreachable engine fails fast with a clear message', async () => {
    const run = await dlock(['demo', 'flash-sale', '--url', 'zookeeper://127.0.0.1:1', '--workers', '2', '--json']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/Cannot reach ZooKeeper at zookeeper:\/\/127\.0\.0\.1:1/);
  }, 60_000);
});
