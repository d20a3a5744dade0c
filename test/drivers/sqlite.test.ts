/**
 * SQLite driver: driver-specific behaviour on real database files in temp dirs (no mocks).
 * The cross-process conformance suite lives elsewhere; here a few checks spawn a real second
 * process to show that exclusion and wake-up go through the file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { SqliteDriver } from '../../src/drivers/sqlite/index.js';
import { hostBootId } from '../../src/drivers/sqlite/host-clock.js';
import {
  ClosedError,
  InvalidArgumentError,
  LockAbortedError,
  LockTimeoutError,
  OutOfRangeError,
  UnavailableError,
} from '../../src/errors.js';

const repoRoot = join(import.meta.dirname, '..', '..');

let dir: string;
let dbPath: string;
const toClose: Array<{ close(): Promise<void> }> = [];
const children: ChildProcess[] = [];

function driver(options: { busyTimeoutMs?: number; tablePrefix?: string } = {}): SqliteDriver {
  const d = new SqliteDriver({ path: dbPath, ...options });
  toClose.push(d);
  return d;
}

function client(d = driver(), options: ConstructorParameters<typeof LockClient>[1] = {}): LockClient {
  const c = new LockClient(d, options);
  toClose.push(c);
  return c;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dlock-sqlite-'));
  dbPath = join(dir, 'locks.db');
});

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of toClose.splice(0).reverse()) await c.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A second Node process running `body` (ES module text) with `driver` (a SqliteDriver on the test's
 * file) in scope. It prints lines; stdin lines are delivered to `commands` (an async iterator).
 */
function child(body: string): { proc: ChildProcess; line: (pattern: RegExp, timeoutMs?: number) => Promise<string>; send: (s: string) => void } {
  const code = `
    import { createInterface } from 'node:readline';
    import { SqliteDriver } from ${JSON.stringify(join(repoRoot, 'src/drivers/sqlite/index.ts'))};
    const driver = new SqliteDriver({ path: ${JSON.stringify(dbPath)} });
    const commands = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    ${body}
  `;
  const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out += s;
    for (const w of waiters.splice(0)) w();
  });
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  const line = (pattern: RegExp, timeoutMs = 15_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child never printed ${pattern}; stdout: ${out}; stderr: ${err}`)), timeoutMs);
      const check = (): void => {
        const m = out.split('\n').find((l) => pattern.test(l));
        if (m !== undefined) {
          clearTimeout(timer);
          resolve(m);
        } else if (proc.exitCode !== null) {
          clearTimeout(timer);
          reject(new Error(`child exited (${proc.exitCode}) before printing ${pattern}; stderr: ${err}`));
        } else {
          waiters.push(check);
        }
      };
      check();
    });
  const send = (s: string): void => {
    proc.stdin?.write(`${s}\n`);
  };
  return { proc, line, send };
}

describe('SqliteDriver', () => {
  it('declares what it is', () => {
    expect(driver().info).toEqual({ name: 'sqlite', liveness: 'lease', fair: false, scope: 'host', modes: ['exclusive', 'shared', 'permits'], fairness: 'choice' });
  });

  it('two instances on one file exclude each other', async () => {
    const a = client();
    const b = client();
    const lease = await a.acquire('k', { ttlMs: 5000 });
    expect(await b.tryAcquire('k')).toBeNull();
    const info = await b.inspect('k');
    expect(info?.owner).toBe(lease.owner);
    expect(info?.token).toBe(lease.token);
    expect(info?.remainingMs).toBeGreaterThan(4000);
    expect(info?.remainingMs).toBeLessThanOrEqual(5000);
    await expect(b.acquire('k', { waitMs: 150 })).rejects.toBeInstanceOf(LockTimeoutError);
    expect(await lease.release()).toBe(true);
    const other = await b.tryAcquire('k');
    expect(other).not.toBeNull();
    expect(other!.token).toBeGreaterThan(lease.token);
    expect(await a.tryAcquire('k')).toBeNull();
  });

  it('reports the holder’s remaining TTL when busy', async () => {
    const a = driver();
    const b = driver();
    expect((await a.tryAcquire({ key: 'k', owner: 'A', ttlMs: 3000 })).ok).toBe(true);
    const r = await b.tryAcquire({ key: 'k', owner: 'B', ttlMs: 3000 });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.retryAfterMs).toBeGreaterThan(2500);
      expect(r.retryAfterMs).toBeLessThanOrEqual(3000);
    }
  });

  it('frees a key when its TTL runs out, and the old holder can no longer extend or release it', async () => {
    const a = driver();
    const b = driver();
    const first = await a.tryAcquire({ key: 'k', owner: 'A', ttlMs: 60 });
    expect(first.ok).toBe(true);
    await new Promise((r) => setTimeout(r, 90));
    expect(await b.inspect('k')).toBeNull();
    expect(await a.extend([{ key: 'k', owner: 'A', ttlMs: 1000 }])).toEqual([false]);
    const second = await b.tryAcquire({ key: 'k', owner: 'B', ttlMs: 1000 });
    expect(second.ok).toBe(true);
    expect(await a.release('k', 'A')).toBe(false);
    expect((await b.inspect('k'))?.owner).toBe('B');
  });

  it('tokens strictly increase and survive closing and re-opening the file', async () => {
    const tokens: bigint[] = [];
    for (let round = 0; round < 3; round++) {
      const d = new SqliteDriver({ path: dbPath });
      for (let i = 0; i < 5; i++) {
        const r = await d.tryAcquire({ key: 'fenced', owner: `o${round}.${i}`, ttlMs: 1000 });
        if (!r.ok) throw new Error('expected a grant');
        tokens.push(r.grant.token);
        expect(await d.release('fenced', `o${round}.${i}`)).toBe(true);
      }
      await d.close();
    }
    expect(tokens.every((t) => typeof t === 'bigint')).toBe(true);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    expect(tokens[0]).toBe(1n);
    expect(tokens.at(-1)).toBe(15n);
    // Other keys have their own counter.
    const d = driver();
    const r = await d.tryAcquire({ key: 'other', owner: 'x', ttlMs: 1000 });
    expect(r.ok && r.grant.token).toBe(1n);
  });

  it('reads and writes tokens beyond 2^53 without loss', async () => {
    driver(); // creates the tables
    const raw = new Database(dbPath);
    raw.prepare('INSERT INTO dlock_fences (key, token) VALUES (?, ?)').run('big', 2n ** 62n);
    raw.close();
    const r = await driver().tryAcquire({ key: 'big', owner: 'x', ttlMs: 1000 });
    expect(r.ok && r.grant.token).toBe(2n ** 62n + 1n);
  });

  it('treats a row written in another boot as expired, and keeps its fence', async () => {
    driver(); // creates the tables
    const raw = new Database(dbPath);
    const farFuture = process.hrtime.bigint() / 1_000_000n + 3_600_000n;
    raw
      .prepare('INSERT INTO dlock_locks (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)')
      .run('k', 'ghost', 41n, farFuture, 'a-previous-boot');
    raw.prepare('INSERT INTO dlock_fences (key, token) VALUES (?, ?)').run('k', 41n);
    // The same row written in this boot is live: the boot id is the only difference.
    raw
      .prepare('INSERT INTO dlock_locks (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)')
      .run('same-boot', 'alive', 7n, farFuture, hostBootId());
    raw.close();

    const d = driver();
    expect(await d.inspect('k')).toBeNull();
    expect(await d.extend([{ key: 'k', owner: 'ghost', ttlMs: 1000 }])).toEqual([false]);
    expect(await d.release('k', 'ghost')).toBe(false);
    const r = await d.tryAcquire({ key: 'k', owner: 'new', ttlMs: 1000 });
    expect(r.ok && r.grant.token).toBe(42n);

    expect((await d.inspect('same-boot'))?.owner).toBe('alive');
    expect((await d.tryAcquire({ key: 'same-boot', owner: 'new', ttlMs: 1000 })).ok).toBe(false);
  });

  it('a file of an earlier version gets the new tables; its exclusive lock excludes readers and permits, and tokens go on', async () => {
    // The schema before admission modes, with a live exclusive lock written by that version.
    const raw = new Database(dbPath);
    raw.exec(`CREATE TABLE dlock_locks (key TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL, boot TEXT NOT NULL);
      CREATE TABLE dlock_fences (key TEXT PRIMARY KEY, token INTEGER NOT NULL);
      CREATE TABLE dlock_marks (key TEXT PRIMARY KEY, mark INTEGER NOT NULL);
      CREATE TABLE dlock_sequences (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);`);
    const soon = process.hrtime.bigint() / 1_000_000n + 400n;
    raw.prepare('INSERT INTO dlock_locks (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)').run('k', 'old-version', 7n, soon, hostBootId());
    raw.prepare('INSERT INTO dlock_fences (key, token) VALUES (?, ?)').run('k', 7n);
    raw.close();
    const d = driver();
    expect((await d.tryAcquire({ key: 'k', owner: 'r', ttlMs: 1000, admission: { mode: 'shared' } })).ok).toBe(false);
    expect((await d.tryAcquire({ key: 'k', owner: 'p', ttlMs: 1000, admission: { mode: 'permits', permits: 1, limit: 3 } })).ok).toBe(false);
    const c = client(d);
    const read = await c.acquire('k', { admission: { mode: 'shared' }, waitMs: 5000 });
    expect(read.token).toBe(8n);
    // What the earlier version reads: a live row, so its exclusive try finds the key busy.
    const check = new Database(dbPath);
    const row = check.prepare('SELECT owner, expires_at FROM dlock_locks WHERE key = ?').get('k') as { owner: string; expires_at: number };
    check.close();
    expect(row.owner).toBe('');
    expect(BigInt(row.expires_at)).toBeGreaterThan(process.hrtime.bigint() / 1_000_000n);
    await read.release();
    expect(await d.keyState('k')).toEqual({ holders: [], waiters: 0 });
  });

  it('never hands out a token at or below a live row’s, even if its fence row is missing', async () => {
    driver();
    const raw = new Database(dbPath);
    raw
      .prepare('INSERT INTO dlock_locks (key, owner, token, expires_at, boot) VALUES (?, ?, ?, ?, ?)')
      .run('k', 'old', 99n, 0n, hostBootId());
    raw.close();
    const r = await driver().tryAcquire({ key: 'k', owner: 'new', ttlMs: 1000 });
    expect(r.ok && r.grant.token).toBe(100n);
  });

  it('release and extend by a non-owner return false and leave the holder alone', async () => {
    const a = driver();
    const b = driver();
    expect((await a.tryAcquire({ key: 'k', owner: 'A', ttlMs: 2000 })).ok).toBe(true);
    expect(await b.release('k', 'B')).toBe(false);
    expect(await b.extend([{ key: 'k', owner: 'B', ttlMs: 60_000 }])).toEqual([false]);
    expect(await b.release('missing', 'A')).toBe(false);
    const state = await b.inspect('k');
    expect(state?.owner).toBe('A');
    expect(state!.remainingMs).toBeLessThanOrEqual(2000);
    // A batch: only the owned key is renewed.
    expect((await a.tryAcquire({ key: 'k2', owner: 'A', ttlMs: 2000 })).ok).toBe(true);
    expect(
      await a.extend([
        { key: 'k', owner: 'A', ttlMs: 9000 },
        { key: 'k2', owner: 'not-A', ttlMs: 9000 },
        { key: 'nope', owner: 'A', ttlMs: 9000 },
      ]),
    ).toEqual([true, false, false]);
    expect((await b.inspect('k'))!.remainingMs).toBeGreaterThan(8000);
    expect((await b.inspect('k2'))!.remainingMs).toBeLessThanOrEqual(2000);
    expect(await a.extend([])).toEqual([]);
    // Double release: same answer after the first.
    expect(await a.release('k', 'A')).toBe(true);
    expect(await a.release('k', 'A')).toBe(false);
  });

  it('a lease through LockClient is renewed on the file, and lost once its row is deleted behind its back', async () => {
    const c = client(driver(), { ttlMs: 600 });
    const lease = await c.acquire('renewed');
    await new Promise((r) => setTimeout(r, 1400)); // more than two TTLs: renewal kept it
    expect(lease.isHeld()).toBe(true);
    const other = driver();
    expect((await other.inspect('renewed'))?.owner).toBe(lease.owner);
    // Behind the holder's back (as an operator would), delete the row: renewal finds it gone.
    const raw = new Database(dbPath);
    raw.prepare('DELETE FROM dlock_locks WHERE key = ?').run('renewed');
    raw.close();
    await expect.poll(() => lease.signal.aborted, { timeout: 2000, interval: 20 }).toBe(true);
    expect(lease.isHeld()).toBe(false);
  });

  /** Count the engine attempts a driver makes (an instance property shadows the method). */
  function countTries(d: SqliteDriver): { readonly count: number } {
    const counter = { count: 0 };
    const original = d.tryAcquire.bind(d);
    d.tryAcquire = (req) => {
      counter.count += 1;
      return original(req);
    };
    return counter;
  }

  it('a waiter makes no engine calls while the lock does not change hands (no polling)', async () => {
    const a = client();
    const bDriver = driver();
    const tries = countTries(bDriver);
    const b = client(bDriver);
    await a.acquire('k', { ttlMs: 10_000 });
    await expect(b.acquire('k', { waitMs: 1000 })).rejects.toBeInstanceOf(LockTimeoutError);
    // The fast path and the decisive try once the watch is open (at most one more before it), then
    // silence until the core's last try at the deadline.
    expect(tries.count).toBeLessThanOrEqual(4);
  });

  it('a release in one instance wakes a waiter in another promptly (through the notify file)', async () => {
    const a = client();
    const bDriver = driver();
    const tries = countTries(bDriver);
    const b = client(bDriver);
    const held = await a.acquire('k', { ttlMs: 10_000, renew: false });
    const start = performance.now();
    const waiting = b.acquire('k', { ttlMs: 10_000, waitMs: 8000 });
    setTimeout(() => {
      void held.release();
    }, 100);
    const lease = await waiting;
    const took = performance.now() - start;
    expect(took).toBeGreaterThanOrEqual(90);
    expect(took).toBeLessThan(2000);
    expect(lease.token).toBe(held.token + 1n);
    // Woken by the file event: at most 3 tries before the wait and 1 after it (a backoff fallback
    // would need at least 3 backoffs of 10-20, 10-40 and 10-80 ms to cover the first 100 ms).
    expect(tries.count).toBeLessThanOrEqual(4);
    expect(bDriver.openWatches).toBe(0);
  });

  it('a release in another PROCESS wakes the waiter promptly, and a killed holder frees the key by its TTL', async () => {
    const holder = child(`
      const r = await driver.tryAcquire({ key: 'k', owner: 'child', ttlMs: 10000 });
      console.log('held ' + r.ok);
      await commands.next();
      console.log('released ' + (await driver.release('k', 'child')));
      await driver.close();
      process.exit(0);
    `);
    expect(await holder.line(/^held /)).toBe('held true');
    const c = client();
    const start = performance.now();
    const waiting = c.acquire('k', { ttlMs: 5000, waitMs: 8000 });
    await new Promise((r) => setTimeout(r, 100));
    holder.send('release');
    const lease = await waiting;
    expect(performance.now() - start).toBeLessThan(2000);
    expect(lease.token).toBe(2n);
    await lease.release();

    const crasher = child(`
      const r = await driver.tryAcquire({ key: 'crash', owner: 'doomed', ttlMs: 600 });
      console.log('held ' + r.ok);
      setInterval(() => {}, 1000);
    `);
    expect(await crasher.line(/^held /)).toBe('held true');
    const killedAt = performance.now();
    crasher.proc.kill('SIGKILL');
    const after = await c.acquire('crash', { waitMs: 5000 });
    expect(performance.now() - killedAt).toBeLessThan(2000);
    expect(after.token).toBe(2n);
  });

  it('waiters still get the lock when the notify file cannot be watched (backoff fallback)', async () => {
    mkdirSync(`${dbPath}-dlock-notify`); // a directory: cannot be opened for writing nor watched as a file
    const a = client();
    const b = client();
    const held = await a.acquire('k', { ttlMs: 10_000, renew: false });
    const start = performance.now();
    const waiting = b.acquire('k', { ttlMs: 10_000, waitMs: 8000 });
    setTimeout(() => {
      void held.release();
    }, 100);
    await waiting;
    expect(performance.now() - start).toBeLessThan(2500);
    // A wait that runs out is still a timeout, not an "unavailable" error.
    await expect(a.acquire('k', { waitMs: 200 })).rejects.toBeInstanceOf(LockTimeoutError);
  });

  it('an aborted or timed-out wait leaves no watch and no engine row behind', async () => {
    const a = client();
    const bDriver = driver();
    const b = client(bDriver);
    const held = await a.acquire('k', { ttlMs: 5000 });
    const ac = new AbortController();
    const waiting = b.acquire('k', { waitMs: 5000, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 50));
    expect(bDriver.openWatches).toBe(1);
    ac.abort(new Error('stop'));
    await expect(waiting).rejects.toBeInstanceOf(LockAbortedError);
    await expect(b.acquire('k', { waitMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError);
    expect(bDriver.openWatches).toBe(0);
    expect((await b.inspect('k'))?.owner).toBe(held.owner);
    expect(b.heldCount).toBe(0);
  });

  it('ChangeWatch latches a release seen between calls, times out with false, and rejects on abort', async () => {
    const a = driver();
    const b = driver();
    const w = await b.watch('k');
    const never = new AbortController().signal;
    expect(await w.next(30, never)).toBe(false);
    expect((await a.tryAcquire({ key: 'k', owner: 'A', ttlMs: 1000 })).ok).toBe(true);
    expect(await a.release('k', 'A')).toBe(true);
    await new Promise((r) => setTimeout(r, 100)); // the event arrives while nobody is in next()
    expect(await w.next(5000, never)).toBe(true);
    expect(await w.next(30, never)).toBe(false);
    const ac = new AbortController();
    const pending = w.next(5000, ac.signal);
    ac.abort(new Error('bye'));
    await expect(pending).rejects.toThrow('bye');
    w.close();
    w.close();
    expect(b.openWatches).toBe(0);
  });

  it('close() leaves no handles, and later calls reject with ClosedError', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
    const d = new SqliteDriver({ path: dbPath });
    const c = new LockClient(d);
    const other = driver();
    await other.tryAcquire({ key: 'busy', owner: 'X', ttlMs: 10_000 });
    await c.acquire('k');
    const waiting = c.acquire('busy', { waitMs: 10_000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    expect(process.getActiveResourcesInfo()).toContain('FSEventWrap');
    await c.close();
    const after = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
    // Nothing more of any kind than before (an earlier test's timer may have fired meanwhile).
    const count = (rs: string[]): Record<string, number> => rs.reduce<Record<string, number>>((m, r) => ({ ...m, [r]: (m[r] ?? 0) + 1 }), {});
    const [was, is] = [count(before), count(after)];
    for (const [kind, n] of Object.entries(is)) expect(n, `${kind}: ${n} after close, ${was[kind] ?? 0} before`).toBeLessThanOrEqual(was[kind] ?? 0);
    expect(d.openWatches).toBe(0);
    expect(await waiting).toBeInstanceOf(ClosedError);
    // The client released its lock on close.
    expect(await other.inspect('k')).toBeNull();
    const req = { key: 'k', owner: 'o', ttlMs: 1000 };
    await expect(d.tryAcquire(req)).rejects.toBeInstanceOf(ClosedError);
    await expect(d.watch('k')).rejects.toBeInstanceOf(ClosedError);
    await expect(d.extend([req])).rejects.toBeInstanceOf(ClosedError);
    await expect(d.release('k', 'o')).rejects.toBeInstanceOf(ClosedError);
    await expect(d.inspect('k')).rejects.toBeInstanceOf(ClosedError);
    await expect(d.watch('k')).rejects.toBeInstanceOf(ClosedError);
    await d.close(); // idempotent
  });

  it('busy file: an operation fails (rejects) after busyTimeoutMs instead of hanging, then works again', async () => {
    const d = driver({ busyTimeoutMs: 50 });
    expect((await d.tryAcquire({ key: 'held', owner: 'H', ttlMs: 10_000 })).ok).toBe(true);
    const raw = new Database(dbPath);
    raw.exec('BEGIN IMMEDIATE');
    const start = performance.now();
    await expect(d.tryAcquire({ key: 'k', owner: 'A', ttlMs: 1000 })).rejects.toMatchObject({ code: 'SQLITE_BUSY' });
    expect(performance.now() - start).toBeLessThan(1000);
    // Reads do not wait for the writer in WAL mode: nor does a try that finds its key held.
    expect(await d.inspect('k')).toBeNull();
    expect((await d.inspect('held'))?.owner).toBe('H');
    expect((await d.tryAcquire({ key: 'held', owner: 'A', ttlMs: 1000 })).ok).toBe(false);
    // Through the client, a wait retries until the writer is gone.
    const c = client(d);
    setTimeout(() => raw.exec('COMMIT'), 200);
    const lease = await c.acquire('k', { waitMs: 5000 });
    expect(lease.token).toBe(1n);
    raw.close();
  });

  it('tablePrefix keeps separate lock spaces in one file', async () => {
    const a = driver({ tablePrefix: 'app1_' });
    const b = driver({ tablePrefix: 'app2_' });
    expect((await a.tryAcquire({ key: 'k', owner: 'A', ttlMs: 1000 })).ok).toBe(true);
    expect((await b.tryAcquire({ key: 'k', owner: 'B', ttlMs: 1000 })).ok).toBe(true);
    const raw = new Database(dbPath);
    const tables = raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    raw.close();
    expect(tables).toEqual(
      ['fences', 'holders', 'locks', 'marks', 'queue', 'sequences'].flatMap((t) => [`app1_${t}`, `app2_${t}`]).sort(),
    );
  });

  describe('bad input', () => {
    it('a path that cannot be opened is an UnavailableError naming the path', () => {
      const bad = join(dir, 'no', 'such', 'dir', 'locks.db');
      let error: unknown;
      try {
        new SqliteDriver({ path: bad });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UnavailableError);
      expect((error as UnavailableError).code).toBe('DLOCK_UNAVAILABLE');
      expect((error as Error).message).toContain(bad);
      expect((error as Error).message).toMatch(/Create its directory/);
      expect((error as Error).cause).toBeDefined();
    });

    it('a file that is not a database is an UnavailableError naming the path', () => {
      mkdirSync(join(dir, 'a-directory.db'));
      expect(() => new SqliteDriver({ path: join(dir, 'a-directory.db') })).toThrow(UnavailableError);
      expect(() => new SqliteDriver({ path: join(dir, 'a-directory.db') })).toThrow(/a-directory\.db/);
    });

    it('refuses bad options with typed errors', () => {
      expect(() => new SqliteDriver(undefined as never)).toThrow(InvalidArgumentError);
      expect(() => new SqliteDriver({ path: '' })).toThrow(InvalidArgumentError);
      expect(() => new SqliteDriver({ path: 42 as never })).toThrow(InvalidArgumentError);
      expect(() => new SqliteDriver({ path: ':memory:' })).toThrow(/MemoryDriver/);
      expect(() => new SqliteDriver({ path: dbPath, busyTimeoutMs: -1 })).toThrow(OutOfRangeError);
      expect(() => new SqliteDriver({ path: dbPath, busyTimeoutMs: Number.NaN })).toThrow(OutOfRangeError);
      expect(() => new SqliteDriver({ path: dbPath, tablePrefix: 'x"; DROP TABLE y; --' })).toThrow(InvalidArgumentError);
    });
  });
});

describe('sqlite with create: false (read-only tools)', () => {
  it('a missing file is NoSuchDatabaseError and stays missing; a file without the tables reads as no locks and gets none', async () => {
    const missing = join(dir, 'no', 'such.db');
    const { connect, createDriver } = await import('../../src/connect.js');
    await expect(connect(`sqlite:${missing}`, { create: false })).rejects.toMatchObject({ name: 'NoSuchDatabaseError', code: 'DLOCK_NOT_FOUND', url: `sqlite:${missing}` });
    expect(existsSync(join(dir, 'no'))).toBe(false);
    await expect(createDriver(`sqlite:${missing}`, { create: 'no' as unknown as boolean })).rejects.toBeInstanceOf(InvalidArgumentError);
    new Database(dbPath).close();
    const c = await connect(`sqlite:${dbPath}`, { create: false });
    toClose.push(c);
    expect(await c.inspect('k')).toBeNull();
    expect(await c.list('')).toEqual([]);
    expect(await c.forceRelease('k')).toEqual({ released: 0, fence: 0n });
    const db = new Database(dbPath, { readonly: true });
    expect(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
    db.close();
  });

  it('on a file with locks it reads them and can force-release them', async () => {
    const holder = client();
    const lease = await holder.acquire('k', { ttlMs: 10_000 });
    const { connect } = await import('../../src/connect.js');
    const c = await connect(`sqlite:${dbPath}`, { create: false });
    toClose.push(c);
    expect((await c.list('')).map((i) => [i.key, i.holders[0]?.owner])).toEqual([['k', lease.owner]]);
    expect(await c.forceRelease('k')).toEqual({ released: 1, fence: lease.token });
    expect(await lease.release()).toBe(false);
    expect((await holder.acquire('k', { ttlMs: 10_000 })).token).toBe(lease.token + 1n);
  });
});
