/**
 * PostgreSQL lease-table mode: a release hands the lock to the queued waiter
 * directly (the `handed-over` event, a token above the previous holder's), and a waiter whose
 * entry lapsed is skipped.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { startMysql } from '../support/mysql.js';
import { startPostgres } from '../support/postgres.js';

describe.each(['postgres'] as const)('%s table mode: direct handoff', (engine) => {
  let server: { url: string; stop(): Promise<void> } | undefined;
  beforeAll(async () => {
    server = engine === 'postgres' ? await startPostgres() : await startMysql();
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });
  const url = (): string => `${server?.url ?? ''}?mode=table`;

  it('a release hands the lock to the waiter with a greater token, announced as handed-over', async () => {
    const a = await connect(url(), { ttlMs: 10_000 });
    const b = await connect(url(), { ttlMs: 10_000 });
    try {
      let handed = 0;
      b.on('handed-over', () => handed++);
      const key = `handoff:${engine}`;
      let last = 0n;
      for (let i = 0; i < 10; i++) {
        const held = await a.acquire(key);
        expect(held.token).toBeGreaterThan(last);
        const waiting = b.acquire(key, { waitMs: 20_000 });
        await sleep(50);
        expect(await held.release()).toBe(true);
        const got = await waiting;
        expect(got.token).toBeGreaterThan(held.token);
        last = got.token;
        expect(await got.release()).toBe(true);
      }
      // Most handoffs arrive with the wake-up (a loaded machine may make a few confirm by a try).
      expect(handed).toBeGreaterThanOrEqual(5);
      expect(await a.inspect(key)).toBeNull();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 60_000);
});
