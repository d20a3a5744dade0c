/**
 * Start real etcd servers (Debian package `etcd-server`, installed on demand) for tests and
 * benchmarks: a standalone member or a 3-member cluster, each member on random free loopback
 * ports (client + peer) in its own temp dir. Stopped by pid; an exit hook kills leftovers.
 *
 * The members run with a short heartbeat/election timeout (50/500 ms by default): etcd's minimum
 * lease TTL is ceil(1.5 x election timeout), so 1 s leases work (with etcd's defaults, 100/1000 ms,
 * a 1 s lease is silently raised to 2 s).
 *
 * No vitest imports: the benchmark uses this too.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';

/** One etcd process this process started. */
export interface EtcdMember {
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** `http://127.0.0.1:<clientPort>` (what etcd3 `hosts` and etcdctl `--endpoints` take). */
  readonly endpoint: string;
  /** Current pid (changes on restart). */
  readonly pid: number;
  /** Whether the process is running (not stopped/killed). */
  readonly running: boolean;
  /** SIGTERM and wait for the exit (the data dir stays, for a restart). Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL and wait for the exit (the data dir stays, for a restart). Idempotent. */
  kill9(): Promise<void>;
  /** SIGSTOP: the member keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Start again on the same ports and data dir (after stop/kill9); waits until it serves. */
  restart(): Promise<void>;
  /** GET /metrics on the client port (Prometheus text). */
  metrics(): Promise<string>;
}

/** A standalone etcd server. */
export interface EtcdServer extends EtcdMember {
  /** `etcd://127.0.0.1:<clientPort>` plus `query` given at start (for dlock's connect()). */
  readonly url: string;
  /** Stop and remove the data dir. Idempotent. */
  dispose(): Promise<void>;
}

/** A 3-member (or `size`) cluster. */
export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** `etcd://h1:p1,h2:p2,h3:p3` plus `query` given at start. */
  readonly url: string;
  /** The members' client endpoints. */
  readonly endpoints: readonly string[];
  /** The member that is leader now (asks the running members' /v3 maintenance status). */
  leader(timeoutMs?: number): Promise<EtcdMember>;
  /** Stop every member and remove the data dirs. Idempotent. */
  dispose(): Promise<void>;
}

export interface StartEtcdOptions {
  /** Heartbeat interval in ms. Default 50. */
  heartbeatMs?: number;
  /** Election timeout in ms. Default 500 (minimum lease TTL 1 s). */
  electionMs?: number;
  /** Query string (without `?`) appended to `url`, e.g. `leaseTtlS=1`. */
  query?: string;
  /** Extra etcd arguments. */
  args?: readonly string[];
  /** How long to wait for the server(s) to serve, in ms. Default 20,000. */
  readyTimeoutMs?: number;
}

/** GET a path on 127.0.0.1:port; resolves status and body, or undefined when unreachable. */
function httpGet(port: number, path: string, timeoutMs = 1000): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

/** POST a JSON body to the v3 gRPC gateway; resolves the parsed answer or undefined. */
function gatewayPost(port: number, path: string, body: unknown, timeoutMs = 1000): Promise<unknown> {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 ? (JSON.parse(text) as unknown) : undefined);
          } catch {
            resolve(undefined);
          }
        });
        res.on('error', () => resolve(undefined));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end(data);
  });
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

interface MemberSpec {
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
}

class Member implements EtcdMember {
  private readonly proc = new ServerProcess();
  private readonly logfile: string;

  constructor(
    private readonly bin: string,
    private readonly spec: MemberSpec,
    private readonly cluster: readonly MemberSpec[],
    private readonly token: string,
    private readonly opts: StartEtcdOptions,
  ) {
    this.logfile = join(spec.dir, 'etcd.log');
  }

  get name(): string {
    return this.spec.name;
  }
  get dir(): string {
    return this.spec.dir;
  }
  get clientPort(): number {
    return this.spec.clientPort;
  }
  get peerPort(): number {
    return this.spec.peerPort;
  }
  get endpoint(): string {
    return `http://127.0.0.1:${this.spec.clientPort}`;
  }
  get pid(): number {
    return this.proc.pid ?? -1;
  }
  get running(): boolean {
    return this.proc.running;
  }

  /** Spawn; 'state' is `new` on first start, `existing` on restart. */
  spawn(state: 'new' | 'existing'): void {
    const s = this.spec;
    const peer = (m: MemberSpec): string => `http://127.0.0.1:${m.peerPort}`;
    const args = [
      '--name', s.name,
      '--data-dir', join(s.dir, 'data'),
      '--listen-client-urls', this.endpoint,
      '--advertise-client-urls', this.endpoint,
      '--listen-peer-urls', peer(s),
      '--initial-advertise-peer-urls', peer(s),
      '--initial-cluster', this.cluster.map((m) => `${m.name}=${peer(m)}`).join(','),
      '--initial-cluster-state', state,
      '--initial-cluster-token', this.token,
      '--heartbeat-interval', String(this.opts.heartbeatMs ?? 50),
      '--election-timeout', String(this.opts.electionMs ?? 500),
      '--logger', 'zap',
      '--log-outputs', this.logfile,
      ...(this.opts.args ?? []),
    ];
    this.proc.adopt(spawn(this.bin, args, { stdio: 'ignore' }));
  }

  /** Resolves 'ok', 'port-taken' (bind failure), or throws with the log tail. */
  async waitServing(deadline: number, needQuorum: boolean): Promise<'ok' | 'port-taken'> {
    for (;;) {
      const c = this.proc.child;
      if (!c || c.exitCode !== null || c.signalCode !== null) {
        const log = readLog(this.logfile);
        if (/address already in use/i.test(log)) return 'port-taken';
        throw new Error(`etcd ${this.name} exited during start (code ${c?.exitCode}, signal ${c?.signalCode}):\n${log}`);
      }
      // /health answers true only once the member has a leader and serves reads.
      const health = needQuorum ? await httpGet(this.clientPort, '/health') : await httpGet(this.clientPort, '/version');
      if (health?.status === 200 && (!needQuorum || /"health":\s*"true"/.test(health.body))) return 'ok';
      if (Date.now() > deadline) {
        throw new Error(`etcd ${this.name} on port ${this.clientPort} did not serve in time:\n${readLog(this.logfile)}`);
      }
      await delay(50);
    }
  }

  stop(): Promise<void> {
    return this.proc.stop('SIGTERM', 5000);
  }
  kill9(): Promise<void> {
    return this.proc.stop('SIGKILL', 5000);
  }
  pause(): void {
    this.proc.pause();
  }
  resume(): void {
    this.proc.resume();
  }
  async restart(): Promise<void> {
    await this.stop();
    this.spawn('existing');
    const r = await this.waitServing(Date.now() + (this.opts.readyTimeoutMs ?? 20_000), true);
    if (r === 'port-taken') throw new Error(`etcd ${this.name}: its ports were taken meanwhile; cannot restart it on them.`);
  }
  async metrics(): Promise<string> {
    const r = await httpGet(this.clientPort, '/metrics', 5000);
    if (!r || r.status !== 200) throw new Error(`GET /metrics on etcd ${this.name} failed`);
    return r.body;
  }
  /** This member's id and the leader's id as it sees them (gateway, JSON), or undefined. */
  async status(): Promise<{ member: string; leader: string } | undefined> {
    const r = (await gatewayPost(this.clientPort, '/v3/maintenance/status', {})) as
      | { header?: { member_id?: string }; leader?: string }
      | undefined;
    if (!r?.header?.member_id || !r.leader) return undefined;
    return { member: r.header.member_id, leader: r.leader };
  }
}

async function specs(n: number): Promise<MemberSpec[]> {
  const out: MemberSpec[] = [];
  const ports = new Set<number>();
  const take = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!ports.has(p)) {
        ports.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < n; i++) {
    const dir = tempDir('dlock-etcd-');
    out.push({ name: `m${i}`, clientPort: await take(), peerPort: await take(), dir });
  }
  return out;
}

async function startMembers(n: number, opts: StartEtcdOptions): Promise<Member[]> {
  const bin = await ensureBinary('etcd', 'etcd-server');
  for (let attempt = 0; attempt < 8; attempt++) {
    const ss = await specs(n);
    const token = `dlock-${randomBytes(6).toString('hex')}`;
    const members = ss.map((s) => new Member(bin, s, ss, token, opts));
    for (const m of members) m.spawn('new');
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
    try {
      const results = await Promise.all(members.map((m) => m.waitServing(deadline, true)));
      if (results.every((r) => r === 'ok')) return members;
    } catch (e) {
      await Promise.all(members.map((m) => m.kill9()));
      for (const s of ss) removeDir(s.dir);
      throw e;
    }
    // A port was taken by someone else between freePort() and the bind: start over on new ports.
    await Promise.all(members.map((m) => m.kill9()));
    for (const s of ss) removeDir(s.dir);
  }
  throw new Error('Could not find free ports for etcd after 8 attempts.');
}

function withQuery(base: string, query: string | undefined): string {
  return query ? `${base}?${query}` : base;
}

/**
 * Start a standalone etcd member on random free loopback ports in a fresh temp dir and wait until
 * it serves (`/health`). If another process grabs a port first, retry with new ports.
 */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  const [m] = await startMembers(1, opts);
  if (!m) throw new Error('no etcd member');
  let disposed: Promise<void> | undefined;
  return {
    get name() {
      return m.name;
    },
    get clientPort() {
      return m.clientPort;
    },
    get peerPort() {
      return m.peerPort;
    },
    get endpoint() {
      return m.endpoint;
    },
    get pid() {
      return m.pid;
    },
    get running() {
      return m.running;
    },
    url: withQuery(`etcd://127.0.0.1:${m.clientPort}`, opts.query),
    stop: () => m.stop(),
    kill9: () => m.kill9(),
    pause: () => m.pause(),
    resume: () => m.resume(),
    restart: () => m.restart(),
    metrics: () => m.metrics(),
    dispose: () =>
      (disposed ??= (async () => {
        await m.stop();
        removeDir(m.dir);
      })()),
  };
}

/** Start a cluster of `size` (default 3) members on loopback and wait until every member serves. */
export async function startEtcdCluster(opts: StartEtcdOptions & { size?: number } = {}): Promise<EtcdCluster> {
  const members = await startMembers(opts.size ?? 3, opts);
  let disposed: Promise<void> | undefined;
  return {
    members,
    url: withQuery(`etcd://${members.map((m) => `127.0.0.1:${m.clientPort}`).join(',')}`, opts.query),
    endpoints: members.map((m) => m.endpoint),
    leader: async (timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const statuses = await Promise.all(members.map(async (m) => (m.running ? { m, s: await m.status() } : undefined)));
        const answered = statuses.filter((x): x is { m: Member; s: { member: string; leader: string } } => x?.s !== undefined);
        // A leader every running member agrees on, and that is itself running.
        const leaderId = answered[0]?.s.leader;
        const agreed = leaderId !== undefined && leaderId !== '0' && answered.every((x) => x.s.leader === leaderId);
        const leader = agreed ? answered.find((x) => x.s.member === leaderId)?.m : undefined;
        if (leader) return leader;
        if (Date.now() > deadline) throw new Error(`No etcd leader within ${timeoutMs} ms: ${JSON.stringify(answered.map((x) => x.s))}`);
        await delay(50);
      }
    },
    dispose: () =>
      (disposed ??= (async () => {
        await Promise.all(members.map((m) => m.stop()));
        for (const m of members) removeDir(m.dir);
      })()),
  };
}
