/**
 * The counter in a PostgreSQL row of `fence_res (id text PRIMARY KEY, count int, fence bigint)`
 * (the test creates the table and the row): fencedRead for the fenced read, a plain SELECT for the
 * other, fencedUpdate for the write. In session mode the holder reports the server pid of the
 * session holding its lock, so that the test can terminate it.
 */
import pg from 'pg';
import { fencedRead, fencedUpdate, PostgresSessionDriver } from '../../../src/drivers/postgres/index.js';
import type { OpenCounter } from './index.js';

export const open: OpenCounter = async (url, id) => {
  const db = new pg.Client({ connectionString: url.split('?')[0] });
  db.on('error', () => undefined);
  await db.connect();
  return {
    readFenced: async (token) => Number((await fencedRead(db, { table: 'fence_res', where: { id }, token }))[0]?.count ?? 0),
    readPlain: async () => {
      const { rows } = await db.query<{ count: number }>('SELECT count FROM fence_res WHERE id = $1', [id]);
      return rows[0]?.count ?? 0;
    },
    writeFenced: async (token, value) => {
      await fencedUpdate(db, { table: 'fence_res', where: { id }, set: { count: value }, token });
    },
    holding: (driver, key) => ({ backendPid: driver instanceof PostgresSessionDriver ? driver.holderPid(key) : undefined }),
    close: () => db.end(),
  };
};
