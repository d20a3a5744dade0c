/**
 * A Redis engine that is down: `acquire({ waitMs })` must reject with `UnavailableError` whose
 * `cause` is the client's own connection error (ECONNREFUSED here, not ioredis's "Reached the
 * max retries per request limit"), within `waitMs` + BOUND_MS, for a URL (the driver's own
 * ioredis connection), an ioredis client passed in with its default options
 * (`maxRetriesPerRequest` 20: its offline queue used to hold a try for ~10 s) and a node-redis
 * client passed in. Two engines that are down: a port nobody listens on (refused from the first
 * connection attempt) and a real redis-server stopped after the client had connected.
 *
 * BOUND_MS is the stated bound: while the connection is known down a try fails at once, so the
 * wait ends at its deadline plus the core's bookkeeping; the rest is room for a loaded machine.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterEach, describe, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { RedisDriver } from '../../src/drivers/redis/index.js';
import { UnavailableError } from '../../src/errors.js';
import { freePort } from '../support/ports.js';
import { startRedis } from '../support/redis.js';

const BOUND_MS = 1000;
const WAITS = [1500, 5000] as const;

type Kind = 'url' | 'ioredis' | 'node-redis';
const cleanups: Array<() => Promise<unknown> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});

/** A LockClient on 127.0.0.1:`port` through `kind`; the passed-in clients are not awaited connected. */
async function lockClient(kind: Kind, port: number, connected: boolean): Promise<LockClient> {
  let driver: RedisDriver;
  if (kind === 'url') {
    driver = new RedisDriver({ url: `redis://127.0.0.1:${port}` });
  } else if (kind === 'ioredis') {
    const redis = new Redis({ host: '127.0.0.1', port }); // default options: 20 retries per request
    redis.on('error', () => undefined);
    cleanups.push(() => redis.disconnect());
    if (connected) await redis.ping();
    driver = new RedisDriver({ client: redis });
  } else {
    const redis = createClient({ url: `redis://127.0.0.1:${port}` });
    redis.on('error', () => undefined);
    const connecting = redis.connect();
    connecting.catch(() => undefined);
    cleanups.push(() => (redis.isOpen ? redis.destroy() : undefined));
    if (connected) await connecting;
    driver = new RedisDriver({ client: redis });
  }
  const lc = new LockClient(driver);
  cleanups.push(() => lc.close());
  return lc;
}

/** Acquire on each client (one waitMs each, at the same time) and check how each one failed. */
async function expectUnavailable(clients: readonly LockClient[], key: string): Promise<void> {
  const outcomes = await Promise.all(
    clients.map(async (lc, i) => {
      const waitMs = WAITS[i] ?? 1500;
      const t0 = performance.now();
      const error = await lc.acquire(key, { waitMs }).then(
        () => new Error('acquired a lock on an engine that is down'),
        (e: unknown) => e,
      );
      return { waitMs, error, elapsed: performance.now() - t0 };
    }),
  );
  for (const { waitMs, error, elapsed } of outcomes) {
    expect(error, `waitMs ${waitMs}`).toBeInstanceOf(UnavailableError);
    const cause = (error as UnavailableError).cause as { code?: string; message?: string } | undefined;
    expect(cause?.code, `waitMs ${waitMs}: cause ${String(cause?.message)}`).toBe('ECONNREFUSED');
    expect(String(cause?.message)).not.toMatch(/max retries/i);
    expect(elapsed, `waitMs ${waitMs}`).toBeLessThan(waitMs + BOUND_MS);
  }
}

describe.each<Kind>(['url', 'ioredis', 'node-redis'])('a Redis engine that is down (%s)', (kind) => {
  it('refused port: UnavailableError caused by ECONNREFUSED within waitMs + bound', async () => {
    const port = await freePort();
    const clients = await Promise.all(WAITS.map(() => lockClient(kind, port, false)));
    await expectUnavailable(clients, 'down:refused');
  }, 20_000);

  it('stopped server: UnavailableError caused by ECONNREFUSED within waitMs + bound', async () => {
    const server = await startRedis();
    cleanups.push(() => server.stop());
    const clients = await Promise.all(WAITS.map(() => lockClient(kind, server.port, true)));
    // Up first: a lock comes and goes, so the driver has seen a ready connection.
    for (const lc of clients) await (await lc.acquire('down:stopped', { waitMs: 2000 })).release();
    await server.stop();
    await expectUnavailable(clients, 'down:stopped');
  }, 25_000);
});
