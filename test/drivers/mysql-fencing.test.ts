/**
 * Fencing on MySQL/MariaDB: a holder paused (SIGSTOP) past its TTL must not overwrite the newer
 * holder's data. With FencedMysqlTable (`UPDATE ... WHERE fence <= token`) no increment is lost
 * and the stale write is rejected; the control run with a plain UPDATE shows the lost update.
 * Session mode frees the paused holder's GET_LOCK when the server drops its silent connection
 * (wait_timeout = the TTL rounded up to whole seconds), so it pauses longer.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startMysql, type MysqlServer } from '../support/mysql.js';

const WORKER = fileURLToPath(new URL('./mysql-fencing-worker.ts', import.meta.url));
const children: ChildProcess[] = [];
let server: MysqlServer;

beforeAll(async () => {
  server = await startMysql();
  await server.sql('CREATE TABLE dlock.fence_res (id VARCHAR(64) PRIMARY KEY, count INT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)');
}, 120_000);
afterAll(async () => {
  await server?.stop();
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
});

interface Done {
  accepted: number;
  rejected: number;
  paused?: { abortedBeforeWrite: boolean; reason?: string; token: string };
}

async function run(mode: 'fenced' | 'plain', lockMode: 'session' | 'table', ttlMs: number, pauseMs: number): Promise<{ final: number; done: Done[]; pausedMs: number }> {
  const id = randomUUID();
  const key = `fence-test:${id}`;
  await server.sql('INSERT INTO dlock.fence_res (id, count) VALUES (?, 0)', [id]);
  const url = `${server.url}?mode=${lockMode}`;
  const workers = 4;
  const increments = 12;
  const procs = Array.from({ length: workers }, (_, i) => {
    const c = fork(WORKER, [url, id, mode, String(increments), String(ttlMs), i === 0 ? '1' : '0', key], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(c);
    return c;
  });
  const done = procs.map(
    (c) =>
      new Promise<Done>((resolve, reject) => {
        c.on('message', (m: { type: string } & Done) => {
          if (m.type === 'done') resolve(m);
        });
        c.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))));
      }),
  );
  const victim = procs[0]!;
  let pausedMs = 0;
  victim.on('message', (m: { type: string }) => {
    if (m.type !== 'holding') return;
    process.kill(victim.pid!, 'SIGSTOP');
    const t0 = performance.now();
    setTimeout(() => {
      process.kill(victim.pid!, 'SIGCONT');
      pausedMs = performance.now() - t0;
      setTimeout(() => victim.send({ type: 'write' }), 50);
    }, pauseMs);
  });
  await Promise.all(procs.map((c) => new Promise<void>((resolve) => c.on('message', (m: { type: string }) => m.type === 'ready' && resolve()))));
  for (const c of procs) c.send({ type: 'go' });
  const results = await Promise.all(done);
  const rows = (await server.sql('SELECT count FROM dlock.fence_res WHERE id = ?', [id])) as Array<{ count: number }>;
  return { final: Number(rows[0]?.count), done: results, pausedMs };
}

describe.each([
  // Table mode: the row's TTL runs out on the server's clock during a 1.5 x TTL pause.
  { lockMode: 'table' as const, ttlMs: 600, pauseMs: 900 },
  // Session mode: the server drops the silent connection after wait_timeout (1 s here).
  { lockMode: 'session' as const, ttlMs: 1000, pauseMs: 2500 },
])('paused holder and fencing (mysql $lockMode mode)', ({ lockMode, ttlMs, pauseMs }) => {
  it('with FencedMysqlTable: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, pausedMs } = await run('fenced', lockMode, ttlMs, pauseMs);
    expect(pausedMs).toBeGreaterThanOrEqual(ttlMs);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    const rejected = done.reduce((s, d) => s + d.rejected, 0);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    const paused = done[0]!.paused!;
    expect(paused.abortedBeforeWrite).toBe(true);
    expect(paused.reason).toBe('expired');
  }, 60_000);

  it('control run with a plain UPDATE: the same pause loses updates (the checker can see the failure)', async () => {
    const { final, done } = await run('plain', lockMode, ttlMs, pauseMs);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 60_000);
});
