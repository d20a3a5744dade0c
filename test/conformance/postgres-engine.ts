/**
 * The PostgreSQL side of the conformance factories (session and table modes): one private server
 * per test file, a key removed behind its holder's back with real SQL, and a private server a
 * test may freeze (SIGSTOP of the postmaster and every backend: connections stay open, nothing
 * answers, as when the network hangs).
 */
import { afterAll, beforeAll } from 'vitest';
import type { LockDriver } from '../../src/drivers/driver.js';
import { createPostgresDriver, PostgresSessionDriver, PostgresTableDriver } from '../../src/drivers/postgres/index.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import type { ConformanceFactory } from './suite.js';

export function postgresFactory(mode: 'session' | 'table'): ConformanceFactory {
  let server: PostgresServer | undefined;
  const created: Array<PostgresSessionDriver | PostgresTableDriver> = [];
  beforeAll(async () => {
    server = await startPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });
  const url = (): string => {
    if (!server) throw new Error('postgres not started');
    return `${server.url}?mode=${mode}`;
  };
  const make = (connection: string): Promise<LockDriver> => {
    const d = createPostgresDriver({ connection, mode });
    created.push(d);
    return Promise.resolve(d);
  };
  return {
    name: `postgres-${mode}`,
    freesOnDisconnect: mode === 'session',
    create: () => make(server?.url ?? ''),
    url,
    removeBehindBack: async (key) => {
      if (!server) throw new Error('postgres not started');
      // Session mode: revoke by clearing the owner record (the holder's next renewal finds it gone
      // and gives the advisory lock up). Table mode: delete the lease row.
      const rows =
        mode === 'session'
          ? await server.sql('UPDATE dlock_session_locks SET owner = NULL WHERE key = $1 AND owner IS NOT NULL RETURNING key', [key])
          : await server.sql('DELETE FROM dlock_locks WHERE key = $1 RETURNING key', [key]);
      if (rows.length !== 1) throw new Error(`removed ${rows.length} rows for "${key}": the lock was not there`);
    },
    waitResidue: () =>
      Promise.resolve({
        openWatches: created.reduce((n, d) => n + (d instanceof PostgresTableDriver ? d.openWatches : 0), 0),
        waitingKeys: created.reduce((n, d) => n + (d instanceof PostgresSessionDriver ? d.waitingKeys : 0), 0),
      }),
    isolated: async () => {
      const own = await startPostgres();
      return {
        create: () => make(own.url),
        makeUnavailable: () => Promise.resolve(own.pause()),
        restore: () => Promise.resolve(own.resume()),
        dispose: () => own.stop(),
      };
    },
  };
}
