/**
 * PostgreSQL operator steps on a real server, beyond the conformance suite (cases shared with
 * MySQL in test/support/sql-admin-cases.ts): a session-mode forceRelease() terminates the holder's
 * backend, so every lock of that connection goes; `create: false` leaves no table behind.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { defineSqlAdminCases } from '../support/sql-admin-cases.js';

let server: PostgresServer;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

describe('postgres list() and forceRelease()', () => {
  defineSqlAdminCases({
    url: () => server.url,
    // A try runs on the driver's main connection.
    oneConnection: '',
    tables: async (prefix) => (await server.sql<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class WHERE starts_with(relname, $1)`, [prefix]))[0]!.n,
  });
});
