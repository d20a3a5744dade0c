/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on etcd: a standalone etcd member started
 * for this file, stock and orders kept in etcd keys next to the locks.
 */
import { startEtcd } from '../support/etcd.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'etcd',
  start: () => startEtcd(),
  stop: (server) => server.dispose(),
  url: (server) => server.url,
  cliTimeoutMs: 90_000,
  unreachable: { url: 'etcd://127.0.0.1:1', message: /Cannot reach etcd at http:\/\/127\.0\.0\.1:1/ },
});
