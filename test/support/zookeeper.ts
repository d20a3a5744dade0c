/**
 * Real ZooKeeper servers from the Debian package `zookeeper` (installed on demand), started
 * directly with java + QuorumPeerMain and a generated zoo.cfg, on random free loopback ports, in
 * temp dirs. Standalone (one server) or an ensemble (3 servers by default). No vitest imports:
 * the benchmarks use it too.
 *
 * Settings for tests: tickTime 200 ms (so sessions may be as short as 400 ms: minSessionTimeout
 * is 2 ticks), maxSessionTimeout 60 s, the admin server off (it would take port 8080), the four
 * letter words srvr/stat/ruok/mntr/cons on (readiness and leader discovery), a 96 MB heap, and
 * no fsync of the transaction log unless asked (tests, not durability: a process killed with
 * kill -9 loses nothing the kernel already has).
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fourLetter as sendFourLetter } from '../../src/doctor/zookeeper.js';
import { ensureBinary } from './debian.js';
import { freePort } from './ports.js';
import { removeDir, ServerProcess, tempDir } from './processes.js';

const ZK_SERVER_SH = '/usr/share/zookeeper/bin/zkServer.sh';
const ZK_JAR = '/usr/share/java/zookeeper.jar';
/** A logging backend for slf4j, so that the server's log says why it failed (optional). */
const SLF4J_SIMPLE = '/usr/share/java/slf4j-simple.jar';

/** One ZooKeeper server process this process started. */
export interface ZooKeeperServer {
  /** `myid` (1 for a standalone server). */
  readonly id: number;
  readonly clientPort: number;
  /** `zookeeper://127.0.0.1:PORT` (this server only). */
  readonly url: string;
  /** Pid of the running java process (changes after `restart()`). */
  readonly pid: number;
  readonly dataDir: string;
  /** SIGTERM, wait for the exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, wait for the exit. Idempotent. */
  kill9(): Promise<void>;
  /** Start again on the same ports with the same data (after stop/kill9). */
  restart(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Whether the process is running. */
  readonly running: boolean;
  /** `standalone`, `leader`, `follower`, or undefined when it does not serve. */
  mode(): Promise<string | undefined>;
  /** Tail of the server log (for failure messages). */
  log(): string;
}

/** Servers started together; `stop()` stops them all and removes their temp dirs. */
export interface ZooKeeperCluster {
  readonly servers: readonly ZooKeeperServer[];
  /** `host:port,host:port,...` */
  readonly connectionString: string;
  /** `zookeeper://host:port,host:port,...` (add `?sessionTimeoutMs=...` as needed). */
  readonly url: string;
  /** The server that reports `Mode: leader` (standalone: the only server), waiting up to `timeoutMs`. */
  leader(timeoutMs?: number): Promise<ZooKeeperServer>;
  /** Wait until every running server serves (reports a mode). */
  waitServing(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartZooKeeperOptions {
  /** Number of servers: 1 (standalone, default) or an ensemble (3, 5...). */
  servers?: number;
  /** tickTime in ms. Default 200. */
  tickTimeMs?: number;
  /** How long to wait until every server serves, in ms. Default 60,000. */
  readyTimeoutMs?: number;
  /** fsync the transaction log before acknowledging writes (ZooKeeper's default). Default false. */
  forceSync?: boolean;
  /** Four letter words the servers answer. Default srvr, stat, ruok, mntr, cons. */
  fourLetterWords?: readonly string[];
}

/** Send a four letter word to 127.0.0.1:port; resolves the answer ('' when refused or silent). */
export function fourLetter(port: number, word: string, timeoutMs = 2000): Promise<string> {
  return sendFourLetter('127.0.0.1', port, word, timeoutMs);
}

/** `Mode: ...` from `srvr`; `ruok` answers before the server serves, so it is not enough. */
async function modeOf(port: number): Promise<string | undefined> {
  return /^Mode: (\S+)/m.exec(await fourLetter(port, 'srvr'))?.[1];
}

export interface Ports {
  client: number;
  quorum: number;
  election: number;
}

async function freePorts(n: number): Promise<Ports[]> {
  const seen = new Set<number>();
  const next = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!seen.has(p)) {
        seen.add(p);
        return p;
      }
    }
  };
  const out: Ports[] = [];
  for (let i = 0; i < n; i++) out.push({ client: await next(), quorum: await next(), election: await next() });
  return out;
}

/** The four letter words the test servers answer unless told otherwise. */
export const DEFAULT_WORDS = ['srvr', 'stat', 'ruok', 'mntr', 'cons'];

/**
 * zoo.cfg for one server of `all`. `addresses[i]` is where server i listens (default: loopback
 * for every server; the partition lab gives each its own namespace address).
 */
export function config(
  dataDir: string,
  ports: Ports,
  all: readonly Ports[],
  tickTimeMs: number,
  forceSync: boolean,
  words: readonly string[],
  addresses: readonly string[] = all.map(() => '127.0.0.1'),
): string {
  const lines = [
    `tickTime=${tickTimeMs}`,
    'initLimit=20',
    'syncLimit=10',
    `dataDir=${dataDir}`,
    `clientPort=${ports.client}`,
    `clientPortAddress=${addresses[all.indexOf(ports)] ?? '127.0.0.1'}`,
    `minSessionTimeout=${tickTimeMs * 2}`,
    'maxSessionTimeout=60000',
    'admin.enableServer=false',
    `4lw.commands.whitelist=${words.join(',')}`,
    'maxClientCnxns=0',
    `forceSync=${forceSync ? 'yes' : 'no'}`,
    // Keep a long run from filling the temp dir with snapshots.
    'autopurge.snapRetainCount=3',
    'autopurge.purgeInterval=1',
  ];
  if (all.length > 1) {
    all.forEach((p, i) => lines.push(`server.${i + 1}=${addresses[i] ?? '127.0.0.1'}:${p.quorum}:${p.election}`));
  }
  return `${lines.join('\n')}\n`;
}

/** The java arguments that run one server from `cfgFile` (a small heap, fast start). */
export function javaArgs(cfgFile: string): string[] {
  const classpath = [ZK_JAR, ...(existsSync(SLF4J_SIMPLE) ? [SLF4J_SIMPLE] : [])].join(':');
  return [
    '-Xmx96m',
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Djava.net.preferIPv4Stack=true',
    '-Dzookeeper.admin.enableServer=false',
    '-Dorg.slf4j.simpleLogger.showDateTime=true',
    '-cp',
    classpath,
    'org.apache.zookeeper.server.quorum.QuorumPeerMain',
    cfgFile,
  ];
}

function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

class Server implements ZooKeeperServer {
  private readonly proc = new ServerProcess();
  private readonly logFile: string;
  private readonly cfgFile: string;

  constructor(
    readonly id: number,
    readonly clientPort: number,
    readonly dataDir: string,
    private readonly java: string,
    cfg: string,
  ) {
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'myid'), `${id}\n`);
    this.cfgFile = join(dataDir, 'zoo.cfg');
    writeFileSync(this.cfgFile, cfg);
    this.logFile = join(dataDir, 'zookeeper.log');
  }

  get url(): string {
    return `zookeeper://127.0.0.1:${this.clientPort}`;
  }

  get pid(): number {
    const pid = this.proc.pid;
    if (pid === undefined) throw new Error(`ZooKeeper server ${this.id} is not running`);
    return pid;
  }

  get running(): boolean {
    return this.proc.running;
  }

  spawn(): void {
    const fd = openSync(this.logFile, 'a');
    this.proc.adopt(spawn(this.java, javaArgs(this.cfgFile), { stdio: ['ignore', fd, fd] }));
    closeSync(fd);
  }

  async mode(): Promise<string | undefined> {
    if (!this.running) return undefined;
    return modeOf(this.clientPort);
  }

  log(): string {
    return tail(this.logFile);
  }

  /** Whether the log says a port was taken (then the caller retries elsewhere). */
  portTaken(): boolean {
    return /Address already in use|BindException/i.test(tail(this.logFile, 200));
  }

  stop(): Promise<void> {
    return this.proc.stop('SIGTERM', 10_000);
  }

  kill9(): Promise<void> {
    return this.proc.stop('SIGKILL', 10_000);
  }

  async restart(): Promise<void> {
    if (this.running) throw new Error(`ZooKeeper server ${this.id} is still running`);
    this.spawn();
    const deadline = Date.now() + 60_000;
    while ((await this.mode()) === undefined) {
      if (!this.running) throw new Error(`ZooKeeper server ${this.id} exited during restart:\n${this.log()}`);
      if (Date.now() > deadline) throw new Error(`ZooKeeper server ${this.id} did not serve after restart:\n${this.log()}`);
      await delay(50);
    }
  }

  pause(): void {
    this.proc.pause();
  }

  resume(): void {
    this.proc.resume();
  }
}

async function startOnce(java: string, n: number, tickTimeMs: number, readyTimeoutMs: number, forceSync: boolean, words: readonly string[]): Promise<ZooKeeperCluster | 'port-taken'> {
  const base = tempDir('dlock-zookeeper-');
  const ports = await freePorts(n);
  const servers = ports.map((p, i) => new Server(i + 1, p.client, join(base, `server-${i + 1}`), java, config(join(base, `server-${i + 1}`), p, ports, tickTimeMs, forceSync, words)));
  for (const s of servers) s.spawn();
  const stopAll = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
    removeDir(base);
  };
  const connectionString = servers.map((s) => `127.0.0.1:${s.clientPort}`).join(',');
  const waitServing = async (timeoutMs = readyTimeoutMs): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = servers.filter((s) => s.running);
      const modes = await Promise.all(live.map((s) => s.mode()));
      if (modes.every((m) => m !== undefined)) return;
      if (Date.now() > deadline) {
        throw new Error(`ZooKeeper servers did not serve within ${timeoutMs} ms (modes ${JSON.stringify(modes)}):\n${live.map((s) => s.log()).join('\n---\n')}`);
      }
      await delay(50);
    }
  };
  try {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (servers.some((s) => s.portTaken())) {
        await stopAll();
        return 'port-taken';
      }
      const dead = servers.find((s) => !s.running);
      if (dead) throw new Error(`ZooKeeper server ${dead.id} exited during start:\n${dead.log()}`);
      const modes = await Promise.all(servers.map((s) => s.mode()));
      if (modes.every((m) => m !== undefined)) break;
      if (Date.now() > deadline) throw new Error(`ZooKeeper did not serve within ${readyTimeoutMs} ms:\n${servers.map((s) => s.log()).join('\n---\n')}`);
      await delay(50);
    }
  } catch (e) {
    await stopAll();
    throw e;
  }
  return {
    servers,
    connectionString,
    url: `zookeeper://${connectionString}`,
    waitServing,
    leader: async (timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const s of servers) {
          const m = await s.mode();
          if (m === 'leader' || m === 'standalone') return s;
        }
        if (Date.now() > deadline) throw new Error(`No ZooKeeper leader within ${timeoutMs} ms`);
        await delay(50);
      }
    },
    stop: stopAll,
  };
}

/**
 * Start ZooKeeper: one standalone server, or an ensemble of `servers` (each with its own client,
 * quorum and election port), and wait until every server serves. If a port is taken before a
 * server binds it, start again on new ports.
 */
export async function startZooKeeper(opts: StartZooKeeperOptions = {}): Promise<ZooKeeperCluster> {
  await ensureBinary('zkServer.sh', 'zookeeper', [ZK_SERVER_SH]);
  const java = await ensureBinary('java', 'zookeeper');
  for (let attempt = 0; attempt < 6; attempt++) {
    const cluster = await startOnce(java, opts.servers ?? 1, opts.tickTimeMs ?? 200, opts.readyTimeoutMs ?? 60_000, opts.forceSync ?? false, opts.fourLetterWords ?? DEFAULT_WORDS);
    if (cluster !== 'port-taken') return cluster;
  }
  throw new Error('Could not find free ports for ZooKeeper after 6 attempts.');
}

/** A plain client for tests that act on znodes behind the driver's back. */
export interface ZooKeeperAdmin {
  /** Children of `path`; [] when it does not exist. */
  children(path: string): Promise<string[]>;
  /** Delete `path` (any version). */
  remove(path: string): Promise<void>;
  close(): Promise<void>;
}

/** Connect a plain node-zookeeper-client to `connectionString` and wait until it is connected. */
export async function zooKeeperAdmin(connectionString: string): Promise<ZooKeeperAdmin> {
  const zk = await import('node-zookeeper-client');
  const client = zk.createClient(connectionString, { sessionTimeout: 10_000, spinDelay: 100 });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`admin client: no connection to ${connectionString}`)), 30_000);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
  return {
    children: (path) =>
      new Promise((resolve, reject) =>
        client.getChildren(path, (e, children) => {
          if (e && e instanceof zk.Exception && e.getCode() === zk.Exception.NO_NODE) resolve([]);
          else if (e) reject(e instanceof Error ? e : new Error(e.toString()));
          else resolve(children);
        }),
      ),
    remove: (path) => new Promise((resolve, reject) => client.remove(path, -1, (e) => (e ? reject(e instanceof Error ? e : new Error(e.toString())) : resolve()))),
    close: () =>
      new Promise<void>((resolve) => {
        client.once('disconnected', () => resolve());
        client.close();
        setTimeout(resolve, 2000).unref();
      }),
  };
}
