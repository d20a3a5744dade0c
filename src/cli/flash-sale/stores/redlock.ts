/**
 * The flash sale on Redlock: the lock lives on a majority of N independent Redis nodes, and the
 * stock and orders live on the FIRST node of the URL, through the Redis store.
 *
 * Why the first node: Redlock nodes are independent (no replication), so there is no one engine
 * that holds "the data"; the sale's data is the protected resource, kept apart from the lock
 * service, as it would be in an application (a database guarded by a Redlock lock). Putting it on
 * a node the user already gave keeps the demo to one URL.
 */
import { parseRedlockUrl } from '../../../drivers/redlock/index.js';
import { DemoError, type Store, type StoreFactory } from '../store.js';
import { redisStore } from './redis.js';

function nodesOf(url: string): string[] {
  try {
    return parseRedlockUrl(url).nodes;
  } catch (e) {
    throw new DemoError(`"${url}" is not a valid Redlock URL: use redlock://HOST:PORT,HOST:PORT,HOST:PORT.`, { cause: e });
  }
}

function redacted(url: string): string {
  nodesOf(url);
  return url.replace(/^(redlock:\/\/[^:@/]*:)[^@/]*@/i, '$1***@');
}

export const redlockStore: StoreFactory = {
  backend: 'redlock',
  describe: redacted,
  async open(url, item) {
    const first = nodesOf(url)[0];
    if (first === undefined) throw new DemoError(`"${url}" names no node.`);
    const inner = await redisStore.open(first, item);
    const store: Store = {
      backend: 'redlock',
      setup: (stock) => inner.setup(stock),
      readStock: () => inner.readStock(),
      recordSale: (newStock, buyer) => inner.recordSale(newStock, buyer),
      results: () => inner.results(),
      cleanup: () => inner.cleanup(),
      close: () => inner.close(),
    };
    return store;
  },
};
