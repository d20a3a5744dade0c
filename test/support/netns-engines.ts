/**
 * Engines inside a network lab (./netns.ts), for the partition tests (no vitest imports): each
 * server runs in its own lab host on its standard port (every namespace has its own ports, so
 * nothing is hunted for), bound to the host's lab address, data in a temp dir. Binaries come from
 * the same Debian packages as the loopback harnesses (./etcd.ts, ./redis.ts) through
 * ensureBinary; processes are the lab's (stopped by pid on dispose). Health and leader questions
 * are asked from inside the lab with the engines' own CLIs (`etcdctl`, `redis-cli`), since the
 * test process lives outside it.
 */
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ensureBinary } from './debian.js';
import type { Lab } from './netns.js';
import type { ServerProcess } from './processes.js';
import { removeDir, tempDir } from './processes.js';

/** Poll `probe` every 100 ms until it resolves true; throw `what` after `timeoutMs`. */
async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
    await delay(100);
  }
}

export interface LabRedis {
  readonly host: string;
  /** `redis://<ip>:6379` */
  readonly url: string;
  readonly hostPort: string;
  readonly proc: ServerProcess;
}

/** Start one redis-server per host (in parallel), each on `<ip>:6379`; resolves once every one answers PING. */
export async function startLabRedis(lab: Lab, hosts: readonly string[], args: readonly string[] = []): Promise<LabRedis[]> {
  const bin = await ensureBinary('redis-server', 'redis-server');
  const cli = await ensureBinary('redis-cli', 'redis-tools');
  return Promise.all(
    hosts.map(async (host) => {
      const ip = lab.host(host).ip;
      const proc = lab.spawn(host, bin, ['--bind', ip, '--port', '6379', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning', ...args]);
      await until(`redis-server in ${host} did not answer PING`, 15_000, async () => {
        if (!proc.running) throw new Error(`redis-server in ${host} exited`);
        return (await lab.exec(host, cli, ['-h', ip, '-p', '6379', 'ping'], { timeoutMs: 2000 })).trim() === 'PONG';
      });
      return { host, url: `redis://${ip}:6379`, hostPort: `${ip}:6379`, proc };
    }),
  );
}

export interface LabEtcd {
  readonly hosts: readonly string[];
  /** `etcd://ip1:2379,ip2:2379,ip3:2379` plus the query given. */
  readonly url: string;
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
