/**
 * etcd operator steps on a real server, beyond the conformance suite: list() of a key whose
 * queue is longer than a page (keys-only ranges count queue keys), forceRelease() of semaphore
 * permit holders and of a queue one holder at a time, and `create: false` (reads write nothing).
 */
import { randomBytes } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockClient } from '../../src/core/client.js';
import { EtcdDriver } from '../../src/drivers/etcd/index.js';
import { defineQueueAdminCases } from '../support/admin-cases.js';
import { startEtcd } from '../support/etcd.js';

const server = await startEtcd();
const admin = new Etcd3({ hosts: server.endpoint });
const closers: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((c) => c()));
});
afterAll(async () => {
  admin.close();
  await server.dispose();
});

function driver(prefix?: string): EtcdDriver {
  const d = new EtcdDriver({ hosts: server.endpoint, leaseTtlS: 5, ...(prefix === undefined ? {} : { prefix }) });
  closers.push(() => d.close());
  return d;
}

describe('etcd list() and forceRelease()', () => {
  defineQueueAdminCases(() => new EtcdDriver({ hosts: server.endpoint, leaseTtlS: 5 }));

  it('list: keys that need encoding, under a prefix that needs encoding, and only keys of this driver prefix', async () => {
    const tag = randomBytes(3).toString('hex');
    const prefix = `p-${tag}/`;
    const c = new LockClient(driver(prefix));
    closers.push(() => c.close());
    const other = new LockClient(driver(`other-${tag}/`));
    closers.push(() => other.close());
    const keys = [`a/${tag}`, `a%${tag}`, `a ${tag}/x`, `a.${tag}`, `é${tag}`];
    const leases = await Promise.all(keys.map((k) => c.acquire(k, { ttlMs: 10_000 })));
    const foreign = await other.acquire(`a/${tag}`, { ttlMs: 10_000 });
    expect((await c.list('a/')).map((i) => i.key)).toEqual([`a/${tag}`]);
    expect((await c.list('a%')).map((i) => i.key)).toEqual([`a%${tag}`]);
    expect((await c.list('')).map((i) => i.key)).toEqual([...keys].sort());
    expect((await other.list('')).map((i) => i.key)).toEqual([`a/${tag}`]);
    await Promise.all([...leases, foreign].map((l) => l.release()));
    expect(await c.list('')).toEqual([]);
  });

  it('create: false reads write nothing (no key appears under the prefix)', async () => {
    const prefix = `fresh-${randomBytes(4).toString('hex')}/`;
    const c = await connect(`etcd://127.0.0.1:${server.clientPort}?prefix=${encodeURIComponent(prefix)}`, { create: false });
    closers.push(() => c.close());
    expect(await c.list('')).toEqual([]);
    expect(await c.inspect('k')).toBeNull();
    const free = await c.forceRelease('k');
    expect(free.released).toBe(0);
    expect(free.fence).toBeGreaterThan(0n); // the cluster's revision: above every token ever given
    expect(await admin.getAll().prefix(prefix).keys()).toEqual([]);
  });
});
