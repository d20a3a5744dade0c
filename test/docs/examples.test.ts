/**
 * examples/: each program type-checks under `--strict` against the built package (imported as
 * `dlock`, from a project outside the repo), runs against a real engine, exits by itself within
 * the time limit, and prints what it promises.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { createTempProject, repoRoot, runNode, typeCheck, type RunResult, type TempProject } from './project.js';

const LIMIT_MS = 45_000;
const examples = readdirSync(join(repoRoot, 'examples')).filter((f) => f.endsWith('.ts'));

let project: TempProject;
let postgres: PostgresServer | undefined;
let tscOutput = '';
const env = (): NodeJS.ProcessEnv => ({ DLOCK_URL: inject('redisUrl'), DATABASE_URL: postgres!.url });
const run = (name: string, extra: NodeJS.ProcessEnv = {}): Promise<RunResult> =>
  runNode(join(project.dir, 'out', name.replace(/\.ts$/, '.js')), { cwd: project.dir, timeoutMs: LIMIT_MS, env: { ...env(), ...extra } });

function ok(r: RunResult): string {
  expect(r.timedOut, `did not exit within ${LIMIT_MS} ms\n${r.stdout}${r.stderr}`).toBe(false);
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
  expect(r.stderr, 'a library never writes to the console (nor makes Node warn)').toBe('');
  return r.stdout;
}

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/esm/index.js'))) throw new Error('dist/ is missing: run `npm run build` first (npm test does).');
  project = createTempProject('dlock-examples');
  for (const f of examples) copyFileSync(join(repoRoot, 'examples', f), join(project.dir, 'src', f));
  [postgres, tscOutput] = await Promise.all([startPostgres(), typeCheck(project.dir)]);
}, 180_000);

afterAll(async () => {
  await postgres?.stop();
  project?.remove();
});

describe('examples/', () => {
  it('has the four programs', () => {
    expect(examples.sort()).toEqual(['cron-leader.ts', 'fenced-postgres.ts', 'http-order-lock.ts', 'semaphore-pool.ts']);
  });

  it('type-check under --strict against the built package', () => {
    expect(tscOutput).toBe('');
  });

  it('http-order-lock: one of five concurrent payments of an order goes through, the others get 409', async () => {
    const out = ok(await run('http-order-lock.ts'));
    expect(out).toContain('order 1, 5 concurrent payments: 1 paid (201), 4 refused (409)');
    expect(out).toContain('order 2: 201; order 1 again: 200');
  });

  it('semaphore-pool: never more than 3 jobs at once, and 3 do run together', async () => {
    expect(ok(await run('semaphore-pool.ts'))).toContain('12 jobs done, at most 3 at once (permits: 3)');
  });

  it('fenced-postgres: the paused holder\'s late write is refused and the count drops once', async () => {
    const out = ok(await run('fenced-postgres.ts'));
    expect(out).toMatch(/B wrote with token \d+/);
    expect(out).toContain('A refused: DLOCK_STALE_TOKEN');
    expect(out).toContain('count = 9');
    expect(out).not.toContain('A wrote');
  });

  it('cron-leader: three processes of a fleet, one leader at a time, terms increasing', async () => {
    const file = join(project.dir, 'out', 'cron-leader.js');
    const procs = [0, 1, 2].map(
      () =>
        new Promise<RunResult>((resolve) => {
          const child = spawn(process.execPath, [file], { cwd: project.dir, env: { ...process.env, ...env(), CRON_RUNS: '3' } });
          let stdout = '';
          let stderr = '';
          child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
          child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          const timer = setTimeout(() => child.kill('SIGKILL'), LIMIT_MS);
          child.on('exit', (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, stdout, stderr, timedOut: signal === 'SIGKILL' });
          });
        }),
    );
    const results = await Promise.all(procs);
    const runs = results
      .flatMap((r) => ok(r).trim().split('\n'))
      .map((l) => {
        const m = /^run term=(\d+) pid=(\d+) start=(\d+) end=(\d+)$/.exec(l);
        if (!m) throw new Error(`unexpected line ${l}`);
        return { term: BigInt(m[1]!), pid: m[2]!, start: Number(m[3]), end: Number(m[4]) };
      })
      .sort((x, y) => x.start - y.start);
    expect(runs).toHaveLength(9);
    expect(new Set(runs.map((r) => r.pid)).size).toBe(3);
    for (let i = 1; i < runs.length; i++) {
      const [prev, cur] = [runs[i - 1]!, runs[i]!];
      expect(cur.start, 'two leaders ran the job at once').toBeGreaterThanOrEqual(prev.end);
      if (cur.pid === prev.pid) expect(cur.term).toBe(prev.term);
      else expect(cur.term > prev.term, 'a new leader has a higher term').toBe(true);
    }
  }, LIMIT_MS + 15_000);
});
