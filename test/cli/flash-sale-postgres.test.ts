/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on PostgreSQL in both lock modes, against
 * a private server: with the lock it sells exactly the stock; without it the blind
 * read-minus-one writes oversell.
 */
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'postgres',
  start: () => startPostgres(),
  stop: (server) => server.stop(),
  targets: ['session', 'table'].map((mode) => ({ title: `postgres (${mode} mode)`, url: (server: PostgresServer) => `${server.url}?mode=${mode}` })),
  unreachable: {
    url: 'postgres://postgres@127.0.0.1:1/postgres',
    message: /Cannot reach PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/postgres/,
  },
});
