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

describe('forceRelease without the privilege to end the holder connection', () => {
  it('PostgreSQL session mode: PermissionDeniedError (pg_signal_backend), the holder keeps its lock', async () => {
    const key = `perm:${randomBytes(3).toString('hex')}`;
    const holder = await connect(pg.url);
    try {
      const lease = await holder.acquire(key, { ttlMs: 10_000 });
      await pg.sql('CREATE ROLE weak LOGIN');
      await pg.sql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO weak');
      await pg.sql('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO weak');
      const weak = await connect(pg.url.replace('postgres@', 'weak@'), { create: false });
      try {
        expect((await weak.list('perm:')).map((i) => i.key)).toEqual([key]);
        const err = await weak.forceRelease(key).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(PermissionDeniedError);
        expect((err as PermissionDeniedError).code).toBe('DLOCK_PERMISSION_DENIED');
        expect((err as Error).message).toContain('pg_signal_backend');
      } finally {
        await weak.close();
      }
      expect(lease.isHeld()).toBe(true);
      expect((await holder.inspect(key))?.token).toBe(lease.token);
      expect(await lease.release()).toBe(true);
    } finally {
      await holder.close();
    }
  }, 60_000);

  it('MariaDB session mode: PermissionDeniedError (CONNECTION_ADMIN / SUPER), the holder keeps its lock', async () => {
    const key = `perm:${randomBytes(3).toString('hex')}`;
    const holder = await connect(`${my.url}?mode=session`);
    try {
      const lease = await holder.acquire(key, { ttlMs: 10_000 });
      await my.sql("CREATE USER 'weak'@'%'; GRANT SELECT, INSERT, UPDATE ON dlock.* TO 'weak'@'%'");
      const weak = await connect(`${my.url.replace('root@', 'weak@')}?mode=session`, { create: false });
      try {
        const err = await weak.forceRelease(key).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(PermissionDeniedError);
        expect((err as Error).message).toContain('SUPER');
      } finally {
        await weak.close();
      }
      expect(lease.isHeld()).toBe(true);
      expect((await holder.inspect(key))?.token).toBe(lease.token);
      expect(await lease.release()).toBe(true);
    } finally {
      await holder.close();
    }
  }, 60_000);
});
