/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on SQLite (the default: a temporary file)
 * and on the run's shared Redis; then the CLI's output and errors, and `dlock inspect`, through
 * the built CLI (`npm test` builds first).
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { defineFlashSaleTests, dlock } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'sqlite',
  start: () => Promise.resolve(undefined),
  stop: () => Promise.resolve(),
  targets: [{ title: 'sqlite (default temp file)', url: () => undefined }],
});

defineFlashSaleTests({
  backend: 'redis',
  start: () => Promise.resolve(inject('redisUrl')),
  stop: () => Promise.resolve(),
  url: (url) => url,
  unreachable: { url: 'redis://127.0.0.1:1', message: /Cannot reach Redis at redis:\/\/127\.0\.0\.1:1/ },
});

describe('dlock demo flash-sale output and errors', () => {
  it('prints the summary table and the verdict without --json, and removes its temp dir', async () => {
    // A temp root of its own (TMPDIR): other runs on the machine (the CI's Node lines run side by
    // side) make and remove demo dirs in the shared one meanwhile.
    const root = await mkdtemp(join(tmpdir(), 'dlock-demo-root-'));
    const run = await dlock(['demo', 'flash-sale', '--workers', '2', '--buyers', '40'], 50_000, { TMPDIR: root });
    expect(run.code, run.stderr).toBe(0);
    for (const label of ['backend', 'lock', 'workers', 'buyers', 'stock', 'orders', 'oversold', 'duration', 'orders/s', 'lock wait p50', 'lock wait p99', 'lock wait max']) {
      expect(run.stdout).toContain(`| ${label} `);
    }
    expect(run.stdout.trim().split('\n').at(-1)).toBe('exact: sold 1 of 1');
    // Not a TTY here: plain progress lines instead of a bar.
    expect(run.stderr).toMatch(/flash sale: 40\/40 buyers done, orders 1/);
    const leaked = await readdir(root);
    await rm(root, { recursive: true, force: true });
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
    // inspect creates nothing: the database must exist (a program using it made it).
    const url = `sqlite:${join(dir, 'locks.db')}`;
    const { connect } = await import('../../src/connect.js');
    const app = await connect(url);
    await (await app.acquire('cli-test:other-key')).release();
    await app.close();
    const run = await dlock(['inspect', 'cli-test:free-key', '--url', url, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim())).toEqual({ key: 'cli-test:free-key', free: true });
  });

  it('requires --url', async () => {
    const run = await dlock(['inspect', 'k']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--url/);
  });
});
