/**
 * The counter in a MySQL/MariaDB row of `fence_res (id VARCHAR(64) PRIMARY KEY, count INT, fence
 * BIGINT)` in the URL's database (the test creates the table and the row): FencedMysqlTable for
 * the fenced write, a plain UPDATE for the other.
 */
import mysql from 'mysql2/promise';
import { FencedMysqlTable } from '../../../src/drivers/mysql/index.js';
import type { OpenCounter } from './index.js';

export const open: OpenCounter = async (url, id) => {
  const pool = mysql.createPool({ uri: url.split('?')[0] ?? url, connectionLimit: 2, supportBigNumbers: true, bigNumberStrings: true });
  const row = new FencedMysqlTable(pool, { table: 'fence_res', where: { id } });
  await pool.query('SELECT 1');
  return {
    read: async () => Number((await row.read()).count),
    writeFenced: (token, value) => row.write(token, { count: value }),
    writePlain: async (value) => {
      await pool.query('UPDATE fence_res SET count = ? WHERE id = ?', [value, id]);
    },
    close: () => pool.end(),
  };
};
