/**
 * The MySQL/MariaDB side of the conformance factories (session mode and lease-table mode): a
 * private MariaDB per test file, deleting a lock behind its holder's back with plain SQL, the
 * wait residue of finished waits, and a private server a test may freeze (SIGSTOP).
 */
import { afterAll, beforeAll } from 'vitest';
import type { LockDriver } from '../../src/drivers/driver.js';
import { createMysqlDriver, keyNames, MysqlSessionDriver, MysqlTableDriver, type MysqlMode } from '../../src/drivers/mysql/index.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import type { ConformanceFactory } from './suite.js';

/** A conformance factory over a MariaDB started for this file (in beforeAll, stopped in afterAll). */
export function mysqlFactory(mode: MysqlMode): ConformanceFactory {
  let server: MysqlServer | undefined;
  const created: LockDriver[] = [];
  beforeAll(async () => {
    server = await startMysql();
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });
  const url = (s: MysqlServer | undefined = server): string => {
    if (!s) throw new Error('the MariaDB server is not started');
    return `${s.url}?mode=${mode}`;
  };
  const open = (u: string): Promise<LockDriver> => {
    const d = createMysqlDriver({ url: u });
    created.push(d);
    return Promise.resolve(d);
  };
  return {
    name: `mysql-${mode}`,
    create: () => open(url()),
    url: () => url(),
    // Session mode: the server frees a dead holder's GET_LOCK as soon as it sees the disconnect.
    freesOnDisconnect: mode === 'session',
    removeBehindBack: async (key) => {
      const id = keyNames('dlock', 'dlock_', key).id;
      const r = (await server?.sql('UPDATE dlock.dlock_locks SET owner = NULL WHERE id = ? AND owner IS NOT NULL', [id])) as { affectedRows: number };
      if (r.affectedRows !== 1) throw new Error(`UPDATE cleared ${r.affectedRows} rows for "${key}": the lock was not there`);
    },
    waitResidue: () => {
      let waits = 0;
      for (const d of created) {
        if (d instanceof MysqlSessionDriver) waits += d.openWaits;
        if (d instanceof MysqlTableDriver) waits += d.openWatches;
      }
      return Promise.resolve({ serverWaits: waits });
    },
    isolated: async () => {
      const own = await startMysql();
      return {
        create: () => open(url(own)),
        // Frozen, not stopped: connections stay open and every statement hangs (a stop would
        // end the sessions, which session mode reports at once as a lost session).
        makeUnavailable: () => Promise.resolve(own.pause()),
        restore: () => Promise.resolve(own.resume()),
        dispose: () => own.stop(),
      };
    },
  };
}
