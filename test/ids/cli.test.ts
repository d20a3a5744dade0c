/**
 * `dlock ids next` and `dlock ids decode`: in-process through the CLI's `run()` (fast), and once
 * as a real process (`node --import tsx src/cli/main.ts`), on a temporary SQLite file.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdLayout } from '../../src/ids/layout.js';
import { repoRoot } from '../support/workers.js';
import { tempDir } from './harness.js';
import { dlockInProcess } from '../support/cli.js';

let tmp: { dir: string; cleanup: () => void };
let url: string;
beforeAll(() => {
  tmp = tempDir('dlock-ids-cli-');
  url = `sqlite:${join(tmp.dir, 'ids.db')}`;
});
afterAll(() => tmp.cleanup());

const dlock = dlockInProcess;

describe('dlock ids', () => {
  it('next --count N prints N increasing ids, one per line, with one worker id', async () => {
    const r = await dlock('ids', 'next', '--count', '5000', '--url', url);
    expect(r.code, r.stderr).toBe(0);
    const ids = r.stdout.trim().split('\n').map(BigInt);
    expect(ids).toHaveLength(5000);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(new Set(ids.map((id) => IdLayout.DEFAULT.decode(id).worker)).size).toBe(1);
  });

  it('next --json prints one object; two runs never repeat an id', async () => {
    const a = await dlock('ids', 'next', '--count', '3', '--url', url, '--name', 'orders', '--json');
    const b = await dlock('ids', 'next', '--count', '3', '--url', url, '--name', 'orders', '--json');
    expect(a.code, a.stderr).toBe(0);
    const ja = JSON.parse(a.stdout) as { name: string; workerId: number; ids: string[] };
    const jb = JSON.parse(b.stdout) as { ids: string[] };
    expect(ja.name).toBe('orders');
    expect(ja.ids).toHaveLength(3);
    expect(IdLayout.DEFAULT.decode(ja.ids[0]!).worker).toBe(ja.workerId);
    expect(new Set([...ja.ids, ...jb.ids]).size).toBe(6);
  });

  it('next honours --layout', async () => {
    const r = await dlock('ids', 'next', '--url', url, '--layout', '39/4/20', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { workerId: number; ids: string[] };
    expect(j.workerId).toBeLessThan(16);
    expect(new IdLayout({ timeBits: 39, workerBits: 4, sequenceBits: 20 }).decode(j.ids[0]!).worker).toBe(j.workerId);
  });

  it('decode shows time, worker and sequence (text and --json), for any layout', async () => {
    const l = IdLayout.DEFAULT;
    const id = l.encode({ time: l.unitOf(Date.UTC(2026, 4, 1, 12)), worker: 77, sequence: 5 });
    const text = await dlock('ids', 'decode', id.toString());
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/time\s+2026-05-01T12:00:00\.000Z/);
    expect(text.stdout).toMatch(/worker\s+77\n/);
    expect(text.stdout).toMatch(/sequence\s+5\n/);
    const json = await dlock('ids', 'decode', id.toString(), '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ id: id.toString(), time: '2026-05-01T12:00:00.000Z', worker: 77, sequence: 5 });
    const other = await dlock('ids', 'decode', '1', '--layout', '1/31/31', '--epoch', '2020-01-01T00:00:00Z', '--unit-ms', '10', '--json');
    expect(JSON.parse(other.stdout)).toMatchObject({ time: '2020-01-01T00:00:00.000Z', worker: 0, sequence: 1 });
  });

  it('refuses bad input with a message and a non-zero exit code', async () => {
    const bad = await dlock('ids', 'decode', 'abc');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/decimal string/);
    const big = await dlock('ids', 'decode', '9223372036854775808');
    expect(big.code).toBe(1);
    expect(big.stderr).toMatch(/2\^63-1/);
    const layout = await dlock('ids', 'decode', '1', '--layout', '41/10');
    expect(layout.code).not.toBe(0);
    expect(layout.stderr).toMatch(/TIME\/WORKER\/SEQUENCE/);
    const count = await dlock('ids', 'next', '--count', '0', '--url', url);
    expect(count.code).not.toBe(0);
  });

  it('works as a real process', async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const env = { ...process.env };
      delete env.DLOCK_URL;
      execFile(
        process.execPath,
        ['--import', 'tsx', join('src', 'cli', 'main.ts'), 'ids', 'next', '--count', '3', '--url', url],
        { cwd: repoRoot, env, timeout: 30_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(3);
  });
});
