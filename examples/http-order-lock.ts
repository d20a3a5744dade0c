/**
 * An HTTP handler that takes a lock per order (node:http, no framework): two requests paying the
 * same order never run together; the second one gets 409 at once instead of charging twice.
 *
 *   DLOCK_URL=redis://127.0.0.1:6379 npx tsx examples/http-order-lock.ts
 *
 * The demo at the bottom starts the server, sends five concurrent payments for order 1 and one for
 * order 2, prints the statuses, and shuts down. A real service keeps the server running and calls
 * shutdown() on SIGTERM.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'dlock';

const locks = await connect(process.env.DLOCK_URL ?? 'redis://127.0.0.1:6379', { ttlMs: 10_000 });
const paid = new Set<string>();

const server = createServer((req, res) => {
  const m = /^\/orders\/(\w+)\/pay$/.exec(req.url ?? '');
  if (req.method !== 'POST' || !m) return void res.writeHead(404).end();
  const order = m[1]!;
  // tryAcquire: one attempt, null when another request holds the order's lock.
  locks
    .tryAcquire(`order:${order}`)
    .then(async (lease) => {
      if (!lease) return void res.writeHead(409).end('payment in progress\n');
      try {
        if (paid.has(order)) return void res.writeHead(200).end('already paid\n');
        await sleep(1_000, undefined, { signal: lease.signal }); // charge the card; stops if the lock is lost
        paid.add(order);
        res.writeHead(201).end('paid\n');
      } finally {
        await lease.release();
      }
    })
    .catch((e: unknown) => res.writeHead(503).end(`${(e as Error).message}\n`));
});

async function shutdown(): Promise<void> {
  await new Promise((resolve) => server.close(resolve));
  await locks.close();
}

// --- demo ---
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const pay = (order: string): Promise<number> => fetch(`${base}/orders/${order}/pay`, { method: 'POST' }).then((r) => r.status);
const order1 = await Promise.all([1, 2, 3, 4, 5].map(() => pay('1')));
const order2 = await pay('2');
const again = await pay('1');
console.log(`order 1, 5 concurrent payments: ${order1.filter((s) => s === 201).length} paid (201), ${order1.filter((s) => s === 409).length} refused (409)`);
console.log(`order 2: ${order2}; order 1 again: ${again}`);
await shutdown();
