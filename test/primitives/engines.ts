/**
 * The engines the primitives are tested on: the embedded SQLite default and a private Redis
 * server. The primitives only use the public LockClient API, whose per-driver behaviour the
 * conformance suite covers; these two are a file-based try-set engine and a networked one with
 * direct handoff.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { connect } from '../../src/connect.js';
import type { LockClient, LockClientOptions } from '../../src/core/client.js';
import { startRedis, type RedisServer } from '../support/redis.js';

export interface PrimitiveEngine {
  readonly name: string;
  /** A new client (closed after each test). */
  client(options?: LockClientOptions): Promise<LockClient>;
}

/** Register hooks and return the engines; call at the top level of a test file. */
export function primitiveEngines(): PrimitiveEngine[] {
  const clients: LockClient[] = [];
  let dir = '';
  let redis: RedisServer | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dlock-primitives-'));
    redis = await startRedis();
  }, 120_000);
  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const make = async (url: () => string, options?: LockClientOptions): Promise<LockClient> => {
    const c = await connect(url(), options);
    clients.push(c);
    return c;
  };
  return [
    { name: 'sqlite', client: (o) => make(() => `sqlite:${join(dir, 'locks.db')}`, o) },
    {
      name: 'redis',
      client: (o) =>
        make(() => {
          if (!redis) throw new Error('redis did not start (see beforeAll)');
          return redis.url;
        }, o),
    },
  ];
}
