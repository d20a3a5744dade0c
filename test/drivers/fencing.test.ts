/**
 * Fencing in practice: a holder paused (SIGSTOP) past its TTL must not be able to overwrite the
 * newer holder's data. With FencedRedisHash no increment is lost and the stale write is rejected;
 * the control run with a plain HSET shows the lost update, proving the check can see it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';

const WORKER = fileURLToPath(new URL('./fencing-worker.ts', import.meta.url));
const TTL_MS = 600;
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
});

interface Done {
  accepted: number;
  rejected: number;
  paused?: { abortedBeforeWrite: boolean; reason?: string; token: string };
}

async function run(mode: 'fenced' | 'plain'): Promise<{ final: number; done: Done[]; pausedMs: number }> {
  const url = inject('redisUrl');
  const id = randomUUID();
  const key = `fence-test:${id}`;
  const resource = `fence-res:${id}`;
  const workers = 4;
  const increments = 12;
  const procs = Array.from({ length: workers }, (_, i) => {
    const c = fork(WORKER, [url, key, resource, mode, String(increments), String(TTL_MS), i === 0 ? '1' : '0'], {
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
    // Freeze the holder for 1.5 x TTL: its renewals cannot run, its key expires, others go on.
    process.kill(victim.pid!, 'SIGSTOP');
    const t0 = performance.now();
    setTimeout(() => {
      process.kill(victim.pid!, 'SIGCONT');
      pausedMs = performance.now() - t0;
      setTimeout(() => victim.send({ type: 'write' }), 50);
    }, TTL_MS * 1.5);
  });
  // Start them together once every worker is connected.
  await Promise.all(procs.map((c) => new Promise<void>((resolve) => c.on('message', (m: { type: string }) => m.type === 'ready' && resolve()))));
  for (const c of procs) c.send({ type: 'go' });
  const results = await Promise.all(done);
  const redis = new Redis(url);
  const final = Number(await redis.hget(resource, 'count'));
  redis.disconnect();
  return { final, done: results, pausedMs };
}

describe('paused holder and fencing (redis)', () => {
  it('with FencedRedisHash: the stale write is rejected, no increment is lost, the paused holder was told', async () => {
    const { final, done, pausedMs } = await run('fenced');
    expect(pausedMs).toBeGreaterThanOrEqual(TTL_MS);
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    const rejected = done.reduce((s, d) => s + d.rejected, 0);
    expect(rejected).toBeGreaterThanOrEqual(1);
    expect(final).toBe(accepted);
    const paused = done[0]!.paused!;
    expect(paused.abortedBeforeWrite).toBe(true);
    expect(paused.reason).toBe('expired');
  });

  it('control run with a plain write: the same pause loses updates (the checker can see the failure)', async () => {
    const { final, done } = await run('plain');
    const accepted = done.reduce((s, d) => s + d.accepted, 0);
    expect(accepted).toBe(4 * 12);
    expect(final).toBeLessThan(accepted);
    expect(done[0]!.paused!.abortedBeforeWrite).toBe(true);
  });
});
