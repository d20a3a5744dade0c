/**
 * A session-mode forceRelease() must end the holder's connection; a user without the right to do
 * that gets PermissionDeniedError naming the privilege to grant (not "engine unreachable"), and
 * the holder keeps its lock. Real PostgreSQL and MariaDB servers, a second unprivileged user.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { PermissionDeniedError } from '../../src/errors.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';

let pg: PostgresServer;
let my: MysqlServer;
beforeAll(async () => {
  [pg, my] = await Promise.all([startPostgres(), startMysql()]);
}, 120_000);
afterAll(async () => {
  await Promise.all([pg?.stop(), my?.stop()]);
});

/**
 * The holder (`holderUrl`) takes a lock; `grant()` makes an unprivileged user who can read dlock's
 * tables; that user (`weakUrl`, creating nothing) lists the lock, and its forceRelease() is refused
 * with PermissionDeniedError whose message names `privilege`; the holder keeps its lock.
 */
async function refusedEviction(holderUrl: string, weakUrl: string, grant: () => Promise<unknown>, privilege: string): Promise<void> {
  const key = `perm:${randomBytes(3).toString('hex')}`;
  const holder = await connect(holderUrl);
  try {
    const lease = await holder.acquire(key, { ttlMs: 10_000 });
    await grant();
    const weak = await connect(weakUrl, { create: false });
    try {
      expect((await weak.list(key)).map((i) => i.key)).toEqual([key]);
      const err = await weak.forceRelease(key).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PermissionDeniedError);
      expect((err as PermissionDeniedError).code).toBe('DLOCK_PERMISSION_DENIED');
      expect((err as Error).message).toContain(privilege);
    } finally {
      await weak.close();
    }
    expect(lease.isHeld()).toBe(true);
    expect((await holder.inspect(key))?.token).toBe(lease.token);
    expect(await lease.release()).toBe(true);
  } finally {
    await holder.close();
  }
}

describe('forceRelease without the privilege to end the holder connection', () => {
  it('PostgreSQL session mode: PermissionDeniedError (pg_signal_backend), the holder keeps its lock', async () => {
    await refusedEviction(
      pg.url,
      pg.url.replace('postgres@', 'weak@'),
      async () => {
        await pg.sql('CREATE ROLE weak LOGIN');
        await pg.sql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO weak');
        await pg.sql('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO weak');
      },
      'pg_signal_backend',
    );
  }, 60_000);

  it('MariaDB session mode: PermissionDeniedError (CONNECTION_ADMIN / SUPER), the holder keeps its lock', async () => {
    await refusedEviction(
      `${my.url}?mode=session`,
      `${my.url.replace('root@', 'weak@')}?mode=session`,
      () => my.sql("CREATE USER 'weak'@'%'; GRANT SELECT, INSERT, UPDATE, DELETE ON dlock.* TO 'weak'@'%'"),
      'SUPER',
    );
  }, 60_000);

  it('MariaDB, a user without DELETE on dlock\'s tables: PermissionDeniedError naming the grant, the holder keeps its lock', async () => {
    await refusedEviction(
      `${my.url}?mode=session`,
      `${my.url.replace('root@', 'weak2@')}?mode=session`,
      () => my.sql("CREATE USER 'weak2'@'%'; GRANT SELECT, INSERT, UPDATE ON dlock.* TO 'weak2'@'%'"),
      'DELETE',
    );
  }, 60_000);
});
