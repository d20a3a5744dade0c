/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on MySQL/MariaDB in both lock modes,
 * against a private server: with the lock it sells exactly the stock; without it the blind
 * read-minus-one writes oversell.
 */
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'mysql',
  start: () => startMysql(),
  stop: (server) => server.stop(),
  targets: ['session', 'table'].map((mode) => ({ title: `mysql (${mode} mode)`, url: (server: MysqlServer) => `${server.url}?mode=${mode}` })),
  unreachable: { url: 'mysql://root@127.0.0.1:1/dlock', message: /Cannot reach MySQL at 127\.0\.0\.1:1\/dlock: .*Check that it is running there/ },
});
