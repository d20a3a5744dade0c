/**
 * The conformance suite over etcd: a standalone etcd member started for this file (short
 * heartbeat/election timeout so that 1 s leases work), drivers with their own etcd3 clients.
 * Forked workers get a URL with a 1 s lease, so that a holder killed with kill -9 is freed within
 * about a second; in-process drivers use 5 s leases (a busy 2-core machine can starve a 1 s
 * keep-alive), the lock TTLs under test are the core's `ttlMs`.
 */
import { Etcd3 } from 'etcd3';
import { afterAll } from 'vitest';
import { EtcdDriver } from '../../src/drivers/etcd/index.js';
import { startEtcd } from '../support/etcd.js';
import { defineConformanceSuite } from './suite.js';

const server = await startEtcd();
const admin = new Etcd3({ hosts: server.endpoint });
/** Every driver this file created, to sum their open watches. */
const created: EtcdDriver[] = [];

afterAll(async () => {
  admin.close();
  await server.dispose();
});

/**
 * A driver with its gRPC connection open (one read), so that a test's "arrival" is the enqueue
 * itself and not the connection setup of a cold client (the FIFO test starts waiters 150 ms apart).
 */
async function open(endpoint: string, leaseTtlS: number): Promise<EtcdDriver> {
  const d = new EtcdDriver({ hosts: endpoint, leaseTtlS });
  created.push(d);
  await d.inspect('conf:etcd:connect');
  return d;
}

/** The lock's keys (holder and waiters) as etcd has them. */
function lockPrefix(key: string): string {
  return created[0]?.lockPrefix(key) ?? new EtcdDriver({ hosts: server.endpoint }).lockPrefix(key);
}

/** Sum of the KV requests an etcd member has served (Range, Txn, Put, DeleteRange). */
function kvRequests(metrics: string): number {
  let n = 0;
  for (const m of metrics.matchAll(/^grpc_server_handled_total\{[^}]*grpc_method="(Range|Txn|Put|DeleteRange)"[^}]*\} (\d+)/gm)) n += Number(m[2]);
  return n;
}

defineConformanceSuite({
  name: 'etcd',
  create: () => open(server.endpoint, 5),
  url: () => `etcd://127.0.0.1:${server.clientPort}?leaseTtlS=1`,
  removeBehindBack: async (key) => {
    const deleted = await admin.delete().prefix(lockPrefix(key)).exec();
    if (deleted.deleted !== '1') throw new Error(`deleting ${lockPrefix(key)} removed ${deleted.deleted} keys: the lock was not (only) there`);
  },
  waitResidue: async (key) => ({
    [`keys under ${lockPrefix(key)}`]: await admin.getAll().prefix(lockPrefix(key)).count(),
    openWatches: created.reduce((n, d) => n + d.openWatches, 0),
  }),
  isolated: async () => {
    const own = await startEtcd();
    return {
      create: () => open(own.endpoint, 5),
      // SIGSTOP: connections stay open but nothing answers (a hung server or a black hole).
      makeUnavailable: () => Promise.resolve(own.pause()),
      restore: () => Promise.resolve(own.resume()),
      dispose: () => own.dispose(),
      operations: async () => kvRequests(await own.metrics()),
    };
  },
});
