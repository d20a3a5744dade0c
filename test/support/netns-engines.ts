/**
 * Engines inside a network lab (./netns.ts), for the partition tests (no vitest imports): each
 * server runs in its own lab host on its standard port (every namespace has its own ports, so
 * nothing is hunted for), bound to the host's lab address, data in a temp dir. Binaries come from
 * the same Debian packages as the loopback harnesses (./etcd.ts, ./redis.ts) through
 * ensureBinary; processes are the lab's (stopped by pid on dispose). Health and leader questions
 * are asked from inside the lab with the engines' own CLIs (`etcdctl`, `redis-cli`), since the
 * test process lives outside it.
 */
import { mkdirSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ensureBinary } from './debian.js';
import type { Lab } from './netns.js';
import type { ServerProcess } from './processes.js';
import { removeDir, tempDir } from './processes.js';
import { sentinelConf } from './redis-sentinel.js';
import { config as zooConfig, DEFAULT_WORDS, javaArgs, type Ports } from './zookeeper.js';

/** Poll `probe` every 100 ms until it resolves true; throw `what` after `timeoutMs`. */
async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
    await delay(100);
  }
}

/** `redis-cli` inside `host` (its output trimmed); `args` after `-h ip -p port`. */
async function redisCli(lab: Lab, host: string, port: number, args: readonly string[]): Promise<string> {
  const cli = await ensureBinary('redis-cli', 'redis-tools');
  return (await lab.exec(host, cli, ['-h', lab.host(host).ip, '-p', String(port), ...args], { timeoutMs: 2000 })).trim();
}

export interface LabRedis {
  readonly host: string;
  /** `redis://<ip>:6379` */
  readonly url: string;
  readonly hostPort: string;
  readonly proc: ServerProcess;
  /** Its working dir (remove it after the lab is disposed). */
  readonly dir: string;
}

/** Start one redis-server per host (in parallel), each on `<ip>:6379`; resolves once every one answers PING. */
export async function startLabRedis(lab: Lab, hosts: readonly string[], args: readonly string[] = []): Promise<LabRedis[]> {
  const bin = await ensureBinary('redis-server', 'redis-server');
  return Promise.all(
    hosts.map(async (host) => {
      const ip = lab.host(host).ip;
      // Its own dir: a replica writes the RDB of a full sync there (removed with the lab's temp dirs by the exit hook).
      const dir = tempDir('dlock-lab-redis-');
      const proc = lab.spawn(host, bin, ['--bind', ip, '--port', '6379', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning', ...args]);
      await until(`redis-server in ${host} did not answer PING`, 15_000, async () => {
        if (!proc.running) throw new Error(`redis-server in ${host} exited`);
        return (await redisCli(lab, host, 6379, ['ping'])) === 'PONG';
      });
      return { host, url: `redis://${ip}:6379`, hostPort: `${ip}:6379`, proc, dir };
    }),
  );
}

export interface LabEtcd {
  readonly hosts: readonly string[];
  /** `etcd://ip1:2379,ip2:2379,ip3:2379` plus the query given. */
  readonly url: string;
  /** The same URL naming only the members on `hosts` (a client that can only talk to them). */
  urlOf(hosts: readonly string[]): string;
  /** The host of the member every reachable member names as leader (asked from inside each member's host). */
  leader(timeoutMs?: number): Promise<string>;
  /** Wait until every member reports itself healthy (after a heal). */
  healthy(timeoutMs?: number): Promise<void>;
  dispose(): void;
}

/**
 * A cluster with one member per host (`<ip>:2379` for clients, `:2380` for peers), the loopback
 * harness's short timings by default (50 ms heartbeat, 500 ms election: 1 s leases are honoured).
 */
export async function startLabEtcd(lab: Lab, hosts: readonly string[], opts: { query?: string; heartbeatMs?: number; electionMs?: number } = {}): Promise<LabEtcd> {
  const bin = await ensureBinary('etcd', 'etcd-server');
  const ctl = await ensureBinary('etcdctl', 'etcd-client');
  const ip = (h: string): string => lab.host(h).ip;
  const dirs = hosts.map(() => tempDir('dlock-lab-etcd-'));
  const cluster = hosts.map((h) => `${h}=http://${ip(h)}:2380`).join(',');
  hosts.forEach((h, i) => {
    const dir = dirs[i] ?? '';
    lab.spawn(h, bin, [
      '--name', h,
      '--data-dir', join(dir, 'data'),
      '--listen-client-urls', `http://${ip(h)}:2379`,
      '--advertise-client-urls', `http://${ip(h)}:2379`,
      '--listen-peer-urls', `http://${ip(h)}:2380`,
      '--initial-advertise-peer-urls', `http://${ip(h)}:2380`,
      '--initial-cluster', cluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', lab.id,
      '--heartbeat-interval', String(opts.heartbeatMs ?? 50),
      '--election-timeout', String(opts.electionMs ?? 500),
      '--logger', 'zap',
      '--log-outputs', join(dir, 'etcd.log'),
    ]);
  });
  const status = async (h: string): Promise<{ member: string; leader: string } | undefined> => {
    const out = await lab.exec(h, ctl, [`--endpoints=http://${ip(h)}:2379`, '--command-timeout=1s', '--dial-timeout=1s', 'endpoint', 'status', '-w', 'json'], {
      timeoutMs: 3000,
    }).catch(() => undefined);
    if (!out) return undefined;
    // Ids are uint64: read them as text, JSON.parse would round them.
    const member = /"member_id":(\d+)/.exec(out)?.[1];
    const leader = /"leader":(\d+)/.exec(out)?.[1] ?? '0';
    return member ? { member, leader } : undefined;
  };
  const healthy = (timeoutMs = 20_000): Promise<void> =>
    until('etcd members were not all healthy', timeoutMs, async () => {
      const ok = await Promise.all(
        hosts.map((h) => lab.exec(h, ctl, [`--endpoints=http://${ip(h)}:2379`, '--command-timeout=1s', 'endpoint', 'health'], { timeoutMs: 3000 }).then(() => true, () => false)),
      );
      return ok.every(Boolean);
    });
  await healthy();
  // The etcd API speaks of member ids; the test speaks of hosts.
  const ids = new Map<string, string>();
  for (const h of hosts) {
    const s = await status(h);
    if (s) ids.set(s.member, h);
  }
  return {
    hosts,
    url: `etcd://${hosts.map((h) => `${ip(h)}:2379`).join(',')}${opts.query ? `?${opts.query}` : ''}`,
    urlOf: (only) => `etcd://${only.map((h) => `${ip(h)}:2379`).join(',')}${opts.query ? `?${opts.query}` : ''}`,
    leader: async (timeoutMs = 15_000) => {
      let found: string | undefined;
      await until('no etcd leader agreed on', timeoutMs, async () => {
        const seen = (await Promise.all(hosts.map(status))).filter((s) => s !== undefined);
        const first = seen[0]?.leader;
        if (!first || first === '0' || seen.length < 2 || !seen.every((s) => s.leader === first)) return false;
        found = ids.get(first);
        return found !== undefined;
      });
      return found ?? '';
    },
    healthy,
    dispose: () => {
      for (const d of dirs) removeDir(d);
    },
  };
}

export interface LabZooKeeper {
  readonly hosts: readonly string[];
  /** `zookeeper://ip1:2181,ip2:2181,ip3:2181` plus the query given. */
  readonly url: string;
  /** The same URL naming only the servers on `hosts` (a client that can only talk to them). */
  urlOf(hosts: readonly string[]): string;
  /** The host whose server says `Mode: leader` (asked from inside each server's host). */
  leader(timeoutMs?: number): Promise<string>;
  /** Wait until every server serves (leader or follower) again (after a heal). */
  healthy(timeoutMs?: number): Promise<void>;
  dispose(): void;
}

/**
 * An ensemble with one server per host (client port 2181, quorum 2888, election 3888 on the
 * host's lab address), zoo.cfg from the loopback harness (./zookeeper.ts: tickTime 200 ms by
 * default, so sessions may be as short as 400 ms).
 */
export async function startLabZooKeeper(lab: Lab, hosts: readonly string[], opts: { query?: string; tickTimeMs?: number } = {}): Promise<LabZooKeeper> {
  const java = await ensureBinary('java', 'zookeeper');
  const ip = (h: string): string => lab.host(h).ip;
  const base = tempDir('dlock-lab-zk-');
  const ports: Ports[] = hosts.map(() => ({ client: 2181, quorum: 2888, election: 3888 }));
  const addresses = hosts.map(ip);
  hosts.forEach((h, i) => {
    const dir = join(base, h);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'myid'), `${i + 1}\n`);
    const cfg = join(dir, 'zoo.cfg');
    const p = ports[i] as Ports;
    writeFileSync(cfg, zooConfig(dir, p, ports, opts.tickTimeMs ?? 200, false, DEFAULT_WORDS, addresses));
    const fd = openSync(join(dir, 'server.log'), 'a');
    lab.spawn(h, java, javaArgs(cfg), { stdio: ['ignore', fd, fd] });
    closeSync(fd);
  });
  /** `srvr` over bash's /dev/tcp from inside the host (the lab has no nc). */
  const mode = async (h: string): Promise<string | undefined> => {
    const script = `exec 3<>/dev/tcp/${ip(h)}/2181 && printf srvr >&3 && timeout 2 cat <&3`;
    const out = await lab.exec(h, 'bash', ['-c', script], { timeoutMs: 4000 }).catch(() => '');
    return /^Mode: (\S+)/m.exec(out)?.[1];
  };
  const healthy = (timeoutMs = 60_000): Promise<void> =>
    until('ZooKeeper servers did not all serve', timeoutMs, async () => {
      const modes = await Promise.all(hosts.map(mode));
      return modes.every((m) => m === 'leader' || m === 'follower');
    });
  await healthy();
  return {
    hosts,
    url: `zookeeper://${hosts.map((h) => `${ip(h)}:2181`).join(',')}${opts.query ? `?${opts.query}` : ''}`,
    urlOf: (only) => `zookeeper://${only.map((h) => `${ip(h)}:2181`).join(',')}${opts.query ? `?${opts.query}` : ''}`,
    leader: async (timeoutMs = 15_000) => {
      let found: string | undefined;
      await until('no ZooKeeper leader', timeoutMs, async () => {
        const modes = await Promise.all(hosts.map(mode));
        found = hosts[modes.indexOf('leader')];
        return found !== undefined;
      });
      return found ?? '';
    },
    healthy,
    dispose: () => removeDir(base),
  };
}

export interface LabSentinel {
  /** `redis+sentinel://s1:26379,.../mymaster` */
  readonly url: string;
  /** The host of the master as the first answering Sentinel names it. */
  master(): Promise<string>;
  /** Wait until a Sentinel names a master other than `old` and that server says ROLE master; resolves its host. */
  failedOver(old: string, timeoutMs?: number): Promise<string>;
  /** Wait until `host` is a replica with its link up (the old master after a heal). */
  replicaAgain(host: string, timeoutMs?: number): Promise<void>;
  dispose(): void;
}

/**
 * A master in `servers[0]` with the others as its replicas, and one Sentinel (port 26379,
 * quorum a majority) in each of `sentinels`: the loopback harness's sentinel.conf
 * (./redis-sentinel.ts), down-after 1000 ms, failover-timeout 5000 ms.
 */
export async function startLabSentinel(lab: Lab, servers: readonly string[], sentinels: readonly string[]): Promise<LabSentinel> {
  const bin = await ensureBinary('redis-server', 'redis-server');
  const [masterHost, ...replicaHosts] = servers;
  if (!masterHost) throw new Error('startLabSentinel: no servers');
  const ip = (h: string): string => lab.host(h).ip;
  const common = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0'];
  await startLabRedis(lab, [masterHost], common);
  await startLabRedis(lab, replicaHosts, [...common, '--replicaof', ip(masterHost), '6379', '--replica-read-only', 'no']);
  const dirs: string[] = [];
  const quorum = Math.floor(sentinels.length / 2) + 1;
  for (const h of sentinels) {
    const dir = tempDir('dlock-lab-sentinel-');
    dirs.push(dir);
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, sentinelConf({ port: 26379, bind: ip(h), dir, masterHost: ip(masterHost), masterPort: 6379, quorum, downAfterMs: 1000, failoverTimeoutMs: 5000 }));
    lab.spawn(h, bin, [conf, '--sentinel']);
  }
  const hostOf = (address: string): string | undefined => [...lab.hosts.values()].find((x) => x.ip === address)?.name;
  const master = async (): Promise<string> => {
    for (const h of sentinels) {
      const out = await redisCli(lab, h, 26379, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster']).catch(() => '');
      const found = hostOf(out.split('\n')[0] ?? '');
      if (found) return found;
    }
    throw new Error('no Sentinel named a master');
  };
  await until('the Sentinels did not all know the replicas and each other', 30_000, async () => {
    const views = await Promise.all(
      sentinels.map(async (h) => {
        const out = await redisCli(lab, h, 26379, ['SENTINEL', 'MASTER', 'mymaster']);
        const lines = out.split('\n');
        const field = (f: string): number => Number(lines[lines.indexOf(f) + 1]);
        return field('num-slaves') === replicaHosts.length && field('num-other-sentinels') === sentinels.length - 1;
      }),
    );
    return views.every(Boolean);
  });
  return {
    url: `redis+sentinel://${sentinels.map((h) => `${ip(h)}:26379`).join(',')}/mymaster`,
    master,
    failedOver: async (old, timeoutMs = 30_000) => {
      let found = old;
      await until(`no failover away from ${old}`, timeoutMs, async () => {
        found = await master();
        return found !== old && (await redisCli(lab, found, 6379, ['ROLE'])).startsWith('master');
      });
      return found;
    },
    replicaAgain: (host, timeoutMs = 30_000) =>
      until(`${host} did not become a replica again`, timeoutMs, async () => /master_link_status:up/.test(await redisCli(lab, host, 6379, ['INFO', 'replication']))),
    dispose: () => {
      for (const d of dirs) removeDir(d);
    },
  };
}
