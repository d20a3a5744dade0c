/**
 * The counter in a MySQL/MariaDB row of `fence_res (id VARCHAR(64) PRIMARY KEY, count INT, fence
 * BIGINT)` in the URL's database (the test creates the table and the row), through
 * FencedMysqlTable: read(token) / peek() / write(token).
 */
import mysql from 'mysql2/promise';
import { FencedMysqlTable } from '../../../src/drivers/mysql/index.js';
import type { OpenCounter } from './index.js';

export const open: OpenCounter = async (url, id) => {
  const pool = mysql.createPool({ uri: url.split('?')[0] ?? url, connectionLimit: 2, supportBigNumbers: true, bigNumberStrings: true });
  const row = new FencedMysqlTable(pool, { table: 'fence_res', where: { id } });
  await pool.query('SELECT 1');
  return {
    readFenced: async (token) => Number((await row.read(token)).count),
    readPlain: async () => Number((await row.peek()).count),
    writeFenced: (token, value) => row.write(token, { count: value }),
    close: () => pool.end(),
  };
};
