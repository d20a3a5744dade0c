/**
 * One rule across the CLI's commands: which engine (--url, else DLOCK_URL, else the command's
 * default), stated in every --help; the same line when the engine does not answer; and
 * `npm run bench -- --help` printing its usage without building first.
 */
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = `${root}bin/dlock.js`;
const RULE = "Engine URL: --url, else the DLOCK_URL environment variable, else the command's default.";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function dlock(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const merged = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete merged[k];
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { cwd: root, env: merged, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const r = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof r.code === 'number' ? r.code : -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }
}

describe('CLI consistency', () => {
  it.each([[[]], [['inspect']], [['ls']], [['release']], [['ids', 'next']], [['demo', 'flash-sale']], [['doctor']]])('--help of `dlock %s` states the engine rule', async (cmd) => {
    const r = await dlock([...cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout.replace(/\s+/g, ' ')).toContain(RULE);
  });

  it('inspect without --url or DLOCK_URL says what to pass', async () => {
    const r = await dlock(['inspect', 'k'], { DLOCK_URL: undefined });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('dlock inspect needs the engine to look at: pass --url URL or set DLOCK_URL');
  });

  it('--url wins over DLOCK_URL', async () => {
    const r = await dlock(['inspect', 'k', '--url', 'memory:'], { DLOCK_URL: 'redis://127.0.0.1:1' });
    expect(r).toMatchObject({ code: 0, stdout: 'lock "k" is free\n' });
  });

  it('an unreachable engine gets the same one line on every command (from --url or DLOCK_URL)', async () => {
    const url = 'redis://127.0.0.1:1';
    const runs = await Promise.all([
      dlock(['inspect', 'k', '--url', url]),
      dlock(['ls', '--url', url]),
      dlock(['release', '--force', 'k'], { DLOCK_URL: url }),
      dlock(['ids', 'next'], { DLOCK_URL: url }),
      dlock(['demo', 'flash-sale', '--json'], { DLOCK_URL: url }),
      dlock(['doctor'], { DLOCK_URL: url }),
    ]);
    const line = /^dlock: error: Cannot reach Redis at redis:\/\/127\.0\.0\.1:1: [^\n]+\. Check that it is running there and that --url \(or DLOCK_URL\) names it\.\n$/;
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(line);
    }
  });

  it('bad input to ls, release and inspect: what to pass, no stack trace, nothing done', async () => {
    const runs = await Promise.all([
      dlock(['ls', '--limit', '0', '--url', 'memory:']),
      dlock(['release', '--force', '', '--url', 'memory:']),
      dlock(['inspect', '', '--url', 'memory:']),
    ]);
    expect(runs.map((r) => r.code)).toEqual([1, 1, 1]);
    expect(runs[0]?.stderr).toContain('expected a whole number from 1 to 1000000');
    for (const r of runs.slice(1)) expect(r.stderr).toBe('dlock: error: Lock key must be a non-empty string.\n');
    for (const r of runs) {
      expect(r.stdout).toBe('');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('npm run bench -- --help prints its usage without building', async () => {
    const mark = `${root}dist/esm/index.js`;
    const before = statSync(mark).mtimeMs;
    const r = await promisify(execFile)('npm', ['run', '--silent', 'bench', '--', '--help'], { cwd: root, timeout: 120_000 });
    expect(`${r.stdout}${r.stderr}`).toMatch(/^usage: npm run bench -- </m);
    expect(statSync(mark).mtimeMs).toBe(before);
  });
});
