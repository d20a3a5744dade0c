import type { TestProject } from 'vitest/node';
import { ensureBinary } from './debian.js';
import { startRedis } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the redis-server shared by the whole run (tests that stop or kill an engine start their own). */
    redisUrl: string;
  }
}

/** One shared redis-server for the run; stopped in teardown (and by the exit hook as a last resort). */
/**
 * Every engine binary the suite runs, with its Debian package. Ensured once, here, before any test
 * file starts: on a fresh machine the packages are installed one after another by this process
 * (test files running in parallel would otherwise fight over the dpkg lock).
 */
const ENGINES: ReadonlyArray<[bin: string, pkg: string, alsoAt?: string[]]> = [
  ['redis-server', 'redis-server'],
  ['redis-cli', 'redis-tools'],
  ['faketime', 'faketime'],
  ['zkServer.sh', 'zookeeper', ['/usr/share/zookeeper/bin/zkServer.sh']],
  ['java', 'zookeeper'],
  ['etcd', 'etcd-server'],
  ['postgres', 'postgresql', ['/usr/lib/postgresql/15/bin/postgres']],
  ['mariadbd', 'mariadb-server', ['/usr/sbin/mariadbd']],
  // doctor's pooler check runs through a real PgBouncer (test/support/pgbouncer.ts).
  ['pgbouncer', 'pgbouncer', ['/usr/sbin/pgbouncer']],
  // The dashboard's end-to-end tests drive Debian's chromium through playwright-core.
  ['chromium', 'chromium', ['/usr/bin/chromium']],
  // The partition tests (test/chaos/partition-*) build network namespaces with ip and nft.
  ['ip', 'iproute2', ['/usr/sbin/ip', '/sbin/ip']],
  ['nft', 'nftables', ['/usr/sbin/nft']],
];

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  for (const [bin, pkg, alsoAt] of ENGINES) await ensureBinary(bin, pkg, alsoAt);
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return async () => {
    await redis.stop();
  };
}
