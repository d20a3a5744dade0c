/**
 * MySQL/MariaDB session mode, the handoff path (src/drivers/mysql/session.ts, "Handoff"): what the
 * server runs between a holder's release and its waiter's grant, counted with the server's own
 * `Questions` counter (one per statement, also inside a multi-statement batch), on a private
 * MariaDB that nothing else uses:
 * - the release is two statements (RELEASE_LOCK first, then the idle limit) and the waiter's
 *   grant three (GET_LOCK, the token write, the idle limit), the token coming back in the
 *   INSERT's OK packet: five in all, where there were eight. The server counts a statement when
 *   it starts, so the waiter's blocked GET_LOCK is counted before the window: 4 in it (was 7);
 * - the tokens that path hands out are still 1 on a new key and then strictly increasing, and a
 *   release still answers whether the row was ours.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LockClient } from '../../src/core/client.js';
import { createMysqlDriver, keyNames } from '../../src/drivers/mysql/index.js';
import { startMysql, statementCounter, type MysqlServer } from '../support/mysql.js';

let server: MysqlServer;

beforeAll(async () => {
  server = await startMysql();
  questions = statementCounter(server);
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const client = (): LockClient => new LockClient(createMysqlDriver({ url: `${server.url}?mode=session` }));

/** Statements the server ran so far (see statementCounter). */
let questions: () => Promise<number>;

it('a handoff runs five statements on the server: two for the release, three for the blocked grant', async () => {
  const a = client();
  const b = client();
  try {
    const key = 'handoff:statements';
    // Warm up: connections, schema, the waiter's spare connection.
    for (let i = 0; i < 3; i++) {
      const held = await a.acquire(key);
      const waiting = b.acquire(key, { waitMs: 30_000 });
      await sleep(30);
      await held.release();
      await (await waiting).release();
    }
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const held = await a.acquire(key);
      const waiting = b.acquire(key, { waitMs: 30_000 });
      // The waiter's fast try and its blocking GET_LOCK are on the server before we count.
      await sleep(200);
      const before = await questions();
      const [ok, lease] = await Promise.all([held.release(), waiting]);
      const after = await questions();
      expect(ok).toBe(true);
      counts.push(after - before);
      await lease.release();
    }
    // 2 (release) + 2 (the grant's token write and idle limit; its GET_LOCK started before `before`).
    expect(counts).toEqual([4, 4, 4]);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}, 60_000);

it('tokens on the handoff path: 1 on a new key, then strictly increasing; release answers false for a row taken behind its back', async () => {
  const a = client();
  const b = client();
  try {
    const key = `handoff:tokens:${Date.now()}`;
    const first = await a.acquire(key);
    expect(first.token).toBe(1n);
    const tokens = [first.token];
    let held = first;
    for (let i = 0; i < 5; i++) {
      const next = (i % 2 === 0 ? b : a).acquire(key, { waitMs: 30_000 });
      await sleep(20);
      expect(await held.release()).toBe(true);
      held = await next;
      tokens.push(held.token);
    }
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBe((tokens[i - 1] as bigint) + 1n);
    // The row cleared behind the holder's back: the release frees the lock but answers false.
    await server.sql('UPDATE dlock.dlock_locks SET owner = NULL WHERE id = ?', [keyNames('dlock', 'dlock_', key).id]);
    expect(await held.release()).toBe(false);
    const again = await b.tryAcquire(key);
    expect(again?.token).toBe((tokens[tokens.length - 1] as bigint) + 1n);
    await again?.release();
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}, 60_000);
