/**
 * A private PostgreSQL 15 server for tests and benchmarks (no vitest imports here).
 *
 * `initdb` runs once per process into a template directory; every server then gets a copy of it
 * in its own temp dir, listens on a random free loopback port (plus a Unix socket in the temp
 * dir), with trust authentication and no fsync (tests, not durability). PostgreSQL refuses to
 * run as root, so when we are root the data dir is handed to the `postgres` system user that the
 * Debian package creates, and the server runs as that user (spawn uid/gid: the child's pid is the
 * postmaster's own, so we stop it by pid). An exit hook kills whatever is left.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, safeKill, ServerProcess, tempDir } from './processes.js';

const run = promisify(execFile);
const PG_BIN = '/usr/lib/postgresql/15/bin';

/** A postgres server this process started. */
export interface PostgresServer {
  readonly port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth, no password). */
  readonly url: string;
  /** The postmaster's pid (changes on {@link restart}). */
  readonly pid: number;
  /** The data directory (kept across {@link restart}). */
  readonly dataDir: string;
  /** Run one statement on a fresh connection (as an administrator would). */
  sql<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]>;
  /** Fast shutdown (SIGINT: sessions are terminated), wait for the exit, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL the postmaster and its backends, remove the temp dir. Idempotent. */
  kill9(): Promise<void>;
  /**
   * Fast shutdown (with `hard`: SIGKILL of the postmaster and its backends, a crash: the next
   * start runs crash recovery), then start again on the same port with the same data.
   */
  restart(options?: { downMs?: number; hard?: boolean }): Promise<void>;
  /** Stop the server in place without a restart: only the postmaster (see {@link startPostgres}). */
  shutdown(): Promise<void>;
  /** Start again after {@link shutdown}, same port and data. */
  start(): Promise<void>;
  /** SIGSTOP the postmaster and every backend: sockets stay open, nothing answers. */
  pause(): void;
  /** SIGCONT them all. */
  resume(): void;
}

export interface StartPostgresOptions {
  /** Extra `-c name=value` settings. */
  settings?: Readonly<Record<string, string | number>>;
  /** How long to wait for the server to accept queries, in ms. Default 30,000. */
  readyTimeoutMs?: number;
}

/** The postmaster's slot; `paused`: every pid SIGSTOPped by `pause()` (postmaster and backends). */
interface Tracked {
  proc: ServerProcess;
  paused: number[];
}

/** Pids of the direct children of `pid` (the postmaster's backends and helpers), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process went away meanwhile
    }
  }
  return out;
}

function killTree(pid: number): void {
  const kids = childrenOf(pid);
  safeKill(pid, 'SIGCONT');
  safeKill(pid, 'SIGKILL');
  for (const k of kids) {
    safeKill(k, 'SIGCONT');
    safeKill(k, 'SIGKILL');
  }
}

/** The uid/gid to run postgres (and pgbouncer, see pgbouncer.ts) as: ourselves, unless we are root (then the `postgres` user). */
export async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const { stdout: uid } = await run('id', ['-u', 'postgres']);
  const { stdout: gid } = await run('id', ['-g', 'postgres']);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

function chownTree(path: string, owner: { uid: number; gid: number }): void {
  chownSync(path, owner.uid, owner.gid);
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, entry.name);
    if (entry.isDirectory()) chownTree(p, owner);
    else chownSync(p, owner.uid, owner.gid);
  }
}

let templateReady: Promise<string> | undefined;

/** `initdb` once per process; servers copy the result (a copy takes ms, initdb ~1 s). */
function initTemplate(bin: string, owner: { uid: number; gid: number } | undefined): Promise<string> {
  templateReady ??= (async () => {
    // Kept for the whole process (every server copies it); the exit hook removes it.
    const root = tempDir('dlock-pg-template-');
    const data = join(root, 'data');
    mkdirSync(data, { mode: 0o700 });
    if (owner) chownTree(root, owner);
    const initdb = join(dirname(bin), 'initdb');
    await new Promise<void>((resolve, reject) => {
      const child = spawn(initdb, ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(owner ?? {}),
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`initdb failed (code ${code}):\n${out}`))));
    });
    return data;
  })();
  return templateReady;
}

async function queryOnce(port: number, text: string, values?: unknown[]): Promise<pg.QueryResultRow[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query(text, values)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

interface Launch {
  bin: string;
  owner: { uid: number; gid: number } | undefined;
  dir: string;
  data: string;
  port: number;
  settings: Readonly<Record<string, string | number>>;
  readyTimeoutMs: number;
}

/** Start the postmaster; 'port-taken' when the bind failed. */
async function launch(l: Launch, tracked: Tracked): Promise<ChildProcess | 'port-taken'> {
  const logfile = join(l.dir, 'postgres.log');
  const settings: Record<string, string | number> = {
    listen_addresses: '127.0.0.1',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: 300,
    shared_buffers: '32MB',
    logging_collector: 'off',
    ...l.settings,
  };
  const args = ['-D', l.data, '-k', l.dir, '-p', String(l.port)];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const fd = openSync(logfile, 'a');
  if (l.owner) chownSync(logfile, l.owner.uid, l.owner.gid);
  const child = tracked.proc.adopt(spawn(l.bin, args, { stdio: ['ignore', fd, fd], ...(l.owner ?? {}) }));
  closeSync(fd);
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));
  const deadline = Date.now() + l.readyTimeoutMs;
  for (;;) {
    if (spawnError) throw new Error(`Could not start ${l.bin}: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = readLog(logfile);
      if (/could not bind|address already in use/i.test(log)) return 'port-taken';
      throw new Error(`postgres exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${log}`);
    }
    try {
      await queryOnce(l.port, 'SELECT 1');
      return child;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) {
      await tracked.proc.stop('SIGKILL');
      throw new Error(`postgres on port ${l.port} did not accept queries in time:\n${readLog(logfile)}`);
    }
    await delay(50);
  }
}

async function halt(tracked: Tracked, signal: 'SIGINT' | 'SIGKILL'): Promise<void> {
  const pid = tracked.proc.pid;
  if (!tracked.proc.running || pid === undefined) return;
  for (const p of tracked.paused) safeKill(p, 'SIGCONT');
  tracked.paused = [];
  // SIGINT is a fast shutdown (terminates sessions, then exits); SIGKILL kills the whole tree.
  await tracked.proc.stop(signal, 15_000);
  if (signal === 'SIGKILL') return;
  // Backends exit right after the postmaster; wait until none is left on the port's socket dir.
  for (let i = 0; i < 100 && childrenOf(pid).length > 0; i++) await delay(20);
}

/**
 * Start a private PostgreSQL 15 (Debian package `postgresql`, installed on demand) on a random
 * free loopback port in a fresh temp dir. If another process takes the port first, retry.
 */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PostgresServer> {
  const bin = await ensureBinary('postgres', 'postgresql', [join(PG_BIN, 'postgres')]);
  const owner = await runAs();
  const tpl = await initTemplate(bin, owner);
  for (let attempt = 0; attempt < 8; attempt++) {
    const dir = tempDir('dlock-pg-');
    const data = join(dir, 'data');
    cpSync(tpl, data, { recursive: true });
    // PostgreSQL refuses a data directory open to others; cpSync keeps the mode on Node 20 only.
    chmodSync(data, 0o700);
    if (owner) chownTree(dir, owner);
    const tracked: Tracked = { proc: new ServerProcess(killTree), paused: [] };
    const l: Launch = {
      bin,
      owner,
      dir,
      data,
      port: await freePort(),
      settings: opts.settings ?? {},
      readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
    };
    let started: ChildProcess | 'port-taken';
    try {
      started = await launch(l, tracked);
    } catch (e) {
      removeDir(dir);
      throw e;
    }
    if (started === 'port-taken') {
      removeDir(dir);
      continue;
    }
    let removed = false;
    const remove = (): void => {
      if (removed) return;
      removed = true;
      removeDir(dir);
    };
    const server: PostgresServer = {
      port: l.port,
      url: `postgres://postgres@127.0.0.1:${l.port}/postgres`,
      get pid() {
        return tracked.proc.pid ?? -1;
      },
      dataDir: data,
      sql: async <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => (await queryOnce(l.port, text, values)) as R[],
      stop: async () => {
        await halt(tracked, 'SIGINT');
        remove();
      },
      kill9: async () => {
        await halt(tracked, 'SIGKILL');
        remove();
      },
      shutdown: () => halt(tracked, 'SIGINT'),
      start: async () => {
        if (tracked.proc.running) return;
        if (removed || !existsSync(data)) throw new Error('this server was stopped for good; start a new one');
        // Same port: another process may have taken it meanwhile (then this throws).
        const again = await launch(l, tracked);
        if (again === 'port-taken') throw new Error(`port ${l.port} was taken while postgres was down`);
      },
      restart: async (o = {}) => {
        await halt(tracked, o.hard ? 'SIGKILL' : 'SIGINT');
        if (o.downMs) await delay(o.downMs);
        await server.start();
      },
      pause: () => {
        const pid = tracked.proc.pid;
        if (pid === undefined || !tracked.proc.running) return;
        const all = [pid, ...childrenOf(pid)];
        for (const p of all) safeKill(p, 'SIGSTOP');
        tracked.paused = all;
      },
      resume: () => {
        for (const p of tracked.paused) safeKill(p, 'SIGCONT');
        tracked.paused = [];
      },
    };
    return server;
  }
  throw new Error('Could not find a free port for postgres after 8 attempts.');
}
