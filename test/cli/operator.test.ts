/**
 * The operator's commands against real engines, with the holder in another process (a lock
 * worker): `dlock ls` names the holder; `dlock release --force` evicts it (its lease signal
 * aborts at its next renewal) and a waiter in a third process gets the lock; `inspect` and `ls`
 * create nothing (a mistyped SQLite path is one clear error line, and the file stays absent).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type RedisServer } from '../support/redis.js';
import { forkWorker, killWorkers, repoRoot, startTogether } from '../support/workers.js';

const bin = join(repoRoot, 'bin', 'dlock.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function dlock(args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { cwd: repoRoot, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const r = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof r.code === 'number' ? r.code : -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }
}

const dir = mkdtempSync(join(tmpdir(), 'dlock-cli-operator-'));
let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
}, 30_000);
afterAll(async () => {
  await killWorkers();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const engines: Array<[string, () => string]> = [
  ['sqlite', () => `sqlite:${join(dir, 'locks.db')}`],
  ['redis', () => redis.url],
];

describe.each(engines)('dlock ls and release --force on %s', (_name, urlOf) => {
  it('ls names the holder of another process; release --force evicts it, its lease aborts, a waiter gets the lock', async () => {
    const url = urlOf();
    const key = `orders:${Math.random().toString(36).slice(2)}`;
    const holder = forkWorker({ mode: 'hold', url, key, ttlMs: 1500 });
    await startTogether([holder]);
    const held = await holder.next('held', 20_000);
    // The other process's hold, as ls sees it (text and JSON).
    const text = await dlock(['ls', 'orders:', '--url', url]);
    expect(text.code).toBe(0);
    const row = text.stdout.split('\n').find((l) => l.startsWith(key));
    expect(row).toContain(held.owner);
    expect(row).toContain(String(held.pid));
    expect(row).toContain(held.token);
    expect(text.stdout).toMatch(/^KEY +MODE +OWNER +HOST +PID +PERMITS +TOKEN +TTL +WAITERS$/m);
    const json = await dlock(['ls', 'orders:', '--url', url, '--json']);
    expect(json.code).toBe(0);
    const listed = JSON.parse(json.stdout) as { prefix: string; truncated: boolean; locks: Array<{ key: string; mode: string; holders: Array<{ owner: string; pid: number; token: string }> }> };
    const mine = listed.locks.find((l) => l.key === key);
    expect(mine?.mode).toBe('exclusive');
    expect(mine?.holders.map((h) => [h.owner, h.pid, h.token])).toEqual([[held.owner, held.pid, held.token]]);
    expect(listed.truncated).toBe(false);

    // Without --force: a usage error that says why; the holder keeps the lock.
    const refused = await dlock(['release', key, '--url', url]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--force');
    expect(refused.stderr).toContain('evict');

    // A waiter in a third process queues behind the holder.
    const waiter = forkWorker({ mode: 'hold', url, key, ttlMs: 10_000 });
    await startTogether([waiter]);
    await new Promise((r) => setTimeout(r, 300));
    const forced = await dlock(['release', '--force', key, '--url', url, '--json']);
    expect(forced.code).toBe(0);
    const result = JSON.parse(forced.stdout) as { key: string; released: number; fence: string };
    expect(result).toMatchObject({ key, released: 1 });
    expect(BigInt(result.fence)).toBeGreaterThanOrEqual(BigInt(held.token));
    const lost = await holder.next('lost', 5000);
    expect(lost.code).toBe('DLOCK_LOCK_LOST');
    const next = await waiter.next('held', 10_000);
    expect(BigInt(next.token)).toBeGreaterThan(BigInt(held.token));
    // ls now names the waiter.
    const after = await dlock(['ls', key, '--url', url, '--json']);
    const now = JSON.parse(after.stdout) as { locks: Array<{ key: string; owner: string }> };
    expect(now.locks.map((l) => [l.key, l.owner])).toEqual([[key, next.owner]]);
    // The text form of release on a free key.
    await killWorkers([holder, waiter]);
    const free = await dlock(['release', '--force', `${key}-none`, '--url', url]);
    expect(free).toMatchObject({ code: 0 });
    expect(free.stdout).toMatch(/was free: nothing released \(fence \d+\)/);
  }, 60_000);
});

describe('dlock ls of readers and semaphore permit holders (SQLite)', () => {
  it('one row per holder with its mode, permits and the queue; --json the same', async () => {
    const url = `sqlite:${join(dir, 'locks.db')}`;
    const { connect } = await import('../../src/connect.js');
    const { ReadWriteLock } = await import('../../src/primitives/read-write-lock.js');
    const { Semaphore } = await import('../../src/primitives/semaphore.js');
    const [a, b] = [await connect(url), await connect(url)];
    try {
      const tag = `modes-${Math.random().toString(36).slice(2)}:`;
      const reads = [await new ReadWriteLock(a, `${tag}doc`).read.acquire({ ttlMs: 10_000 }), await new ReadWriteLock(b, `${tag}doc`).read.acquire({ ttlMs: 10_000 })];
      const writer = new ReadWriteLock(b, `${tag}doc`).write.acquire({ ttlMs: 10_000, waitMs: 20_000 });
      writer.catch(() => undefined); // awaited at the end
      const permits = await new Semaphore(a, `${tag}pool`, { permits: 3 }).acquire({ permits: 2, ttlMs: 10_000 });
      await expect.poll(async () => (await a.inspectAll(`${tag}doc`)).waiters, { timeout: 10_000 }).toBe(1); // the writer queues
      const text = await dlock(['ls', tag, '--url', url]);
      expect(text.code).toBe(0);
      const rows = text.stdout.split('\n').filter((l) => l.startsWith(tag)).map((l) => l.split(/ {2,}/));
      // KEY MODE OWNER HOST PID PERMITS TOKEN TTL WAITERS
      expect(rows.map((r) => [r[0], r[1], r[4], r[5], r[8]])).toEqual([
        [`${tag}doc`, 'shared', String(process.pid), '1', '1'],
        [`${tag}doc`, 'shared', String(process.pid), '1', '1'],
        [`${tag}pool`, 'permits/3', String(process.pid), '2', '0'],
      ]);
      expect(text.stdout).toContain('2 lock(s) held');
      const json = JSON.parse((await dlock(['ls', tag, '--url', url, '--json'])).stdout) as { locks: Array<{ key: string; mode: string; limit?: number; waiters: number; holders: Array<{ permits: number; token: string }> }> };
      expect(json.locks.map((l) => [l.key, l.mode, l.limit, l.waiters, l.holders.map((h) => h.permits)])).toEqual([
        [`${tag}doc`, 'shared', undefined, 1, [1, 1]],
        [`${tag}pool`, 'permits', 3, 0, [2]],
      ]);
      await Promise.all([...reads, permits].map((l) => l.release()));
      await (await writer).release();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 60_000);
});

describe('inspect of a semaphore', () => {
  // SQLite grants permits on one key: inspect reads the limit from the engine. Redlock has no
  // permits mode, so a semaphore there is one lock per permit (`<name>:permit:<i>`): inspect
  // gathers them under the semaphore's name and says the limit is not stored.
  it.each([
    ['SQLite (permits mode: one key, the limit stored)', 'sqlite', 'permits', '2 of 3 permits held by 2; 0 waiting'],
    ['Redlock (one lock per permit)', 'redlock', undefined, '2 of ? permits held by 2 (one lock per permit on this driver'],
  ])('%s: shows its held permits under the semaphore\'s name, not "free"', async (_label, engine, mode, line) => {
    const url = engine === 'sqlite' ? `sqlite:${join(dir, 'locks.db')}` : `redlock://127.0.0.1:${redis.port}`;
    const { connect } = await import('../../src/connect.js');
    const { Semaphore } = await import('../../src/primitives/semaphore.js');
    const client = await connect(url);
    try {
      const name = `pool:${Math.random().toString(36).slice(2)}`;
      const sem = new Semaphore(client, name, { permits: 3 });
      expect(sem.construction).toBe(mode === 'permits' ? 'admission' : 'per-permit');
      const a = await sem.acquire({ ttlMs: 10_000 });
      const b = await sem.acquire({ ttlMs: 10_000 });
      const json = await dlock(['inspect', name, '--url', url, '--json']);
      expect(json.code).toBe(0);
      const state = JSON.parse(json.stdout) as { free: boolean; mode: string; limit?: number; holders: Array<{ token: string; permits: number }> };
      expect(state.free).toBe(false);
      expect(state.mode).toBe('permits');
      expect(state.limit).toBe(mode === 'permits' ? 3 : undefined);
      expect(state.holders.map((h) => h.token).sort()).toEqual([a.token, b.token].map(String).sort());
      expect(state.holders.every((h) => h.permits === 1)).toBe(true);
      const text = await dlock(['inspect', name, '--url', url]);
      expect(text.stdout).toContain(`lock "${name}" is a semaphore: ${line}`);
      await a.release();
      await b.release();
      expect((await dlock(['inspect', name, '--url', url])).stdout).toBe(`lock "${name}" is free\n`);
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe('inspect, ls and release create nothing', () => {
  it.each([['inspect', 'k'], ['ls'], ['release', '--force', 'k']])('dlock %s on a mistyped SQLite path: one clear line, exit 1, no file', async (...args) => {
    const typo = join(dir, 'typo', 'lcoks.db');
    const r = await dlock([...args, '--url', `sqlite:${typo}`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`dlock: error: no such database file "${typo}": check the path (nothing was created)\n`);
    expect(existsSync(typo)).toBe(false);
    expect(existsSync(join(dir, 'typo'))).toBe(false);
  });

  it('an existing file without dlock tables reads as no locks, and stays without them', async () => {
    const path = join(dir, 'empty.db');
    const { default: Database } = await import('better-sqlite3');
    new Database(path).close();
    const r = await dlock(['ls', '--url', `sqlite:${path}`]);
    expect(r).toMatchObject({ code: 0, stdout: 'no locks held\n' });
    const db = new Database(path, { readonly: true });
    expect(db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get()).toEqual({ n: 0 });
    db.close();
  });
});
