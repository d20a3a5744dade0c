/**
 * A throwaway project outside the repo where user code imports `dlock` as a user would: its
 * node_modules links `dlock` to this repo (the built package, through its exports map) and every
 * other package to the repo's node_modules. Used by the docs and examples tests.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface TempProject {
  readonly dir: string;
  /** Remove the directory. */
  remove(): void;
}

/** Create the project: package.json (ESM), node_modules links, a `--strict` tsconfig emitting to out/. */
export function createTempProject(prefix: string): TempProject {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const nm = join(dir, 'node_modules');
  mkdirSync(nm);
  const repoNm = join(repoRoot, 'node_modules');
  for (const name of readdirSync(repoNm)) {
    if (name === '.bin' || name === 'dlock') continue;
    symlinkSync(join(repoNm, name), join(nm, name));
  }
  symlinkSync(repoRoot, join(nm, 'dlock'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'dlock-user', private: true, type: 'module' }));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        lib: ['ES2022', 'ESNext.Disposable'],
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        skipLibCheck: true,
        types: ['node'],
        outDir: 'out',
        rootDir: 'src',
      },
      include: ['src'],
    }),
  );
  mkdirSync(join(dir, 'src'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Run the repo's TypeScript on the project; resolves tsc's output ('' when it compiled cleanly). */
export function typeCheck(dir: string): Promise<string> {
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', dir], { cwd: dir, encoding: 'utf8' }, (_err, stdout, stderr) => {
      resolve(`${stdout}${stderr}`.trim());
    });
  });
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the program had to be killed at the time limit (it did not exit by itself). */
  timedOut: boolean;
}

/** Run a compiled file with plain Node; killed (timedOut) if it has not exited after `timeoutMs`. */
export function runNode(file: string, opts: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [file],
      { cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, ...opts.env } },
      (err, stdout, stderr) => {
        const e = err;
        resolve({
          code: child.exitCode,
          signal: child.signalCode,
          stdout,
          stderr,
          timedOut: Boolean(e?.killed) && child.signalCode === 'SIGKILL',
        });
      },
    );
  });
}
