/**
 * Operator cases (list() and forceRelease()) shared by the SQL engines' driver tests (PostgreSQL,
 * MySQL/MariaDB): a session-mode forceRelease ends the holder's connection, so every lock of that
 * connection goes (as the README says); `create: false` on a fresh table prefix reads no locks and
 * leaves no table behind, in both modes.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import type { LockClient } from '../../src/core/client.js';
import { whenAborted } from '../conformance/suite/helpers.js';

export interface SqlAdminContext {
  /** The server's URL (query options are appended). */
  url(): string;
  /** Query options that make every try of a session-mode driver run on one connection. */
  readonly oneConnection: string;
  /** How many tables (or sequences) exist whose name starts with `prefix`. */
  tables(prefix: string): Promise<number>;
}

export function defineSqlAdminCases(ctx: SqlAdminContext): void {
  const closers: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((c) => c()));
  });
  const client = async (query: string, options: { create?: boolean } = {}): Promise<LockClient> => {
    const c = await connect(`${ctx.url()}?${query}`, options);
    closers.push(() => c.close());
    return c;
  };

  it('session mode: forceRelease ends the holder connection, and every lock of that connection with it', async () => {
    const tag = randomBytes(3).toString('hex');
    const holder = await client(`mode=session${ctx.oneConnection}`);
    const admin = await client('mode=session');
    // Both taken by a try on the same connection of the holder's driver.
    const a = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    const b = await holder.acquire(`${tag}:b`, { ttlMs: 10_000 });
    const lostA = whenAborted(a.signal, 5000);
    const lostB = whenAborted(b.signal, 5000);
    expect((await admin.list(`${tag}:`)).map((i) => i.key)).toEqual([`${tag}:a`, `${tag}:b`]);
    const r = await admin.forceRelease(`${tag}:a`);
    expect(r.released).toBe(1);
    expect(r.fence).toBeGreaterThanOrEqual(a.token);
    expect(((await lostA).reason as { reason?: string }).reason).toBe('session-lost');
    expect(((await lostB).reason as { reason?: string }).reason).toBe('session-lost');
    expect(await admin.list(`${tag}:`)).toEqual([]);
    // The holder's driver opens a new connection and carries on; tokens keep growing.
    const again = await holder.acquire(`${tag}:a`, { ttlMs: 10_000 });
    expect(again.token).toBeGreaterThan(r.fence);
    await again.release();
  });

  for (const mode of ['session', 'table'] as const) {
    it(`${mode} mode: create: false on a fresh table prefix reads no locks and creates no table`, async () => {
      const prefix = `fresh_${randomBytes(4).toString('hex')}_`;
      const ro = await client(`mode=${mode}&tablePrefix=${prefix}`, { create: false });
      expect(await ro.list('')).toEqual([]);
      expect(await ro.inspect('k')).toBeNull();
      expect(await ro.forceRelease('k')).toEqual({ released: 0, fence: 0n });
      expect(await ctx.tables(prefix)).toBe(0);
      // With the default (create), the tables appear and the read-only client sees the lock.
      const rw = await client(`mode=${mode}&tablePrefix=${prefix}`);
      const lease = await rw.acquire('k', { ttlMs: 10_000 });
      expect(await ctx.tables(prefix)).toBeGreaterThan(0);
      expect((await ro.list('')).map((i) => [i.key, i.holders[0]?.token])).toEqual([['k', lease.token]]);
      expect(await ro.forceRelease('k')).toEqual({ released: 1, fence: lease.token });
      await lease.release();
    });
  }
}
