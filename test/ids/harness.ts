/**
 * Test support for the ids tests: fork id workers (optionally under libfaketime), read the id files
 * they write, and count duplicates and order violations.
 *
 * Workers run from a bundle of id-worker.ts built once per test file with esbuild (the compiler tsx
 * and vite already use): `--import tsx` costs ~0.5 s of CPU per process and much more when 16 start
 * at once on 2 cores, a plain bundle starts in ~0.1 s. The engines' clients stay external and resolve
 * through a node_modules link next to the bundle.
 */
import { execFile, fork } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { ensureBinary } from '../support/debian.js';
import { killWorkers, repoRoot, supervise, type Supervised } from '../support/workers.js';
import type { IdTestMessage, IdWorkerMessage, IdWorkerSpec } from './id-protocol.js';

const workerFile = join(dirname(fileURLToPath(import.meta.url)), 'id-worker.ts');
/** A forked id worker. */
export type IdWorker = Supervised<IdWorkerMessage, IdTestMessage>;

let bundled: { file: string; dir: string } | undefined;

/** Build the worker bundle (once per test file); call from beforeAll. */
export async function prepareIdWorker(): Promise<void> {
  if (bundled) return;
  const dir = mkdtempSync(join(tmpdir(), 'dlock-id-worker-'));
  const file = join(dir, 'id-worker.mjs');
  await build({
    entryPoints: [workerFile],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: file,
    external: ['better-sqlite3', 'ioredis', 'redis'],
    logLevel: 'warning',
  });
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'), 'dir');
  bundled = { file, dir };
}

/** Remove the worker bundle; call from afterAll (vitest may end its fork without an 'exit' event). */
export function disposeIdWorker(): void {
  if (bundled) rmSync(bundled.dir, { recursive: true, force: true });
  bundled = undefined;
}

process.on('exit', disposeIdWorker);

/** Fork an id worker; `env` is added to this process's environment (e.g. LD_PRELOAD). */
export function forkIdWorker(spec: IdWorkerSpec, env: Record<string, string> = {}): IdWorker {
  if (!bundled) throw new Error('call prepareIdWorker() in beforeAll first');
  const child = fork(bundled.file, [JSON.stringify(spec)], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'json',
    env: { ...process.env, ...env },
  });
  return supervise<IdWorkerMessage, IdTestMessage>(child, 'id worker');
}

/** SIGKILL workers (SIGCONT first, in case they are stopped) and wait for them to exit. */
export function killIdWorkers(workers: readonly IdWorker[]): Promise<void> {
  return killWorkers(workers);
}

/** The ids a worker wrote. */
export function readIds(file: string): BigInt64Array {
  if (!existsSync(file)) return new BigInt64Array(0);
  const b = readFileSync(file);
  return new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength - (b.byteLength % 8)));
}

/** Positions where an id is not strictly greater than the one before it. */
export function orderViolations(ids: BigInt64Array): number {
  let n = 0;
  for (let i = 1; i < ids.length; i++) if (ids[i]! <= ids[i - 1]!) n++;
  return n;
}

/** How many ids repeat an earlier one, over all the arrays together. */
export function duplicates(...lists: readonly BigInt64Array[]): number {
  const total = lists.reduce((s, l) => s + l.length, 0);
  const all = new BigInt64Array(total);
  let o = 0;
  for (const l of lists) {
    all.set(l, o);
    o += l.length;
  }
  all.sort();
  let d = 0;
  for (let i = 1; i < all.length; i++) if (all[i] === all[i - 1]) d++;
  return d;
}

/** Smallest and largest id of a list. */
export function minMax(ids: BigInt64Array): { min: bigint; max: bigint } {
  let min = BigInt(Number.MAX_SAFE_INTEGER) ** 2n;
  let max = -1n;
  for (const v of ids) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

const run = promisify(execFile);

/** libfaketime for Node workers: the preload library, and a timestamp file the test rewrites mid-run. */
export interface FakeTime {
  /** The environment for a worker. `monotonic: true` also fakes CLOCK_MONOTONIC (the harsh case). */
  env(monotonic: boolean): Record<string, string>;
  /** Set the offset: libfaketime's relative format, in seconds ("-0.1", "+0", "-10"). */
  set(offset: string): void;
}

/**
 * Install libfaketime if missing (Debian package `faketime`), find the preload library, and create
 * a timestamp file in `dir`. FAKETIME_NO_CACHE=1 makes every clock call re-read the file (slow:
 * a few µs per call, but a rewrite takes effect at once).
 */
export async function fakeTime(dir: string): Promise<FakeTime> {
  await ensureBinary('faketime', 'faketime');
  const { stdout } = await run('dpkg', ['-L', 'libfaketime']);
  const lib = stdout.split('\n').find((l) => /\/libfaketime\.so\.1$/.test(l.trim()));
  if (!lib) throw new Error(`libfaketime.so.1 not found in "dpkg -L libfaketime":\n${stdout}`);
  const file = join(dir, 'faketime.rc');
  writeFileSync(file, '+0\n');
  return {
    env: (monotonic) => ({
      LD_PRELOAD: lib.trim(),
      FAKETIME_TIMESTAMP_FILE: file,
      FAKETIME_NO_CACHE: '1',
      ...(monotonic ? {} : { FAKETIME_DONT_FAKE_MONOTONIC: '1' }),
    }),
    set: (offset) => writeFileSync(file, `${offset}\n`),
  };
}

/** Resolve after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
