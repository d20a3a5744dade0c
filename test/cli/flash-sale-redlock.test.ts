/**
 * The flash-sale cases (test/cli/flash-sale-cases.ts) on Redlock, 3 independent redis-servers
 * started here: the lock on a majority of the nodes, the stock and orders on the first node (see
 * src/cli/flash-sale/stores/redlock.ts).
 */
import { startRedlock } from '../support/redlock.js';
import { defineFlashSaleTests } from './flash-sale-cases.js';

defineFlashSaleTests({
  backend: 'redlock',
  start: () => startRedlock({ nodes: 3 }),
  stop: (nodes) => nodes.stop(),
  targets: [{ title: 'redlock (3 nodes)', url: (nodes) => nodes.url }],
  stocks: [1, 3],
  cliTimeoutMs: 110_000,
  unreachable: { url: 'redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3', message: /Cannot reach Redis at redis:\/\/127\.0\.0\.1:1/ },
});
