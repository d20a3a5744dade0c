/**
 * PostgreSQL operator steps on a real server, beyond the conformance suite: in session mode a
 * forceRelease() terminates the holder's backend, so every lock of that connection goes (as the
 * README says), and the session_locks key registry keeps the key's id; in both modes
 * `create: false` on a fresh table prefix reads no locks and leaves no table behind.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { whenAborted } from '../conformance/suite/helpers.js';

let server: PostgresServer;
const closers: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  server = await startPostgres();
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

describe('postgres list() and forceRelease()', () => {
  it('session mode: forceRelease ends the holder backend, and every lock of that connection with it', async () => {
    const tag = randomBytes(3).toString('hex');
    const holder = await client('mode=session');
    const admin = await client('mode=session');
    // Both taken by a try on the holder driver's main connection: one backend holds both.
    const a = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    const b = await holder.acquire(`${tag}:b`, { ttlMs: 10_000 });
    const lostA = whenAborted(a.signal, 5000);
    const lostB = whenAborted(b.signal, 5000);
    const pid = (await server.sql<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`)).map((r) => r.pid);
    expect((await admin.list(`${tag}:`)).map((i) => i.key)).toEqual([`${tag}:a`, `${tag}:b`]);
    const r = await admin.forceRelease(`${tag}:a`);
    expect(r.released).toBe(1);
    expect(r.fence).toBeGreaterThanOrEqual(b.token);
    expect(((await lostA).reason as { reason?: string }).reason).toBe('session-lost');
    expect(((await lostB).reason as { reason?: string }).reason).toBe('session-lost');
    expect(await admin.list(`${tag}:`)).toEqual([]);
    const after = (await server.sql<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'`)).map((x) => x.pid);
    expect(pid.filter((p) => !after.includes(p)).length).toBe(1); // exactly one backend ended
    // The holder's driver opens a new connection and carries on; tokens keep growing.
    const again = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    expect(again.token).toBeGreaterThan(r.fence);
    await again.release();
  });

  for (const mode of ['session', 'table'] as const) {
    it(`${mode} mode: create: false on a fresh table prefix reads no locks and creates no table`, async () => {
      const prefix = `fresh_${randomBytes(4).toString('hex')}_`;
      const tables = async (): Promise<number> =>
        (await server.sql<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class WHERE starts_with(relname, $1)`, [prefix]))[0]!.n;
      const ro = await client(`mode=${mode}&tablePrefix=${prefix}`, { create: false });
      expect(await ro.list('')).toEqual([]);
      expect(await ro.inspect('k')).toBeNull();
      expect(await ro.forceRelease('k')).toEqual({ released: 0, fence: 0n });
      expect(await tables()).toBe(0);
      // With the default (create), the tables appear and the read-only client sees the lock.
      const rw = await client(`mode=${mode}&tablePrefix=${prefix}`);
      const lease = await rw.acquire('k', { ttlMs: 10_000 });
      expect(await tables()).toBeGreaterThan(0);
      expect((await ro.list('')).map((i) => [i.key, i.holders[0]?.token])).toEqual([['k', lease.token]]);
      const r = await ro.forceRelease('k');
      expect(r).toEqual({ released: 1, fence: lease.token });
      await lease.release();
    });
  }
});
