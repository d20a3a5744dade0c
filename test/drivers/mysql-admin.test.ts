/**
 * MySQL/MariaDB operator steps on a real server, beyond the conformance suite (cases shared with
 * PostgreSQL in test/support/sql-admin-cases.ts: a session-mode forceRelease() ends the holder's
 * connection with `KILL CONNECTION`, so every lock of that connection goes; `create: false` leaves
 * no table behind); here: a key held in one mode is force-released from the other, and list()
 * pages by primary key over more keys than a page.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { whenAborted } from '../conformance/suite/helpers.js';
import { defineSqlAdminCases } from '../support/sql-admin-cases.js';

let server: MysqlServer;
const closers: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  server = await startMysql();
});
afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((c) => c()));
});
afterAll(async () => {
  await server?.stop();
});

async function client(query: string, options: { create?: boolean } = {}) {
  const c = await connect(`${server.url}?${query}`, options);
  closers.push(() => c.close());
  return c;
}

describe('mysql list() and forceRelease()', () => {
  it('a table-mode driver force-releases a session-mode holder, and the other way round', async () => {
    const tag = randomBytes(3).toString('hex');
    const session = await client('mode=session');
    const table = await client('mode=table');
    const s = await session.acquire(`${tag}:s`, { ttlMs: 10_000 });
    const t = await table.acquire(`${tag}:t`, { ttlMs: 10_000 });
    expect((await table.list(`${tag}:`)).map((i) => i.key)).toEqual([`${tag}:s`, `${tag}:t`]);
    expect(await table.forceRelease(`${tag}:s`)).toEqual({ released: 1, fence: s.token });
    // Its connection was killed; the session driver hears of it before its next statement there.
    expect(((await whenAborted(s.signal, 5000)).reason as { reason?: string }).reason).toBe('session-lost');
    expect(await session.forceRelease(`${tag}:t`)).toEqual({ released: 1, fence: t.token });
    expect(await session.list(`${tag}:`)).toEqual([]);
    const next = await table.acquire(`${tag}:t`, { ttlMs: 10_000 });
    expect(next.token).toBe(t.token + 1n); // the row's counter, never reset
    await next.release();
  });

  it('list: pages by primary key over more keys than a page, each held key once, free keys left out', async () => {
    const tag = randomBytes(3).toString('hex');
    const c = await client('mode=table');
    const keys = Array.from({ length: 12 }, (_, i) => `${tag}:${i}`);
    const leases = await Promise.all(keys.map((k) => c.acquire(k, { ttlMs: 10_000 })));
    await leases[3]!.release();
    const d = c.driver;
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await d.list(`${tag}:`, { limit: 4, ...(cursor === undefined ? {} : { cursor }) });
      expect(page.keys.length).toBeLessThanOrEqual(4);
      seen.push(...page.keys);
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined && pages < 100);
    expect(cursor).toBeUndefined();
    expect(seen.sort()).toEqual(keys.filter((_, i) => i !== 3).sort());
    await Promise.all(leases.map((l) => l.release()));
  });

  defineSqlAdminCases({
    url: () => server.url,
    // One home connection: every try of the driver runs on it.
    oneConnection: '&connections=1',
    tables: async (prefix) => {
      const rows = (await server.sql(`SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name LIKE ?`, [`${prefix}%`])) as Array<{ n: number }>;
      return Number(rows[0]?.n);
    },
  });
});
