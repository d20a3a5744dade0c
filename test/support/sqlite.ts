import { fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from './workers.js';

const blockerFile = join(dirname(fileURLToPath(import.meta.url)), 'sqlite-blocker.ts');

/** Another process that can hold an EXCLUSIVE transaction on a SQLite file. */
export interface SqliteBlocker {
  readonly pid: number;
  /** BEGIN EXCLUSIVE: from now on every write of other connections fails busy. */
  lock(): Promise<void>;
  /** ROLLBACK the exclusive transaction. */
  unlock(): Promise<void>;
  /** Kill the process (its transaction, if any, dies with it). */
  stop(): Promise<void>;
}

type Reply = { type: 'ok'; op: string } | { type: 'error'; op: string; message: string };

/** Fork a blocker process on `path` (run through tsx like the lock workers). */
export async function startSqliteBlocker(path: string): Promise<SqliteBlocker> {
  const child = fork(blockerFile, [path], { cwd: repoRoot, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('fork failed');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const request = (op: string, timeoutMs = 30_000): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`sqlite blocker: no answer to "${op}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const onMessage = (m: Reply): void => {
        if (m.op !== op) return;
        cleanup();
        if (m.type === 'ok') resolve();
        else reject(new Error(`sqlite blocker "${op}" failed: ${m.message}`));
      };
      const onExit = (): void => {
        cleanup();
        reject(new Error(`sqlite blocker exited before answering "${op}"`));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send({ op });
    });
  await request('open');
  return {
    pid,
    lock: () => request('lock'),
    unlock: () => request('unlock'),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
