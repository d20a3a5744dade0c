/**
 * Fencing on PostgreSQL: a holder paused (SIGSTOP) past its TTL must not overwrite the newer
 * holder's data. Table mode: the lease row expires, others go on, the paused holder's fenced write
 * is refused; the control run with a plain UPDATE loses increments (the checker can see it).
 * Session mode: the paused holder keeps its session, so the server keeps its lock and everyone
 * waits (exclusion holds); an administrator then terminates the paused holder's session
 * (pg_terminate_backend): the lock moves on, and the paused holder's late write is refused.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../support/postgres.js';

const WORKER = fileURLToPath(new URL('./postgres-fencing-worker.ts', import.meta.url));
const TTL_MS = 600;
const children: ChildProcess[] = [];
let server: PostgresServer;

beforeAll(async () => {
  server = await startPostgres();
  await server.sql('CREATE TABLE fence_res (id text PRIMARY KEY, count int NOT NULL, fence bigint NOT NULL DEFAULT 0)');
});
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

async function run(
  lockMode: 'table' | 'session',
  mode: 'fenced' | 'plain',
): Promise<{ final: number; done: Done[]; pausedMs: number; othersDuringPause: number }> {
  const id = randomUUID();
  const key = `fence-test:${id}`;
  await server.sql('INSERT INTO fence_res (id, count) VALUES ($1, 0)', [id]);
  const workers = 4;
  const increments = 12;
  const procs = Array.from({ length: workers }, (_, i) => {
    const c = fork(WORKER, [`${server.url}?mode=${lockMode}`, key, id, mode, String(increments), String(TTL_MS), i === 0 ? '1' : '0'], {
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
  let othersDuringPause = -1;
  const count = async (): Promise<number> => (await server.sql<{ count: number }>('SELECT count FROM fence_res WHERE id = $1', [id]))[0]!.count;
  victim.on('message', (m: { type: string; backendPid?: number }) => {
    if (m.type !== 'holding') return;
    // Freeze the holder for 1.5 x TTL: its renewals cannot run.
    process.kill(victim.pid!, 'SIGSTOP');
    const t0 = performance.now();
    const before = count();
    setTimeout(() => {
      void (async () => {
        if (lockMode === 'session') {
          // The server kept the paused holder's lock: nobody else wrote meanwhile.
          othersDuringPause = (await count()) - (await before);
          await server.sql('SELECT pg_terminate_backend($1)', [m.backendPid]);
          // Let the others take the lock and write before the paused holder resumes.
          await new Promise((r) => setTimeout(r, 300));
        }
        process.kill(victim.pid!, 'SIGCONT');
        pausedMs = performance.now() - t0;
        setTimeout(() => victim.send({ type: 'write' }), 50);
      })();
    }, TTL_MS * 1.5);
  });
  await Promise.all(procs.map((c) => new Promise<void>((resolve) => c.on('message', (m: { type: string }) => m.type === 'ready' && resolve()))));
  for (const c of procs) c.send({ type: 'go' });
  const results = await Promise.all(done);
  return { final: await count(), done: results, pausedMs, othersDuringPause };
}

describe('paused holder and fencing (postgres, lease-table mode)', () => {
  it('with fencedUpdate: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, pausedMs } = await run('table', 'fenced');
    expect(pausedMs).toBeGreaterThanOrEqual(TTL_MS);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    const rejected = done.reduce((s, d) => s + d.rejected, 0);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    expect(done[0]!.paused).toMatchObject({ abortedBeforeWrite: true, reason: 'expired' });
  }, 90_000);

  it('control run with a plain UPDATE: the same pause loses updates', async () => {
    const { final, done } = await run('table', 'plain');
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 90_000);
});

describe('paused holder and fencing (postgres, session mode)', () => {
  it('the server keeps a paused holder’s lock; once an admin terminates its session, its late fenced write is rejected', async () => {
    const { final, done, othersDuringPause } = await run('session', 'fenced');
    expect(othersDuringPause).toBe(0);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    const rejected = done.reduce((s, d) => s + d.rejected, 0);
    expect(rejected).toBe(1);
    expect(final).toBe(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  }, 90_000);

  it('control run with a plain UPDATE: the terminated holder’s late write loses updates', async () => {
    const { final, done, othersDuringPause } = await run('session', 'plain');
    expect(othersDuringPause).toBe(0);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
  }, 90_000);
});
