/**
 * The flash-sale case of flash-sale.test.ts on a real 3-master Redis Cluster
 * (`redis+cluster://...`) and on a master + replica under Sentinel (`redis+sentinel://...`),
 * through the built CLI (`npm test` builds first).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { startRedisSentinel, type RedisSentinelSetup } from '../support/redis-sentinel.js';

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

let cluster: RedisCluster;
let sentinel: RedisSentinelSetup;

beforeAll(async () => {
  [cluster, sentinel] = await Promise.all([startRedisCluster(), startRedisSentinel({ replicas: 1, sentinels: 1 })]);
});

afterAll(async () => {
  await Promise.allSettled([cluster?.stop(), sentinel?.stop()]);
});

describe.each([
  { name: 'redis cluster', url: () => cluster.url },
  { name: 'redis sentinel', url: () => sentinel.url },
])('dlock demo flash-sale on $name', ({ url }) => {
  it.each([1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const s = await flashSale(['--url', url(), '--stock', String(stock)]);
    expect(s).toMatchObject({ backend: 'redis', lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
    expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
    expect(s.ordersPerSec).toBeGreaterThan(0);
  });

  it('without the lock oversells', async () => {
    const s = await flashSale(['--url', url(), '--no-lock']);
    expect(s).toMatchObject({ backend: 'redis', lock: false, workers: 8, stock: 1 });
    expect(s.oversold).toBeGreaterThan(0);
    expect(s.oversold).toBe(s.orders - s.stock);
  });
});

it('an unreachable cluster fails fast with a clear message', async () => {
  const run = await dlock(['demo', 'flash-sale', '--url', 'redis+cluster://127.0.0.1:1,127.0.0.1:2', '--workers', '2', '--json']);
  expect(run.code).not.toBe(0);
  expect(run.stderr).toMatch(/Cannot reach Redis at redis\+cluster:\/\/127\.0\.0\.1:1,127\.0\.0\.1:2/);
});
