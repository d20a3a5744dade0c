/**
 * A private MariaDB server for tests and benchmarks (Debian package `mariadb-server`, installed on
 * demand): a fresh data directory from `mariadb-install-db` in a temp dir, a real `root` user with
 * an empty password over TCP on a random free loopback port (grant tables on, so KILL and
 * privileges behave as in production), InnoDB flushing relaxed for speed. Stopped by pid; an exit
 * hook kills whatever a test forgot. No vitest imports: the benchmark uses it too.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';

const run = promisify(execFile);

/** A mariadbd this process started. */
export interface MysqlServer {
  readonly port: number;
  /** `mysql://root@127.0.0.1:<port>/dlock` (the `dlock` database exists). */
  readonly url: string;
  /** The server process id (changes after {@link restart}). */
  readonly pid: number;
  /** The data directory (kept across {@link restart}). */
  readonly datadir: string;
  /** SIGTERM (clean shutdown), wait for the exit, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, wait for the exit, remove the temp dir. Idempotent. */
  kill9(): Promise<void>;
  /**
   * Stop the server (SIGKILL with `hard`, else SIGTERM), then start it again on the same port
   * with the same data (InnoDB recovers what was committed). `downMs`: stay down that long first.
   */
  restart(opts?: { hard?: boolean; downMs?: number }): Promise<void>;
  /** Stop the server but keep its data, for a later {@link start}. */
  halt(opts?: { hard?: boolean }): Promise<void>;
  /** Start a server halted by {@link halt} again, same port and data. */
  start(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Run SQL as root on a throwaway connection (multiple statements allowed). */
  sql(statement: string, params?: unknown[]): Promise<unknown>;
}

export interface StartMysqlOptions {
  /** Extra mariadbd arguments. */
  args?: readonly string[];
  /** How long to wait until the server answers, in ms. Default 30,000. */
  readyTimeoutMs?: number;
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

async function answers(port: number): Promise<boolean> {
  let c: mysql.Connection | undefined;
  try {
    c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', connectTimeout: 1000 });
    c.on('error', () => undefined);
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    c?.destroy();
  }
}

/**
 * Start a private MariaDB on a random free loopback port in a fresh temp dir, wait until it
 * answers, and create the database `dlock`. Retries with a new port if the port was taken.
 */
export async function startMysql(opts: StartMysqlOptions = {}): Promise<MysqlServer> {
  const bin = await ensureBinary('mariadbd', 'mariadb-server', ['/usr/sbin/mariadbd']);
  const install = await ensureBinary('mariadb-install-db', 'mariadb-server', ['/usr/bin/mariadb-install-db']);
  const dir = tempDir('dlock-mysql-');
  const proc = new ServerProcess();
  const datadir = join(dir, 'data');
  const logfile = join(dir, 'error.log');
  // Temp files in our own dir: bootstraps running at once must not share /tmp's #sql files.
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  for (let attempt = 1; ; attempt++) {
    try {
      await run(
        install,
        [
          '--no-defaults',
          `--datadir=${datadir}`,
          `--tmpdir=${tmp}`,
          '--auth-root-authentication-method=normal',
          '--skip-test-db',
          '--skip-name-resolve',
          ...(isRoot ? ['--user=root'] : []),
        ],
        { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      );
      break;
    } catch (e) {
      rmSync(datadir, { recursive: true, force: true });
      if (attempt < 3) continue;
      removeDir(dir);
      throw new Error(`mariadb-install-db failed: ${String(e)}`, { cause: e });
    }
  }

  let port = 0;
  const launch = async (): Promise<'ok' | 'port-taken'> => {
    const args = [
      '--no-defaults',
      ...(isRoot ? ['--user=root'] : []),
      `--datadir=${datadir}`,
      `--tmpdir=${tmp}`,
      `--socket=${join(dir, 'sock')}`,
      `--pid-file=${join(dir, 'mariadbd.pid')}`,
      `--log-error=${logfile}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      '--skip-name-resolve',
      // Speed over durability of the last second (tests only): no fsync per commit.
      '--innodb-flush-log-at-trx-commit=2',
      '--innodb-doublewrite=0',
      '--innodb-buffer-pool-size=32M',
      '--max-connections=1000',
      '--performance-schema=OFF',
      ...(opts.args ?? []),
    ];
    const child = proc.adopt(spawn(bin, args, { stdio: 'ignore' }));
    let spawnError: Error | undefined;
    child.once('error', (e) => (spawnError = e));
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    for (;;) {
      if (spawnError) throw new Error(`Could not start ${bin}: ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        const log = readLog(logfile);
        if (/Address already in use|Can't start server: Bind/i.test(log)) return 'port-taken';
        throw new Error(`mariadbd exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${log}`);
      }
      if (await answers(port)) return 'ok';
      if (Date.now() > deadline) {
        await proc.stop('SIGKILL');
        throw new Error(`mariadbd on port ${port} did not answer in time:\n${readLog(logfile)}`);
      }
      await delay(50);
    }
  };

  const halt = (signal: NodeJS.Signals): Promise<void> => proc.stop(signal, 20_000);
  const dispose = async (signal: NodeJS.Signals): Promise<void> => {
    await halt(signal);
    removeDir(dir);
  };

  try {
    let started = false;
    for (let attempt = 0; attempt < 8 && !started; attempt++) {
      port = await freePort();
      started = (await launch()) === 'ok';
    }
    if (!started) throw new Error('Could not find a free port for mariadbd after 8 attempts.');
  } catch (e) {
    await dispose('SIGKILL');
    throw e;
  }

  const sql = async (statement: string, params?: unknown[]): Promise<unknown> => {
    const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', multipleStatements: true });
    c.on('error', () => undefined);
    try {
      const [rows] = await c.query(statement, params);
      return rows;
    } finally {
      c.destroy();
    }
  };
  await sql('CREATE DATABASE IF NOT EXISTS dlock');

  const restartOnSamePort = async (): Promise<void> => {
    for (let attempt = 0; attempt < 40; attempt++) {
      if ((await launch()) === 'ok') return;
      await delay(250); // the old socket may linger briefly; the port is ours to take back
    }
    throw new Error(`Could not restart mariadbd on port ${port}: the port stays taken.`);
  };

  return {
    port,
    url: `mysql://root@127.0.0.1:${port}/dlock`,
    get pid() {
      return proc.pid ?? -1;
    },
    datadir,
    stop: () => dispose('SIGTERM'),
    kill9: () => dispose('SIGKILL'),
    halt: (o) => halt(o?.hard ? 'SIGKILL' : 'SIGTERM'),
    start: restartOnSamePort,
    restart: async (o) => {
      await halt(o?.hard ? 'SIGKILL' : 'SIGTERM');
      if (o?.downMs) await delay(o.downMs);
      await restartOnSamePort();
    },
    pause: () => proc.pause(),
    resume: () => proc.resume(),
    sql,
  };
}

/**
 * Counts the statements `server` ran (its `Questions` status: one per statement, also inside a
 * multi-statement batch), less the readings themselves (each is one statement): a counter that
 * tells what a code path sends, on a server that nothing else uses.
 */
export function statementCounter(server: MysqlServer): () => Promise<number> {
  let readings = 0;
  return async () => {
    const rows = (await server.sql("SHOW GLOBAL STATUS LIKE 'Questions'")) as Array<{ Value: string }>;
    readings += 1;
    return Number(rows[0]?.Value) - readings;
  };
}
