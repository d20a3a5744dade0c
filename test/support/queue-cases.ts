/**
 * Cases shared by the queue engines' driver tests (ZooKeeper, etcd), on real servers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import type { LockClient } from '../../src/core/client.js';

/** How a test reads and changes one lock's queue on the engine, behind the drivers' backs. */
export interface RawQueue {
  /** The queue's entries, oldest (the holder) first, each named so that a re-created entry differs. */
  entries(): Promise<string[]>;
  /** Delete one entry with a raw client (an operator, another tool). */
  remove(entry: string): Promise<void>;
}

/**
 * A waiter whose own entry is deleted by someone else while it waits queues again at once (a new
 * entry behind the holder's, before the holder releases) and gets the lock within its wait.
 */
export async function ownEntryDeletedCase(holder: LockClient, waiter: LockClient, key: string, raw: RawQueue): Promise<void> {
  const held = await holder.acquire(key, { ttlMs: 10_000 });
  const pending = waiter.acquire(key, { ttlMs: 10_000, waitMs: 15_000 }).then(
    (lease) => ({ lease }),
    (error: unknown) => ({ error }),
  );
  for (let i = 0; i < 250 && (await raw.entries()).length < 2; i++) await sleep(20);
  const [holderEntry, waiterEntry] = await raw.entries();
  expect(waiterEntry).toBeDefined();
  await sleep(100); // watching
  await raw.remove(waiterEntry!);
  // The waiter notices at once (its own entry is watched) and queues again behind the holder.
  const requeued = async (): Promise<boolean> => {
    const now = await raw.entries();
    return now.length === 2 && now[0] === holderEntry && now[1] !== waiterEntry;
  };
  let again = false;
  for (let i = 0; i < 250 && !(again = await requeued()); i++) await sleep(20);
  expect(await held.release()).toBe(true);
  const got = await pending;
  if ('error' in got) throw got.error;
  expect(got.lease.token).toBeGreaterThan(held.token);
  expect(again).toBe(true);
  expect(await got.lease.release()).toBe(true);
}
