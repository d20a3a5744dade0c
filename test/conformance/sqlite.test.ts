import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { SqliteDriver } from '../../src/drivers/sqlite/index.js';
import { startSqliteBlocker } from '../support/sqlite.js';
import { defineConformanceSuite } from './suite.js';

const dir = mkdtempSync(join(tmpdir(), 'dlock-sqlite-conf-'));
const path = join(dir, 'locks.db');
/** Every driver this file created, to sum their open change watches. */
const created: SqliteDriver[] = [];

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function open(file: string): Promise<SqliteDriver> {
  const d = new SqliteDriver({ path: file });
  created.push(d);
  return Promise.resolve(d);
}

/** Run one statement on a separate connection, as another program on the host would. */
function sql(file: string, statement: string, ...params: unknown[]): Database.RunResult {
  const db = new Database(file, { timeout: 5000 });
  try {
    return db.prepare(statement).run(...params);
  } finally {
    db.close();
  }
}

defineConformanceSuite({
  name: 'sqlite',
  create: () => open(path),
  url: () => `sqlite:${path}`,
  removeBehindBack: (key) => {
    const r = sql(path, 'DELETE FROM dlock_locks WHERE key = ?', key);
    if (r.changes !== 1) throw new Error(`DELETE removed ${r.changes} rows for "${key}": the lock was not there`);
    return Promise.resolve();
  },
  waitResidue: () => Promise.resolve({ openWatches: created.reduce((n, d) => n + d.openWatches, 0) }),
  isolated: async () => {
    const file = join(dir, `isolated-${created.length}.db`);
    // Create the schema first, so the blocker's EXCLUSIVE transaction is the only thing in the way.
    await (await open(file)).close();
    const blocker = await startSqliteBlocker(file);
    return {
      create: () => open(file),
      makeUnavailable: () => blocker.lock(),
      restore: () => blocker.unlock(),
      dispose: () => blocker.stop(),
    };
  },
});
