/**
 * MySQL/MariaDB operator steps on a real server, beyond the conformance suite: in session mode a
 * forceRelease() ends the holder's connection (`KILL CONNECTION`), so every lock of that
 * connection goes (as the README says); a key held in one mode is force-released from the other;
 * list() pages by primary key over more keys than a page; in both modes `create: false` on a
 * fresh table prefix reads no locks and leaves no table behind.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { whenAborted } from '../conformance/suite/helpers.js';

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
  it('session mode: forceRelease kills the holder connection, and every lock of that connection with it', async () => {
    const tag = randomBytes(3).toString('hex');
    // One home connection: both keys are held by it.
    const holder = await client('mode=session&connections=1');
    const admin = await client('mode=session');
    const a = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    const b = await holder.acquire(`${tag}:b`, { ttlMs: 10_000 });
    const lostA = whenAborted(a.signal, 5000);
    const lostB = whenAborted(b.signal, 5000);
    expect((await admin.list(`${tag}:`)).map((i) => i.key)).toEqual([`${tag}:a`, `${tag}:b`]);
    const r = await admin.forceRelease(`${tag}:a`);
    expect(r).toEqual({ released: 1, fence: a.token });
    expect(((await lostA).reason as { reason?: string }).reason).toBe('session-lost');
    expect(((await lostB).reason as { reason?: string }).reason).toBe('session-lost');
    expect(await admin.list(`${tag}:`)).toEqual([]);
    const again = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    expect(again.token).toBeGreaterThan(r.fence);
    await again.release();
  });

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
      const page = await d.list!(`${tag}:`, { limit: 4, ...(cursor === undefined ? {} : { cursor }) });
      expect(page.keys.length).toBeLessThanOrEqual(4);
      seen.push(...page.keys);
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined && pages < 100);
    expect(cursor).toBeUndefined();
    expect(seen.sort()).toEqual(keys.filter((_, i) => i !== 3).sort());
    await Promise.all(leases.map((l) => l.release()));
  });

  for (const mode of ['session', 'table'] as const) {
    it(`${mode} mode: create: false on a fresh table prefix reads no locks and creates no table`, async () => {
      const prefix = `fresh_${randomBytes(4).toString('hex')}_`;
      const tables = async (): Promise<number> => {
        const rows = (await server.sql(`SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name LIKE ?`, [`${prefix}%`])) as Array<{ n: number }>;
        return Number(rows[0]?.n);
      };
      const ro = await client(`mode=${mode}&tablePrefix=${prefix}`, { create: false });
      expect(await ro.list('')).toEqual([]);
      expect(await ro.inspect('k')).toBeNull();
      expect(await ro.forceRelease('k')).toEqual({ released: 0, fence: 0n });
      expect(await tables()).toBe(0);
      const rw = await client(`mode=${mode}&tablePrefix=${prefix}`);
      const lease = await rw.acquire('k', { ttlMs: 10_000 });
      expect(await tables()).toBeGreaterThan(0);
      expect((await ro.list('')).map((i) => [i.key, i.holders[0]?.token])).toEqual([['k', lease.token]]);
      expect(await ro.forceRelease('k')).toEqual({ released: 1, fence: lease.token });
      await lease.release();
    });
  }
});
