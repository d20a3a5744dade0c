/**
 * `dlock ... | head`: a reader that closes the pipe early ends the command quietly (exit 0, no
 * EPIPE stack trace), as Unix tools do.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { repoRoot } from '../support/workers.js';

it('dlock ids next --count 200000 | head -1: exit 0, one id, nothing on stderr', async () => {
  const bin = join(repoRoot, 'bin', 'dlock.js');
  const script = `set -o pipefail; "${process.execPath}" "${bin}" ids next --count 200000 --url memory: | head -1`;
  const { stdout, stderr } = await promisify(execFile)('bash', ['-c', script], { cwd: repoRoot, timeout: 60_000 });
  expect(stdout.trim()).toMatch(/^\d+$/);
  expect(stderr).toBe('');
}, 60_000);
