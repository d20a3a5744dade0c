/**
 * A private network of Linux network namespaces for partition tests (no vitest imports).
 *
 * One lab = one hub namespace holding a bridge, and one namespace per host, each joined to the
 * bridge by a veth pair created inside the hub (the host's own namespace never sees an
 * interface, a route or a rule of ours). Hosts get 10.77.0.<10+i>/24 on their `eth0`; those
 * addresses exist only inside the lab, so two labs (two test files, two runs) never clash.
 *
 * A partition is an nftables table in the hub's bridge: frames between hosts on different sides
 * are dropped in the bridge's forward hook, in both directions, silently (a black hole, as a cut
 * cable or a dead switch port looks to TCP: no RST, no ICMP, no EPERM on send). Hosts named on no
 * side keep talking to everyone (a fenced resource outside the fault). Heal deletes the table.
 *
 * Every name is unique per run (`dlk<pid><4 hex>-<host>`); processes run inside a host with
 * `ip netns exec` (the same pid: ip execs the command) and are stopped by pid through
 * {@link ServerProcess}. {@link Lab.dispose} stops them and deletes the namespaces (which removes
 * the veths and the rules); an exit hook does the same if a test failed before, and a new lab
 * first removes the namespaces of labs whose creating process is gone (a run killed with -9).
 * Needs root, `ip` (iproute2) and `nft` (nftables): {@link netnsSupport} says what is missing.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { which } from './debian.js';
import { ServerProcess } from './processes.js';

const run = promisify(execFile);
const PREFIX = 'dlk';
const SUBNET = '10.77.0';

/** Whether this machine can build labs; `reason` says what is missing (for a skip's name). */
export interface NetnsSupport {
  readonly ok: boolean;
  readonly reason: string;
}

let support: NetnsSupport | undefined;

/** Probe once (synchronously, for `describe.skipIf`): root, `ip`, `nft`, and a namespace with a bridge forward table. */
export function netnsSupport(): NetnsSupport {
  if (support) return support;
  const no = (reason: string): NetnsSupport => (support = { ok: false, reason });
  if (process.platform !== 'linux') return no(`network namespaces need Linux (this is ${process.platform})`);
  if (process.getuid?.() !== 0) return no('network namespaces need root (uid 0); CI runs as root');
  if (!which('ip')) return no('no `ip` on PATH (apt-get install -y iproute2)');
  if (!which('nft')) return no('no `nft` on PATH (apt-get install -y nftables)');
  const probe = `${PREFIX}${process.pid}probe${randomBytes(2).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['-n', probe, 'link', 'add', 'br0', 'type', 'bridge'], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'exec', probe, 'nft', '-f', '-'], { input: 'table bridge t {\n chain f {\n type filter hook forward priority 0; policy accept;\n }\n}\n', stdio: 'pipe' });
  } catch (e) {
    return no(`cannot build a namespace with a bridge and an nftables bridge table here: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`);
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    } catch {
      // never made
    }
  }
  return (support = { ok: true, reason: '' });
}

/** One host of a lab. */
export interface LabHost {
  /** The name the test gave it. */
  readonly name: string;
  /** Its namespace (`ip netns exec <ns> ...`). */
  readonly ns: string;
  /** Its address inside the lab. */
  readonly ip: string;
}

export interface Lab {
  readonly id: string;
  readonly hosts: ReadonlyMap<string, LabHost>;
  host(name: string): LabHost;
  /**
   * Cut the network between the sides: no frame passes between hosts on different sides (a host
   * may appear on one side only). Hosts on no side still reach everyone. Replaces any partition.
   */
  partition(sides: ReadonlyArray<readonly string[]>): Promise<void>;
  /** Cut `names` off from every other host except `keep` (e.g. a fenced resource). */
  isolate(names: readonly string[], keep?: readonly string[]): Promise<void>;
  /** Remove the partition. Idempotent. */
  heal(): Promise<void>;
  /** Start a long-running process inside `host`; stop it with `stop(proc)` or dispose(). */
  spawn(host: string, cmd: string, args: readonly string[], opts?: SpawnOptions): ServerProcess;
  /** Run a command to completion inside `host`; resolves its stdout, rejects on a non-zero exit or timeout. */
  exec(host: string, cmd: string, args: readonly string[], opts?: { timeoutMs?: number; input?: string }): Promise<string>;
  /** Stop every process, delete every namespace. Idempotent. */
  dispose(): Promise<void>;
}

/** Namespaces of every lab this process made and has not disposed (for the exit hook). */
const liveNamespaces = new Set<string>();
let hooked = false;

function deleteNamespace(ns: string): void {
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
  } catch {
    // gone already
  }
  liveNamespaces.delete(ns);
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // processes.ts kills the children in its own exit hook; the namespaces go here.
  process.on('exit', () => {
    for (const ns of [...liveNamespaces]) deleteNamespace(ns);
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove namespaces left by labs whose process died without its exit hook (kill -9): the name
 * carries the creator's pid. Their processes are killed first (the namespace lives on while one
 * runs). Only names of our own pattern, only when that pid is gone.
 */
async function removeStale(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const re = new RegExp(`^(${PREFIX}(\\d+)[0-9a-f]{4}-\\S+)`);
  for (const line of stdout.split('\n')) {
    const m = re.exec(line.trim());
    if (!m?.[1] || !m[2] || pidAlive(Number(m[2]))) continue;
    const pids = await run('ip', ['netns', 'pids', m[1]]).then((r) => r.stdout.split(/\s+/).filter(Boolean).map(Number), () => []);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
    deleteNamespace(m[1]);
  }
}

/** `ip` inside namespace `ns`. */
const ipIn = (ns: string, args: readonly string[]): Promise<unknown> => run('ip', ['-n', ns, ...args]);

/** nft script for the hub: drop bridged IPv4 (and ARP, so no answer leaks) between sides. */
export function partitionRules(sides: ReadonlyArray<readonly LabHost[]>): string {
  const lines = ['table bridge dlock_partition {', '  chain forward {', '    type filter hook forward priority 0; policy accept;'];
  for (const [i, a] of sides.entries()) {
    for (const [j, b] of sides.entries()) {
      if (i === j || a.length === 0 || b.length === 0) continue;
      const from = a.map((h) => h.ip).join(', ');
      const to = b.map((h) => h.ip).join(', ');
      lines.push(`    ip saddr { ${from} } ip daddr { ${to} } drop`);
      lines.push(`    arp saddr ip { ${from} } arp daddr ip { ${to} } drop`);
    }
  }
  lines.push('  }', '}');
  return lines.join('\n');
}

/** Build a lab with these hosts (names: letters, digits, dashes; at most 9). */
export async function createLab(names: readonly string[]): Promise<Lab> {
  const s = netnsSupport();
  if (!s.ok) throw new Error(`Cannot build a network lab: ${s.reason}.`);
  if (names.length === 0 || names.length > 200 || new Set(names).size !== names.length) throw new Error('createLab: give 1-200 distinct host names.');
  hookExit();
  await removeStale();
  const id = `${PREFIX}${process.pid}${randomBytes(2).toString('hex')}`;
  const hub = `${id}-hub`;
  const hosts = new Map<string, LabHost>();
  names.forEach((name, i) => {
    if (!/^[a-z0-9-]+$/i.test(name)) throw new Error(`createLab: bad host name "${name}".`);
    hosts.set(name, { name, ns: `${id}-${name}`, ip: `${SUBNET}.${10 + i}` });
  });
  const procs = new Set<ServerProcess>();
  let partitioned = false;
  let disposed: Promise<void> | undefined;

  const make = async (ns: string): Promise<void> => {
    await run('ip', ['netns', 'add', ns]);
    liveNamespaces.add(ns);
    await ipIn(ns, ['link', 'set', 'lo', 'up']);
  };
  const dispose = (): Promise<void> =>
    (disposed ??= (async () => {
      await Promise.all([...procs].map((p) => p.stop('SIGTERM', 3000)));
      procs.clear();
      for (const h of hosts.values()) deleteNamespace(h.ns);
      deleteNamespace(hub);
    })());

  try {
    await make(hub);
    await ipIn(hub, ['link', 'add', 'br0', 'type', 'bridge']);
    await ipIn(hub, ['link', 'set', 'br0', 'up']);
    let i = 0;
    for (const h of hosts.values()) {
      await make(h.ns);
      const port = `p${i++}`;
      // Both ends made inside the hub; one end moves straight into the host's namespace.
      await ipIn(hub, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      await ipIn(hub, ['link', 'set', port, 'master', 'br0']);
      await ipIn(hub, ['link', 'set', port, 'up']);
      await ipIn(h.ns, ['addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
      await ipIn(h.ns, ['link', 'set', 'eth0', 'up']);
    }
  } catch (e) {
    await dispose();
    throw e;
  }

  const host = (name: string): LabHost => {
    const h = hosts.get(name);
    if (!h) throw new Error(`No host "${name}" in this lab (hosts: ${[...hosts.keys()].join(', ')}).`);
    return h;
  };
  const applyRules = async (sides: ReadonlyArray<readonly string[]>): Promise<void> => {
    const seen = new Set<string>();
    for (const n of sides.flat()) {
      if (seen.has(n)) throw new Error(`partition: host "${n}" is on two sides.`);
      seen.add(n);
    }
    const script = partitionRules(sides.map((side) => side.map(host)));
    if (partitioned) await run('ip', ['netns', 'exec', hub, 'nft', 'delete', 'table', 'bridge', 'dlock_partition']);
    partitioned = false;
    const child = execFile('ip', ['netns', 'exec', hub, 'nft', '-f', '-']);
    const done = new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nft failed (${code}): ${err}\n${script}`))));
      child.on('error', reject);
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(script);
    await done;
    partitioned = true;
  };

  return {
    id,
    hosts,
    host,
    partition: applyRules,
    isolate: (cut, keep = []) => {
      const rest = [...hosts.keys()].filter((n) => !cut.includes(n) && !keep.includes(n));
      return applyRules([cut, rest]);
    },
    heal: async () => {
      if (!partitioned) return;
      await run('ip', ['netns', 'exec', hub, 'nft', 'delete', 'table', 'bridge', 'dlock_partition']);
      partitioned = false;
    },
    spawn: (name, cmd, args, opts = {}) => {
      const p = new ServerProcess();
      const child: ChildProcess = spawn('ip', ['netns', 'exec', host(name).ns, cmd, ...args], { stdio: 'ignore', ...opts });
      p.adopt(child);
      procs.add(p);
      return p;
    },
    exec: async (name, cmd, args, opts = {}) => {
      const child = execFile('ip', ['netns', 'exec', host(name).ns, cmd, ...args], { timeout: opts.timeoutMs ?? 10_000, maxBuffer: 16 * 1024 * 1024 });
      const out = new Promise<string>((resolve, reject) => {
        let stdout = '';
        let stderr = '';
        child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('exit', (code, signal) => (code === 0 ? resolve(stdout) : reject(new Error(`${cmd} ${args.join(' ')} in ${name}: exit ${code ?? signal}: ${stderr.trim()}`))));
        child.on('error', reject);
      });
      // The command may exit before it reads its input (EPIPE): its exit code tells what happened.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(opts.input ?? '');
      return out;
    },
    dispose,
  };
}
