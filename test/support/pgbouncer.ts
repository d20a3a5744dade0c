/**
 * A private PgBouncer (Debian package `pgbouncer`, installed on demand) in front of a PostgreSQL
 * server of test/support/postgres.ts, for tests (no vitest imports here).
 *
 * Each one gets its own temp dir (config, user list, log), listens on a random free loopback port
 * (no Unix socket) and serves the database `postgres` of that server. Authentication matches the
 * PostgreSQL harness: `trust`, user `postgres` without password (PgBouncer's trust still wants the
 * user in its auth file). PgBouncer refuses to run as root, so as root it runs as the `postgres`
 * user, like the server (spawn uid/gid, not `-u`: the child's pid is PgBouncer's own, and we stop
 * it by that pid). The pool is small (`default_pool_size`, default 2) so that client connections
 * really share server connections in transaction mode.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { runAs, type PostgresServer } from './postgres.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';

/** A pgbouncer this process started. */
export interface PgBouncer {
  readonly port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres`: through the pooler to the server. */
  readonly url: string;
  readonly pid: number;
  /** SIGINT (immediate shutdown), wait for the exit, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartPgBouncerOptions {
  /** PgBouncer's `pool_mode`. */
  poolMode: 'session' | 'transaction' | 'statement';
  /** Server connections per user/database pair. Default 2. */
  poolSize?: number;
  /** Extra `[pgbouncer]` settings (e.g. `server_round_robin: 1`). */
  settings?: Readonly<Record<string, string | number>>;
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

async function answers(port: number): Promise<boolean> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Start a pgbouncer in front of `server` on a random free loopback port; retried when another process takes the port first. */
export async function startPgBouncer(server: PostgresServer, opts: StartPgBouncerOptions): Promise<PgBouncer> {
  const bin = await ensureBinary('pgbouncer', 'pgbouncer', ['/usr/sbin/pgbouncer']);
  const owner = await runAs();
  for (let attempt = 0; attempt < 8; attempt++) {
    const dir = tempDir('dlock-pgbouncer-');
    const port = await freePort();
    const logfile = join(dir, 'pgbouncer.log');
    const settings: Record<string, string | number> = {
      listen_addr: '127.0.0.1',
      listen_port: port,
      unix_socket_dir: '',
      auth_type: 'trust',
      auth_file: join(dir, 'userlist.txt'),
      pool_mode: opts.poolMode,
      default_pool_size: opts.poolSize ?? 2,
      max_client_conn: 100,
      logfile,
      // node-postgres and psql send these; PgBouncer refuses unknown startup parameters.
      ignore_startup_parameters: 'extra_float_digits,options',
      ...opts.settings,
    };
    const ini = [
      '[databases]',
      `postgres = host=127.0.0.1 port=${server.port} dbname=postgres`,
      '[pgbouncer]',
      ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
      '',
    ].join('\n');
    const config = join(dir, 'pgbouncer.ini');
    writeFileSync(config, ini);
    writeFileSync(join(dir, 'userlist.txt'), '"postgres" ""\n');
    writeFileSync(logfile, '');
    if (owner) for (const f of [dir, config, join(dir, 'userlist.txt'), logfile]) chownSync(f, owner.uid, owner.gid);
    const proc = new ServerProcess();
    const fd = openSync(join(dir, 'stderr.log'), 'a');
    const child: ChildProcess = proc.adopt(spawn(bin, [config], { cwd: dir, stdio: ['ignore', fd, fd], ...(owner ?? {}) }));
    closeSync(fd);
    let spawnError: Error | undefined;
    child.once('error', (e) => (spawnError = e));
    const deadline = Date.now() + 15_000;
    let ready = false;
    let taken = false;
    while (!ready) {
      if (spawnError) throw new Error(`Could not start ${bin}: ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        const log = `${readLog(logfile)}\n${readLog(join(dir, 'stderr.log'))}`;
        removeDir(dir);
        if (/address already in use/i.test(log)) {
          taken = true;
          break;
        }
        throw new Error(`pgbouncer exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${log}`);
      }
      ready = await answers(port);
      if (ready) break;
      if (Date.now() > deadline) {
        await proc.stop('SIGKILL');
        const log = readLog(logfile);
        removeDir(dir);
        throw new Error(`pgbouncer on port ${port} did not serve queries in time:\n${log}`);
      }
      await delay(50);
    }
    if (taken) continue;
    return {
      port,
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      pid: child.pid ?? -1,
      stop: async () => {
        // SIGINT: immediate shutdown (SIGTERM waits for clients to leave).
        await proc.stop('SIGINT');
        removeDir(dir);
      },
    };
  }
  throw new Error('Could not find a free port for pgbouncer after 8 attempts.');
}
