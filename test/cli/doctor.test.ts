/**
 * `dlock doctor`: in-process through the CLI's `run()` on SQLite files (missing, a dlock database,
 * a rollback-journal file, not a database), the JSON form and the exit codes; and as a real
 * process from dist/ against an unreachable engine (one line, no stack trace).
 */
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { doctor, type DoctorReport } from '../../src/doctor/index.js';
import { InvalidArgumentError, OutOfRangeError, UnavailableError, UnsupportedUrlError } from '../../src/errors.js';
import { removeDir, tempDir } from '../support/processes.js';
import { repoRoot } from '../support/workers.js';
import { dlockInProcess } from '../support/cli.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('dlock-doctor-cli-');
});
afterAll(() => removeDir(dir));

const dlock = dlockInProcess;

const status = (r: DoctorReport, check: string): string | undefined => r.findings.find((f) => f.check === check)?.status;

describe('dlock doctor on SQLite', () => {
  it('a missing file fails ("no such database"), exit code 1, and the file still does not exist', async () => {
    const path = join(dir, 'missing.db');
    const r = await dlock('doctor', '--url', `sqlite:${path}`);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/FAIL {2}sqlite\.file: no such database/);
    expect(r.stdout).toMatch(/fix: Check the path/);
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}-wal`)).toBe(false);
  });

  it('a dlock database: WAL, writable, local file system; exit code 0; --json prints one object', async () => {
    const path = join(dir, 'locks.db');
    const client = await connect(`sqlite:${path}`);
    await client.using('k', () => Promise.resolve());
    await client.close();
    const r = await dlock('doctor', '--url', `sqlite:${path}`, '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(report.engine).toBe('sqlite');
    for (const check of ['sqlite.file', 'sqlite.journal-mode', 'sqlite.permissions', 'sqlite.filesystem']) expect(status(report, check), check).toBe('ok');
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('a rollback-journal database warns on the journal mode; a file that is not a database fails', async () => {
    const rollback = join(dir, 'rollback.db');
    const db = new Database(rollback);
    db.exec('CREATE TABLE t (x)');
    db.close();
    const r = await doctor(`sqlite:${rollback}`);
    expect(status(r, 'sqlite.journal-mode')).toBe('warn');
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'hello, this is not a database file at all, but it is long enough to have a header of one hundred bytes.\n');
    const t = await dlock('doctor', '--url', `sqlite:${text}`);
    expect(t.code).toBe(1);
    expect(t.stdout).toMatch(/not a SQLite database/);
  });
});

describe('dlock doctor: usage and input', () => {
  it('without --url or DLOCK_URL: exit code 2 and what to pass', async () => {
    const saved = process.env.DLOCK_URL;
    delete process.env.DLOCK_URL;
    try {
      const r = await dlock('doctor');
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('dlock doctor needs the engine to check: pass --url URL or set DLOCK_URL');
    } finally {
      if (saved !== undefined) process.env.DLOCK_URL = saved;
    }
  });

  it('a bad --ttl-ms is a usage error (exit code 2)', async () => {
    const r = await dlock('doctor', '--url', 'memory:', '--ttl-ms', '-5');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--ttl-ms must be a whole number/);
  });

  it('the library refuses bad input with the typed errors', async () => {
    await expect(doctor('')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(doctor('ftp://x')).rejects.toBeInstanceOf(UnsupportedUrlError);
    await expect(doctor('memory:', { ttlMs: -1 })).rejects.toBeInstanceOf(OutOfRangeError);
    await expect(doctor('memory:', { pings: 2 })).rejects.toBeInstanceOf(OutOfRangeError);
    await expect(doctor('redis+cluster://h:1?bogus=1')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(doctor('redis://127.0.0.1:1', { timeoutMs: 1000 })).rejects.toBeInstanceOf(UnavailableError);
  });
});

describe('dlock doctor as a real process (dist/)', () => {
  const dlockProcess = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const env = { ...process.env };
      delete env.DLOCK_URL;
      delete env.DLOCK_DEBUG;
      execFile(process.execPath, [join(repoRoot, 'bin', 'dlock.js'), ...args], { cwd: repoRoot, env, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });

  it.each([
    ['Redis', 'redis://127.0.0.1:1'],
    ['Redis', 'redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3'],
    ['PostgreSQL', 'postgres://u@127.0.0.1:1/db'],
    ['MySQL', 'mysql://u@127.0.0.1:1/db'],
    ['etcd', 'etcd://127.0.0.1:1'],
    ['ZooKeeper', 'zookeeper://127.0.0.1:1'],
  ])('an unreachable %s (%s): one line, exit code 1, no stack trace', async (engine, url) => {
    const r = await dlockProcess(['doctor', '--url', url, '--timeout-ms', '1500']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^dlock: error: Cannot reach ${engine} at [^\\n]+\\. Check that it is running there and that --url \\(or DLOCK_URL\\) names it\\.\\n$`));
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
