/** The CLI run in-process (its `run()`), its output captured: fast, for tests of the commands. */
import type { CliIo } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';

/** `dlock ...args` in this process: the exit code and what it printed. */
export async function dlockInProcess(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io = {
    stdout: { write: (s: string) => ((stdout += s), true), isTTY: false },
    stderr: { write: (s: string) => ((stderr += s), true), isTTY: false },
  } as unknown as CliIo;
  const code = await run(['node', 'dlock', ...args], io);
  return { code, stdout, stderr };
}
