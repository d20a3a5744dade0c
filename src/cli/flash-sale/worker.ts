/**
 * One flash-sale worker process, forked by the parent (./run.ts). It connects, opens the store,
 * says 'ready', waits for 'go', starts every one of its buyers at the shared start instant and
 * reports progress and its results over IPC. It never prints: errors go to the parent.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from '../../connect.js';
import type { LockClient } from '../../core/client.js';
import { isParentMessage, type WorkerConfig, type WorkerMessage } from './protocol.js';
import { storeFactoryFor, type Store } from './store.js';

const PROGRESS_EVERY_MS = 100;

function send(msg: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) {
      resolve();
      return;
    }
    process.send(msg, undefined, {}, () => resolve());
  });
}

/** Sleep until `startNs` on the monotonic clock: a timer for the bulk, then spin the last ms. */
async function waitUntil(startNs: bigint): Promise<bigint> {
  const aheadMs = Number(startNs - process.hrtime.bigint()) / 1e6;
  if (aheadMs > 2) await sleep(aheadMs - 1.5);
  let now = process.hrtime.bigint();
  while (now < startNs) now = process.hrtime.bigint();
  return now - startNs;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as WorkerConfig;
  const index = cfg.index;
  // The parent owns this process: leave when it goes away, and let it handle Ctrl-C.
  process.on('disconnect', () => process.exit(1));
  process.on('SIGINT', () => undefined);

  let client: LockClient | undefined;
  let store: Store | undefined;
  const closeAll = async (): Promise<void> => {
    await Promise.allSettled([client?.close(), store?.close()]);
  };

  try {
    store = await (await storeFactoryFor(cfg.url)).open(cfg.url, cfg.item);
    if (cfg.lock) {
      client = await connect(cfg.url, { ttlMs: cfg.ttlMs, waitMs: cfg.waitMs });
      // Open the engine connection now, so that it does not count as the first buyer's lock wait.
      await client.inspect(cfg.lockKey);
    }

    const go = new Promise<bigint>((resolve) => {
      process.on('message', (m: unknown) => {
        if (isParentMessage(m)) resolve(BigInt(m.startNs));
      });
    });
    await send({ type: 'ready', index });
    const startNs = await go;
    const lateNs = await waitUntil(startNs);

    const waitsMs: number[] = [];
    let done = 0;
    let orders = 0;
    let locks = 0;
    let reported = -1;
    const progress = setInterval(() => {
      if (done === reported) return;
      reported = done;
      void send({ type: 'progress', index, done, orders, locks });
    }, PROGRESS_EVERY_MS);

    const st = store;
    const lockClient = client;
    const attempt = async (buyer: string, beforeWrite?: () => void): Promise<void> => {
      const stock = await st.readStock();
      if (stock > 0) {
        // The race window: other buyers run while this one holds a stale read.
        await sleep(1);
        beforeWrite?.();
        await st.recordSale(stock - 1, buyer);
        orders += 1;
      }
    };
    const buy = async (n: number): Promise<void> => {
      const buyer = `buyer-${cfg.firstBuyer + n}`;
      if (cfg.staggerMs) await sleep(n * cfg.staggerMs);
      if (lockClient) {
        const t0 = performance.now();
        const lease = await lockClient.acquire(cfg.lockKey, { ttlMs: cfg.ttlMs, waitMs: cfg.waitMs });
        waitsMs.push(performance.now() - t0);
        locks += 1;
        try {
          await attempt(buyer, () => lease.assertHeld());
        } finally {
          await lease.release();
        }
      } else {
        await attempt(buyer);
      }
      done += 1;
    };

    try {
      await Promise.all(Array.from({ length: cfg.buyers }, (_, n) => buy(n)));
    } finally {
      clearInterval(progress);
    }
    const endNs = process.hrtime.bigint();
    await closeAll();
    await send({ type: 'done', index, done, orders, locks, waitsMs, lateNs: String(lateNs), endNs: String(endNs) });
    process.exit(0);
  } catch (e) {
    const err = e as Error;
    const cause = err.cause instanceof Error ? ` (cause: ${err.cause.message})` : '';
    await send({ type: 'error', index, message: `${err.message}${cause}` });
    await Promise.race([closeAll(), sleep(1000)]);
    process.exit(1);
  }
}

void main();
