/**
 * End to end through the built CLI (`npm test` builds first): `node bin/dlock.js ...` as a user
 * runs it, real worker processes, real engines (a temporary SQLite file; the run's shared Redis).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'dlock.js');

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

function dlock(args: readonly string[], timeoutMs = 50_000): Promise<CliRun> {
  // The user's DLOCK_URL (a default for --url) must not leak into the tests.
  const env = { ...process.env };
  delete env.DLOCK_URL;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGINT', env },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
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

/** The --json contract: exactly one JSON object, on the last line of stdout. */
function lastJson(run: CliRun): Summary {
  const lines = run.stdout.trim().split('\n');
  expect(run.code, run.stderr).toBe(0);
  return JSON.parse(lines[lines.length - 1] ?? '') as Summary;
}

async function flashSale(args: readonly string[]): Promise<Summary> {
  const run = await dlock(['demo', 'flash-sale', '--workers', '8', '--buyers', '200', '--json', ...args]);
  const summary = lastJson(run);
  for (const key of ['backend', 'lock', 'workers', 'stock', 'orders', 'oversold', 'ordersPerSec', 'lockWaitP50Ms', 'lockWaitP99Ms']) {
    expect(summary).toHaveProperty(key);
  }
  // --json prints nothing else: no progress, no status lines.
  expect(run.stderr).toBe('');
  expect(run.stdout.trim().split('\n')).toHaveLength(1);
  return summary;
}

async function ourTempDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((d) => d.startsWith('dlock-flash-sale-'));
}

describe.each([
  { name: 'sqlite (default temp file)', urlArgs: () => [] as string[], backend: 'sqlite' },
  { name: 'redis', urlArgs: () => ['--url', inject('redisUrl')], backend: 'redis' },
])('dlock demo flash-sale on $name', ({ urlArgs, backend }) => {
  it.each([1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
    const s = await flashSale([...urlArgs(), '--stock', String(stock)]);
    expect(s).toMatchObject({ backend, lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
    expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
    expect(s.lockWaitP50Ms).toBeGreaterThanOrEqual(0);
    expect(s.ordersPerSec).toBeGreaterThan(0);
  });

  it('without the lock oversells', async () => {
    const s = await flashSale([...urlArgs(), '--no-lock']);
    expect(s).toMatchObject({ backend, lock: false, workers: 8, stock: 1 });
    expect(s.oversold).toBeGreaterThan(0);
    expect(s.oversold).toBe(s.orders - s.stock);
  });
});

describe('dlock demo flash-sale output and errors', () => {
  it('prints the summary table and the verdict without --json, and removes its temp dir', async () => {
    const before = await ourTempDirs();
    const run = await dlock(['demo', 'flash-sale', '--workers', '2', '--buyers', '40']);
    expect(run.code, run.stderr).toBe(0);
    for (const label of ['backend', 'lock', 'workers', 'buyers', 'stock', 'orders', 'oversold', 'duration', 'orders/s', 'lock wait p50', 'lock wait p99', 'lock wait max']) {
      expect(run.stdout).toContain(`| ${label} `);
    }
    expect(run.stdout.trim().split('\n').at(-1)).toBe('exact: sold 1 of 1');
    // Not a TTY here: plain progress lines instead of a bar.
    expect(run.stderr).toMatch(/flash sale: 40\/40 buyers done, orders 1/);
    const leaked = (await ourTempDirs()).filter((d) => !before.includes(d));
    expect(leaked).toEqual([]);
  });

  it('an unknown URL scheme fails with the supported schemes', async () => {
    const run = await dlock(['demo', 'flash-sale', '--url', 'mongodb://127.0.0.1:27017', '--json']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/mongodb/);
    expect(run.stderr).toMatch(/sqlite:/);
    expect(run.stderr).toMatch(/redis:\/\//);
    expect(run.stdout).toBe('');
  });

  it.each([
    [['--workers', '0'], /--workers/],
    [['--stock', 'many'], /--stock/],
    [['--workers', '4', '--buyers', '2'], /--buyers/],
  ])('refuses bad option values %j', async (args, message) => {
    const run = await dlock(['demo', 'flash-sale', ...args]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(message);
  });

  it('an unreachable engine fails fast with a clear message', async () => {
    const run = await dlock(['demo', 'flash-sale', '--url', 'redis://127.0.0.1:1', '--workers', '2', '--json']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/Cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
  });
});

describe('dlock inspect', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dlock-cli-test-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says a free key is free (redis)', async () => {
    const run = await dlock(['inspect', 'cli-test:free-key', '--url', inject('redisUrl')]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/free/);
  });

  it('says a free key is free (sqlite, --json)', async () => {
    const run = await dlock(['inspect', 'cli-test:free-key', '--url', `sqlite:${join(dir, 'locks.db')}`, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim())).toEqual({ key: 'cli-test:free-key', free: true });
  });

  it('requires --url', async () => {
    const run = await dlock(['inspect', 'k']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--url/);
  });
});
