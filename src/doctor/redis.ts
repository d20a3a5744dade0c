/**
 * doctor checks for Redis: one node, Redis Cluster, Sentinel and Redlock. Reads only: PING, TIME,
 * INFO, CONFIG GET, CLUSTER INFO, SENTINEL GET-MASTER-ADDR-BY-NAME / CKQUORUM.
 */
import type { Redis } from 'ioredis';
import { quorumOf } from '../drivers/redlock/quorum.js';
import { parseRedlockUrl } from '../drivers/redlock/index.js';
import { importIoredis } from '../drivers/redis/peer.js';
import { ioredisFor, parseRedisUrl, redactUrl, type ReplicaAcks } from '../drivers/redis/url.js';
import { attempt, clockOffset, down, fail, ok, roundTrip, unreachable, warn, within, type DoctorFinding, type ResolvedDoctorOptions } from './report.js';

/** What a node's checks need to know about the URL. */
interface NodeContext {
  /** `host:port` for the evidence. */
  readonly label: string;
  /** Redlock nodes must be independent masters; replicaAcks does not apply to them. */
  readonly redlock: boolean;
  readonly replicaAcks: ReplicaAcks | undefined;
}

const tuning = (timeoutMs: number) => ({
  connectTimeout: timeoutMs,
  maxRetriesPerRequest: 0,
  lazyConnect: true,
  retryStrategy: () => null,
});

/** Connect `client` (lazyConnect) or throw {@link UnavailableError} naming `where`. */
async function connected<T extends { connect(): Promise<unknown>; on(event: string, f: (...a: unknown[]) => void): unknown; disconnect(): void }>(
  client: T,
  where: string,
  timeoutMs: number,
): Promise<T> {
  client.on('error', () => undefined);
  try {
    await within(client.connect(), timeoutMs, `Redis at ${where}`);
    return client;
  } catch (e) {
    client.disconnect();
    throw unreachable(`Redis at ${where}`, e);
  }
}

/** A plain node client (sentinels, Redlock nodes, a Sentinel's master). */
async function nodeClient(url: string, where: string, opts: ResolvedDoctorOptions): Promise<Redis> {
  const { Redis } = await importIoredis();
  return connected(new Redis(url, { ...tuning(opts.timeoutMs), enableOfflineQueue: false }), where, opts.timeoutMs);
}

/** `field:value` lines of an INFO section. */
function infoFields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return out;
}

/** CONFIG GET of several parameters, as a map (missing ones absent). */
async function configGet(c: Redis, ...names: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of names) {
    const pair = (await c.call('CONFIG', 'GET', name)) as string[];
    for (let i = 0; i + 1 < pair.length; i += 2) out.set(String(pair[i]), String(pair[i + 1]));
  }
  return out;
}

/** maxmemory-policy: lock keys must never be evicted. */
async function evictionCheck(c: Redis, ctx: NodeContext): Promise<DoctorFinding> {
  const id = 'redis.maxmemory-policy';
  const read = await attempt(configGet(c, 'maxmemory-policy', 'maxmemory'));
  if ('error' in read) {
    return warn(id, `${ctx.label}: CONFIG GET refused (${read.error}), so the eviction policy is unknown`, 'Check that maxmemory-policy is noeviction (with your provider if CONFIG is disabled).');
  }
  const policy = read.value.get('maxmemory-policy') ?? '?';
  const limit = Number(read.value.get('maxmemory') ?? '0');
  const fix = 'CONFIG SET maxmemory-policy noeviction (and in redis.conf): a full server then refuses new locks with an OOM error instead of dropping held ones.';
  if (policy === 'noeviction') return ok(id, `${ctx.label}: maxmemory-policy noeviction (maxmemory ${limit}): a full server refuses writes, it never drops a lock key`);
  const victims = policy.startsWith('volatile-')
    ? 'volatile-* policies evict keys that carry a TTL, and every lock key carries one: locks are the first keys to go'
    : 'allkeys-* policies evict any key, lock keys included';
  if (limit === 0) {
    return warn(id, `${ctx.label}: maxmemory-policy ${policy} with maxmemory 0 (no limit): nothing is evicted today, but ${victims} as soon as a limit is set`, fix);
  }
  return fail(id, `${ctx.label}: maxmemory-policy ${policy} with maxmemory ${limit} bytes: ${victims}; an evicted lock is free for a second holder while the first still works`, fix);
}

/** appendonly / appendfsync: what a restarted node still knows. */
async function persistenceCheck(c: Redis, ctx: NodeContext): Promise<DoctorFinding> {
  const id = 'redis.persistence';
  const read = await attempt(configGet(c, 'appendonly', 'appendfsync'));
  if ('error' in read) return warn(id, `${ctx.label}: CONFIG GET refused (${read.error}), so persistence is unknown`, 'Check that appendonly is yes and appendfsync always.');
  const aof = read.value.get('appendonly');
  const fsync = read.value.get('appendfsync');
  const loses = ctx.redlock
    ? 'a Redlock node restarted without its data can grant a lock another owner holds through the other nodes, and repeat a fencing token'
    : 'after a restart the node has forgotten held locks, and fencing tokens and id counters can go back';
  const fix = ctx.redlock
    ? 'Set appendonly yes and appendfsync always on every node; or keep a crashed node down longer than the longest TTL before restarting it (locks stay safe, tokens do not).'
    : 'Set appendonly yes and appendfsync always if tokens or ids must survive a restart.';
  if (aof !== 'yes') return warn(id, `${ctx.label}: appendonly ${aof ?? '?'}: ${loses}`, fix);
  if (fsync === 'always') return ok(id, `${ctx.label}: appendonly yes, appendfsync always: every acknowledged write survives a crash`);
  const window = fsync === 'everysec' ? 'the last second of writes' : 'the writes the OS has not flushed yet (up to about 30 s)';
  return warn(id, `${ctx.label}: appendonly yes, appendfsync ${fsync ?? '?'}: a crash loses ${window}; ${loses}`, fix);
}

/** Role and replicas: a replica refuses writes; replicas without replicaAcks can lose grants on failover. */
async function replicationChecks(c: Redis, ctx: NodeContext): Promise<DoctorFinding[]> {
  const info = infoFields((await c.info('replication')));
  const role = info.get('role') ?? '?';
  if (role !== 'master') {
    return [fail('redis.role', `${ctx.label}: role ${role} (a read-only replica of ${info.get('master_host') ?? '?'}:${info.get('master_port') ?? '?'}): every acquisition fails`, 'Point the URL at the master (or use redis+sentinel:// to follow it).')];
  }
  const replicas = Number(info.get('connected_slaves') ?? '0');
  const found = [ok('redis.role', `${ctx.label}: role master`)];
  if (ctx.redlock) {
    found.push(
      replicas > 0
        ? warn('redis.replicas', `${ctx.label}: ${replicas} replica(s) connected: Redlock counts nodes, not copies; a failover to a replica that missed a grant forgets it`, 'Run each Redlock node as an independent master without failover.')
        : ok('redis.replicas', `${ctx.label}: no replica (an independent node, as Redlock expects)`),
    );
    return found;
  }
  const acks = ctx.replicaAcks?.replicas;
  if (acks === undefined) {
    found.push(
      replicas > 0
        ? warn('redis.replicas', `${ctx.label}: ${replicas} replica(s) connected and the URL has no replicaAcks: replication is asynchronous, so a failover can promote a replica that never saw a grant, and the lock has two holders`, 'Add ?replicaAcks=1 to the URL (WAIT for a replica after each grant and renewal), or use Redlock for locks that must survive a failover.')
        : ok('redis.replicas', `${ctx.label}: no replica connected (nothing to fail over to)`),
    );
  } else if (replicas < acks) {
    found.push(fail('redis.replicas', `${ctx.label}: replicaAcks=${acks} but only ${replicas} replica(s) connected: every grant waits for acknowledgements that cannot all come`, `Lower replicaAcks to at most ${replicas}, or bring the replicas back.`));
  } else {
    found.push(ok('redis.replicas', `${ctx.label}: ${replicas} replica(s) connected, the URL waits for ${acks} after each grant`));
  }
  return found;
}

/** The engine's clock from TIME (seconds, microseconds). */
async function timeMs(c: Redis): Promise<number> {
  const [s, us] = (await c.call('TIME')) as [string, string];
  return Number(s) * 1000 + Number(us) / 1000;
}

/** Every check of one data node. */
async function nodeChecks(c: Redis, ctx: NodeContext, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const read = async (): Promise<DoctorFinding[]> => [
    ...(await replicationChecks(c, ctx)),
    await evictionCheck(c, ctx),
    await persistenceCheck(c, ctx),
    await clockOffset(() => timeMs(c)),
    await roundTrip(`PINGs to ${ctx.label}`, () => c.ping(), opts),
  ];
  try {
    return await read();
  } catch (e) {
    throw unreachable(`Redis at ${ctx.label}`, e);
  }
}

function hostOf(url: string): string {
  return /^[a-z+]+:\/\/(?:[^@/]*@)?([^/?#]+)/i.exec(url)?.[1] ?? redactUrl(url);
}

async function redlockChecks(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parseRedlockUrl(url);
  const quorum = quorumOf(parsed.nodes.length);
  const perNode = await Promise.all(
    parsed.nodes.map(async (nodeUrl): Promise<{ label: string; findings: DoctorFinding[]; reachable: boolean }> => {
      const label = hostOf(nodeUrl);
      let c: Redis | undefined;
      try {
        c = await nodeClient(nodeUrl, label, opts);
        return { label, reachable: true, findings: await nodeChecks(c, { label, redlock: true, replicaAcks: undefined }, opts) };
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        return { label, reachable: false, findings: [fail('redlock.node', `${label}: unreachable (${why})`, 'Start the node, or fix its address in the URL.')] };
      } finally {
        c?.disconnect();
      }
    }),
  );
  const up = perNode.filter((n) => n.reachable).length;
  if (up === 0) throw down(`Redis at ${perNode.map((n) => n.label).join(', ')}`, 'no Redlock node answered');
  const summary =
    up >= quorum
      ? up === parsed.nodes.length
        ? ok('redlock.quorum', `${up} of ${parsed.nodes.length} nodes answer (quorum ${quorum})`)
        : warn('redlock.quorum', `${up} of ${parsed.nodes.length} nodes answer (quorum ${quorum}): one more failure and no lock can be granted`, 'Bring the unreachable nodes back.')
      : fail('redlock.quorum', `${up} of ${parsed.nodes.length} nodes answer, the quorum is ${quorum}: no lock can be granted`, 'Bring the unreachable nodes back.');
  return [summary, ...perNode.flatMap((n) => n.findings)];
}

async function sentinelChecks(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parseRedisUrl(url);
  if (parsed.kind !== 'sentinel') throw new Error('unreachable: not a sentinel URL');
  const findings: DoctorFinding[] = [];
  const masters = new Set<string>();
  let answered = 0;
  for (const s of parsed.sentinels) {
    const label = `${s.host}:${s.port}`;
    let c: Redis | undefined;
    try {
      c = await nodeClient(`redis://${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`, label, opts);
      answered += 1;
      const addr = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', parsed.name)) as [string, string] | null;
      if (addr) masters.add(`${addr[0]}:${addr[1]}`);
      const q = await attempt(c.call('SENTINEL', 'CKQUORUM', parsed.name) as Promise<string>);
      findings.push(
        'value' in q
          ? ok('sentinel.quorum', `sentinel ${label}: ${q.value}`)
          : fail('sentinel.quorum', `sentinel ${label}: ${q.error}`, 'Run enough Sentinels to reach the quorum (and a majority to authorize a failover), and check that they see each other.'),
      );
    } catch (e) {
      findings.push(warn('sentinel.reachable', `sentinel ${label}: unreachable (${e instanceof Error ? e.message : String(e)})`, 'Start it or remove it from the URL.'));
    } finally {
      c?.disconnect();
    }
  }
  if (answered === 0) throw down(`Redis Sentinel at ${parsed.sentinels.map((s) => `${s.host}:${s.port}`).join(', ')}`, 'no Sentinel answered');
  if (masters.size !== 1) {
    findings.push(fail('sentinel.master', masters.size === 0 ? `no Sentinel knows a master named "${parsed.name}"` : `the Sentinels disagree on the master: ${[...masters].join(', ')}`, 'Check the master name in the URL and the Sentinels\' configuration.'));
    return findings;
  }
  const [master = ''] = [...masters];
  findings.push(ok('sentinel.master', `master "${parsed.name}" is ${master}`));
  const [host, port] = [master.slice(0, master.lastIndexOf(':')), master.slice(master.lastIndexOf(':') + 1)];
  const { Redis } = await importIoredis();
  let c: Redis;
  try {
    c = await connected(
      new Redis({ ...tuning(opts.timeoutMs), enableOfflineQueue: false, host, port: Number(port), db: parsed.db, ...(parsed.username !== undefined ? { username: parsed.username } : {}), ...(parsed.password !== undefined ? { password: parsed.password } : {}) }),
      master,
      opts.timeoutMs,
    );
  } catch (e) {
    findings.push(fail('sentinel.master-reachable', `the master ${master} does not answer (${e instanceof Error ? e.message : String(e)})`, 'Check the master (Sentinel fails over only once it is down for down-after-milliseconds), and that this host can reach the address Sentinel announces.'));
    return findings;
  }
  try {
    findings.push(...(await nodeChecks(c, { label: master, redlock: false, replicaAcks: parsed.replicaAcks }, opts)));
  } finally {
    c.disconnect();
  }
  return findings;
}

async function clusterChecks(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parseRedisUrl(url);
  const where = parsed.kind === 'cluster' ? parsed.nodes.map((n) => `${n.host}:${n.port}`).join(',') : redactUrl(url);
  const { client } = await ioredisFor(parsed, tuning(opts.timeoutMs));
  const cluster = await connected(client as unknown as import('ioredis').Cluster, where, opts.timeoutMs);
  try {
    const findings: DoctorFinding[] = [];
    const info = infoFields((await within(cluster.call('CLUSTER', 'INFO') as Promise<string>, opts.timeoutMs, `Redis Cluster at ${where}`)));
    const state = info.get('cluster_state') ?? '?';
    const assigned = Number(info.get('cluster_slots_assigned') ?? '0');
    const failing = Number(info.get('cluster_slots_fail') ?? '0') + Number(info.get('cluster_slots_pfail') ?? '0');
    const evidence = `cluster_state ${state}, ${assigned} of 16384 slots assigned, ${failing} failing, ${info.get('cluster_known_nodes') ?? '?'} nodes known`;
    findings.push(
      state === 'ok' && assigned === 16384 && failing === 0
        ? ok('cluster.state', evidence)
        : fail('cluster.state', `${evidence}: keys in uncovered or failing slots cannot be locked`, 'Fix the cluster (redis-cli --cluster check / fix): every slot must be served by a reachable master.'),
    );
    for (const node of cluster.nodes('master')) {
      const label = `${node.options.host ?? '?'}:${node.options.port ?? '?'}`;
      findings.push(...(await nodeChecks(node, { label, redlock: false, replicaAcks: parsed.replicaAcks }, opts)));
    }
    return findings;
  } finally {
    cluster.disconnect();
  }
}

/** Every Redis check for `url` (redis://, rediss://, redis+cluster://, redis+sentinel://, redlock://). */
export async function checkRedis(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  if (/^redlock:/i.test(url)) return redlockChecks(url, opts);
  const parsed = parseRedisUrl(url);
  if (parsed.kind === 'sentinel') return sentinelChecks(url, opts);
  if (parsed.kind === 'cluster') return clusterChecks(url, opts);
  const label = hostOf(url);
  const c = await nodeClient(parsed.url, label, opts);
  try {
    return await nodeChecks(c, { label, redlock: false, replicaAcks: parsed.replicaAcks }, opts);
  } finally {
    c.disconnect();
  }
}
