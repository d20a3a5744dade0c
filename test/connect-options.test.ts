/**
 * `connect(url, badOptions)` leaves nothing open: it throws the option's error, and a process
 * doing only that exits by itself (issue 10: `connect('redis://…', { ttlMs: -5 })` used to throw
 * `OutOfRangeError` but leave a connected socket, so the process never exited).
 *
 * Each case runs in a child Node process on the built package (dist/, `npm run build` first), on
 * a real engine where one is cheap to start (Redis, Redlock, SQLite), and on a refused port for
 * the other schemes (their clients would keep reconnecting, which keeps a process alive too).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './support/ports.js';
import { removeDir, tempDir } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';
import { startRedlock, type RedlockNodes } from './support/redlock.js';
import { repoRoot } from './support/workers.js';

const dist = join(repoRoot, 'dist', 'esm', 'index.js');
/** Generous: a loaded machine starts Node slowly; a leaked socket keeps the child alive forever. */
const EXIT_WITHIN_MS = 20_000;

interface Outcome {
  readonly exitCode: number | null;
  readonly killed: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run `connect(url, options)` in a child process; it prints the error's code and option. */
function connectInChild(url: string, options: string): Promise<Outcome> {
  const code = `
    import { connect } from ${JSON.stringify(dist)};
    try {
      await connect(${JSON.stringify(url)}, ${options});
      console.log('connected');
    } catch (e) {
      console.log('error ' + e.code + ' ' + (e.option ?? '-'));
    }
  `;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', code],
      { cwd: repoRoot, timeout: EXIT_WITHIN_MS, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; killed?: boolean }) | null;
        resolve({ exitCode: e ? (typeof e.code === 'number' ? e.code : null) : 0, killed: e?.killed === true, stdout, stderr });
      },
    );
  });
}

let redis: RedisServer;
let redlock: RedlockNodes;
let dir: string;
let refused: number;

beforeAll(async () => {
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first.`);
  [redis, redlock] = await Promise.all([startRedis(), startRedlock({ nodes: 3 })]);
  dir = tempDir('dlock-connect-options-');
  refused = await freePort();
});

afterAll(async () => {
  await Promise.all([redis?.stop(), redlock?.stop()]);
  if (dir) removeDir(dir);
});

describe('connect() with a bad option leaves nothing open', () => {
  const cases = (): Array<[string, string]> => [
    ['redis (real server)', redis.url],
    ['redis with a db (real server)', `${redis.url}/1`],
    ['redlock (3 real nodes)', redlock.url],
    ['sqlite (real file)', `sqlite:${join(dir, 'locks.db')}`],
    ['memory', 'memory:'],
    ['rediss (refused port)', `rediss://127.0.0.1:${refused}`],
    ['redis+cluster (refused port)', `redis+cluster://127.0.0.1:${refused}`],
    ['redis+sentinel (refused port)', `redis+sentinel://127.0.0.1:${refused}/mymaster`],
    ['etcd (refused port)', `etcd://127.0.0.1:${refused}`],
    ['postgres (refused port)', `postgres://u:p@127.0.0.1:${refused}/db`],
    ['mysql (refused port)', `mysql://u:p@127.0.0.1:${refused}/db`],
    ['zookeeper (refused port)', `zookeeper://127.0.0.1:${refused}`],
  ];

  it('ttlMs: -5 throws OutOfRangeError (ttlMs) and the process exits by itself, on every scheme', async () => {
    const results: Array<[string, Outcome]> = [];
    // Two at a time: a 2-core machine shared with other suites.
    const list = cases();
    for (let i = 0; i < list.length; i += 2) {
      const pair = list.slice(i, i + 2);
      results.push(...(await Promise.all(pair.map(async ([name, url]): Promise<[string, Outcome]> => [name, await connectInChild(url, '{ ttlMs: -5 }')]))));
    }
    const summary = results.map(([name, o]) => `${name}: exit ${o.exitCode}${o.killed ? ' (killed: still running)' : ''}, ${o.stdout.trim()}${o.stderr ? ` / ${o.stderr.trim().slice(0, 200)}` : ''}`);
    expect(summary).toEqual(results.map(([name]) => `${name}: exit 0, error DLOCK_OUT_OF_RANGE ttlMs`));
  }, 240_000);

  it('a non-object option set throws InvalidArgumentError and exits too (real Redis)', async () => {
    const o = await connectInChild(redis.url, '"fast"');
    expect({ exitCode: o.exitCode, killed: o.killed, out: o.stdout.trim() }).toEqual({ exitCode: 0, killed: false, out: 'error DLOCK_INVALID_ARGUMENT -' });
  }, 60_000);
});
