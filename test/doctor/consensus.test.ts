/**
 * doctor() on real ZooKeeper and etcd servers: the negotiated session timeout against the one
 * asked for, the servers' modes, etcd's member health and lease TTL, the round trip. doctor
 * writes nothing: no znode and no etcd key or lease exists afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { doctor } from '../../src/doctor/index.js';
import { startEtcd, startEtcdCluster, type EtcdCluster, type EtcdServer } from '../support/etcd.js';
import { startZooKeeper, zooKeeperAdmin, type ZooKeeperCluster } from '../support/zookeeper.js';
import { one } from './findings.js';

describe('doctor: ZooKeeper', () => {
  let zk: ZooKeeperCluster;
  beforeAll(async () => {
    zk = await startZooKeeper();
  });
  afterAll(async () => {
    await zk?.stop();
  });

  it('a session timeout above maxSessionTimeout (60 s) warns with the negotiated value', async () => {
    const r = await doctor(`${zk.url}?sessionTimeoutMs=120000`, { pings: 10 });
    expect(r.engine).toBe('zookeeper');
    const f = one(r, 'zookeeper.session-timeout');
    expect(f.status).toBe('warn');
    expect(f.evidence).toMatch(/asked for 120000 ms, the server granted 60000 ms/);
    // The test servers whitelist srvr but not conf: the limits are said to be unreadable.
    expect(f.evidence).toMatch(/add conf to 4lw\.commands\.whitelist/);
    expect(f.fix).toMatch(/maxSessionTimeout/);
  });

  it('a timeout the server grants as asked is ok; the server mode and round trip are reported; nothing is created', async () => {
    const r = await doctor(`${zk.url}?sessionTimeoutMs=5000`, { pings: 10 });
    expect(one(r, 'zookeeper.session-timeout').status).toBe('ok');
    const ensemble = one(r, 'zookeeper.ensemble');
    expect(ensemble.status).toBe('ok');
    expect(ensemble.evidence).toMatch(/standalone/);
    expect(one(r, 'rtt').status).toBe('ok');
    expect(one(r, 'clock').evidence).toMatch(/^not measured/);
    const admin = await zooKeeperAdmin(zk.connectionString);
    try {
      expect(await admin.children('/')).toEqual(['zookeeper']);
    } finally {
      await admin.close();
    }
  });
});

describe('doctor: ZooKeeper with conf whitelisted', () => {
  let zk: ZooKeeperCluster;
  beforeAll(async () => {
    zk = await startZooKeeper({ fourLetterWords: ['srvr', 'ruok', 'conf'] });
  });
  afterAll(async () => {
    await zk?.stop();
  });

  it('a session timeout below minSessionTimeout (2 ticks) warns, and the limits are read from conf', async () => {
    const f = one(await doctor(`${zk.url}?sessionTimeoutMs=100`, { pings: 5 }), 'zookeeper.session-timeout');
    expect(f.status).toBe('warn');
    expect(f.evidence).toMatch(/asked for 100 ms, the server granted 400 ms; tickTime 200 ms, minSessionTimeout 400 ms, maxSessionTimeout 60000 ms/);
    expect(f.fix).toMatch(/minSessionTimeout/);
  });
});

describe('doctor: etcd', () => {
  let one1: EtcdServer;
  let cluster: EtcdCluster;
  beforeAll(async () => {
    [one1, cluster] = await Promise.all([startEtcd({ query: 'leaseTtlS=1' }), startEtcdCluster()]);
  });
  afterAll(async () => {
    await Promise.all([one1?.dispose(), cluster?.dispose()]);
  });

  it('a healthy 3-member cluster: every member, one leader, no alarm, clock and round trip', async () => {
    const r = await doctor(cluster.url, { pings: 10 });
    expect(r.engine).toBe('etcd');
    const health = one(r, 'etcd.health');
    expect(health.status).toBe('ok');
    expect(health.evidence.match(/leader [0-9a-f]+/g)).toHaveLength(3);
    expect(one(r, 'etcd.alarms').status).toBe('ok');
    expect(one(r, 'etcd.lease-ttl').status).toBe('ok');
    expect(one(r, 'clock').status).toBe('ok');
    expect(one(r, 'rtt').status).toBe('ok');
  });

  it('a member down: a warning naming it', async () => {
    const down = cluster.members[2]!;
    await down.stop();
    try {
      const health = one(await doctor(cluster.url, { pings: 5, timeoutMs: 1500 }), 'etcd.health');
      expect(health.status).toBe('warn');
      expect(health.evidence).toContain(`${down.endpoint} unreachable`);
    } finally {
      await down.restart();
    }
  });

  it('leaseTtlS=1 warns (below the default minimum TTL); no key and no lease is left', async () => {
    const r = await doctor(one1.url, { pings: 10 });
    const f = one(r, 'etcd.lease-ttl');
    expect(f.status).toBe('warn');
    expect(f.evidence).toMatch(/lease TTL is 1 s/);
    const c = new Etcd3({ hosts: [one1.endpoint] });
    try {
      expect(await c.getAll().keys()).toEqual([]);
      expect((await c.leaseClient.leaseLeases({})).leases).toEqual([]);
    } finally {
      c.close();
    }
  });
});
