/**
 * The flash-sale cases every backend runs, end to end through the built CLI (`npm test` builds
 * first): `node bin/dlock.js demo flash-sale ...` as a user runs it, real worker processes, real
 * engines. One small test file per backend (test/cli/flash-sale*.test.ts) calls
 * `defineFlashSaleTests` with how to start its engine, its URL(s) and its own checks; vitest runs
 * those files in parallel.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'dlock.js');

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI; never rejects (a non-zero exit or a timeout is `code` != 0). */
export function dlock(args: readonly string[], timeoutMs = 50_000, extraEnv: Record<string, string> = {}): Promise<CliRun> {
  // The user's DLOCK_URL (a default for --url) must not leak into the tests.
  const env = { ...process.env, ...extraEnv };
  delete env.DLOCK_URL;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGINT', env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Summary {
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

const SUMMARY_KEYS = ['backend', 'lock', 'workers', 'stock', 'orders', 'oversold', 'ordersPerSec', 'lockWaitP50Ms', 'lockWaitP99Ms'];

/**
 * `demo flash-sale --workers 8 --buyers 200 --json ...args`, checking the --json contract:
 * exit 0, exactly one JSON object on stdout with every summary field, nothing else printed.
 */
export async function flashSale(args: readonly string[], timeoutMs?: number): Promise<Summary> {
  const run = await dlock(['demo', 'flash-sale', '--workers', '8', '--buyers', '200', '--json', ...args], timeoutMs);
  expect(run.code, run.stderr).toBe(0);
  // --json prints nothing else: no progress, no status lines.
  expect(run.stderr).toBe('');
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  const summary = JSON.parse(lines[0] ?? '') as Summary;
  for (const key of SUMMARY_KEYS) expect(summary).toHaveProperty(key);
  return summary;
}

/** One way to reach the backend's engine: a describe block of the sale cases of its own. */
export interface FlashSaleTarget<E> {
  /** Shown in the describe title: `dlock demo flash-sale on <title>`. */
  title: string;
  /** The `--url` to pass (read once the engine runs); undefined: no `--url` (the default engine). */
  url(engine: E): string | undefined;
}

export interface FlashSaleBackend<E> {
  /** The `backend` the --json summary reports, e.g. 'postgres'. */
  backend: string;
  /** Start this file's engine(s) (test/support starters); the result is handed to `url` and `checks`. */
  start(): Promise<E>;
  /** Stop what `start` started. */
  stop(engine: NoInfer<E>): Promise<void>;
  /** Default: one target titled `backend`, on `url(engine)`. */
  targets?: ReadonlyArray<FlashSaleTarget<NoInfer<E>>>;
  /** The engine URL when there is one target. */
  url?(engine: NoInfer<E>): string | undefined;
  /** Stocks of the "sells exactly the stock" case. Default [1, 5]. */
  stocks?: readonly number[];
  /** How long one CLI run may take, in ms. Default 50,000 (a test may take 30 s more). */
  cliTimeoutMs?: number;
  /** Engine-specific checks run after every target's sales, e.g. that no demo data is left. */
  checks?: ReadonlyArray<{ title: string; run(engine: NoInfer<E>): Promise<void> }>;
  /** A URL nothing listens on: the CLI must fail fast, with `message` on stderr. */
  unreachable?: { url: string; message: RegExp };
}

/**
 * The sale cases for one backend: with the lock it sells exactly the stock (each of `stocks`),
 * without it the blind writes oversell; then the backend's own checks; and an unreachable engine
 * fails fast with a clear message.
 */
export function defineFlashSaleTests<E>(b: FlashSaleBackend<E>): void {
  const cliTimeoutMs = b.cliTimeoutMs ?? 50_000;
  const testTimeoutMs = cliTimeoutMs + 30_000;
  const targets = b.targets ?? [{ title: b.backend, url: (e: E) => b.url?.(e) }];
  let engine: E | undefined;
  let started = false;
  const running = (): E => {
    if (!started) throw new Error(`The ${b.backend} engine did not start (see beforeAll).`);
    return engine as E;
  };

  describe(`dlock demo flash-sale (${b.backend})`, () => {
    beforeAll(async () => {
      engine = await b.start();
      started = true;
    });
    afterAll(async () => {
      if (started) await b.stop(engine as E);
    });

    describe.each(targets)('on $title', (target) => {
      const urlArgs = (): string[] => {
        const url = target.url(running());
        return url === undefined ? [] : ['--url', url];
      };

      it.each(b.stocks ?? [1, 5])('with the lock sells exactly the stock (stock %i)', async (stock) => {
        const s = await flashSale([...urlArgs(), '--stock', String(stock)], cliTimeoutMs);
        expect(s).toMatchObject({ backend: b.backend, lock: true, workers: 8, buyers: 200, stock, orders: stock, oversold: 0 });
        expect(s.lockWaitP99Ms).toBeGreaterThanOrEqual(s.lockWaitP50Ms);
        expect(s.lockWaitP50Ms).toBeGreaterThanOrEqual(0);
        expect(s.ordersPerSec).toBeGreaterThan(0);
      }, testTimeoutMs);

      it('without the lock oversells', async () => {
        const s = await flashSale([...urlArgs(), '--no-lock'], cliTimeoutMs);
        expect(s).toMatchObject({ backend: b.backend, lock: false, workers: 8, stock: 1 });
        expect(s.oversold).toBeGreaterThan(0);
        expect(s.oversold).toBe(s.orders - s.stock);
      }, testTimeoutMs);
    });

    for (const check of b.checks ?? []) {
      it(check.title, () => check.run(running()), testTimeoutMs);
    }

    const unreachable = b.unreachable;
    if (unreachable) {
      it(`an unreachable ${b.backend} engine fails fast with a clear message`, async () => {
        const run = await dlock(['demo', 'flash-sale', '--url', unreachable.url, '--workers', '2', '--json'], cliTimeoutMs);
        expect(run.code).not.toBe(0);
        expect(run.stderr).toMatch(unreachable.message);
      }, testTimeoutMs);
    }
  });
}
