/**
 * doctor checks for etcd: each member's status (leader, alarms), the lease TTL the URL asks for
 * against etcd's minimum, the clock (HTTP `Date` of `/health`, whole seconds) and the round trip
 * (a range read of one key). Grants no lease: etcd's minimum TTL comes from its election timeout,
 * which no read API exposes, so it is stated, not measured (granting a lease to find out would
 * be a write).
 */
import type { Etcd3 } from 'etcd3';
import { parseEtcdUrl } from '../drivers/etcd/index.js';
import { etcd3 } from '../drivers/etcd/peer.js';
import { attempt, clockOffset, down, fail, ok, roundTrip, unreachable, warn, within, type DoctorFinding, type ResolvedDoctorOptions } from './report.js';

/** The driver's defaults (see EtcdDriverOptions). */
const DEFAULT_LEASE_TTL_S = 10;
const DEFAULT_PREFIX = 'dlock/';
/** etcd's minimum lease TTL with its default election timeout (1000 ms): ceil(1.5 x 1 s). */
const DEFAULT_MIN_TTL_S = 2;

function client(host: string, timeoutMs: number): Etcd3 {
  return new (etcd3().Etcd3)({
    hosts: [host],
    dialTimeout: timeoutMs,
    defaultCallOptions: () => ({ deadline: Date.now() + timeoutMs }),
    grpcOptions: { 'dlock.connection': `doctor-${host}` },
  });
}

/** This host's reading of the member's clock from the HTTP Date header (1 s resolution). */
async function httpDateMs(host: string, timeoutMs: number): Promise<number> {
  const res = await fetch(`${host}/health`, { signal: AbortSignal.timeout(timeoutMs) });
  await res.body?.cancel();
  const date = res.headers.get('date');
  if (!date) throw new Error('no Date header');
  // The header is truncated to the second: the middle of that second is the best estimate.
  return Date.parse(date) + 500;
}

/** gRPC's long "14 UNAVAILABLE: No connection established. Last error: ..." cut to its cause. */
function shortReason(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return /Last error: (?:Error: )?(.*?)(?:\. Resolution note|$)/.exec(text)?.[1] ?? text;
}

/** Every etcd check for `url`. */
export async function checkEtcd(url: string, opts: ResolvedDoctorOptions): Promise<DoctorFinding[]> {
  const parsed = parseEtcdUrl(url);
  const findings: DoctorFinding[] = [];
  const statuses = await Promise.all(
    parsed.hosts.map(async (host) => {
      const c = client(host, opts.timeoutMs);
      try {
        const s = await within(c.maintenance.status(), opts.timeoutMs, `etcd at ${host}`);
        return { host, status: s };
      } catch (e) {
        return { host, error: shortReason(e) };
      } finally {
        c.close();
      }
    }),
  );
  const up = statuses.filter((s) => s.status !== undefined);
  if (up.length === 0) {
    throw down(`etcd at ${parsed.hosts.join(', ')}`, [...new Set(statuses.map((s) => s.error))].join('; '));
  }
  const leaders = new Set(up.map((s) => s.status?.leader ?? '0'));
  const lines = statuses.map((s) => (s.status ? `${s.host} v${s.status.version} leader ${s.status.leader} raft term ${s.status.raftTerm}${s.status.errors.length > 0 ? ` errors: ${s.status.errors.join('; ')}` : ''}` : `${s.host} unreachable (${s.error})`));
  const withErrors = up.filter((s) => (s.status?.errors.length ?? 0) > 0);
  if (leaders.has('0') || leaders.size !== 1) {
    findings.push(fail('etcd.health', `${lines.join(', ')}: ${leaders.has('0') ? 'a member has no leader' : 'the members disagree on the leader'}`, 'Restore a majority of members: without a leader no lease can be kept alive and every lock is lost at its TTL.'));
  } else if (withErrors.length > 0 || up.length < parsed.hosts.length) {
    findings.push(warn('etcd.health', lines.join(', '), 'Bring the unreachable members back and clear the alarms (etcdctl alarm list / disarm; NOSPACE: compact and defragment).'));
  } else {
    findings.push(ok('etcd.health', lines.join(', ')));
  }

  const first = up[0]?.host ?? parsed.hosts[0] ?? '';
  const c = client(first, opts.timeoutMs);
  try {
    const alarms = await attempt(c.maintenance.alarm({ action: 'Get', memberID: 0 }));
    if ('value' in alarms && alarms.value.alarms.length > 0) {
      findings.push(fail('etcd.alarms', `alarms raised: ${alarms.value.alarms.map((a) => `${String(a.alarm)} on member ${a.memberID}`).join(', ')}: etcd refuses writes (no new lock, no lease renewal)`, 'etcdctl alarm list; for NOSPACE compact, defragment, raise --quota-backend-bytes, then etcdctl alarm disarm.'));
    } else if ('value' in alarms) {
      findings.push(ok('etcd.alarms', 'no alarm raised'));
    }

    const ttl = parsed.leaseTtlS ?? DEFAULT_LEASE_TTL_S;
    const leaseEvidence = `the URL's lease TTL is ${ttl} s; etcd raises any lease TTL below ceil(1.5 x election timeout) (${DEFAULT_MIN_TTL_S} s with the default --election-timeout 1000) without saying so; the election timeout is not readable, so the minimum is stated, not measured (granting a lease to find out would be a write)`;
    findings.push(
      ttl < DEFAULT_MIN_TTL_S
        ? warn('etcd.lease-ttl', leaseEvidence, `Use leaseTtlS=${DEFAULT_MIN_TTL_S} or more, or run the members with --election-timeout at most ${Math.floor((ttl * 1000) / 1.5)} ms.`)
        : ok('etcd.lease-ttl', leaseEvidence),
    );

    const clock = await attempt(clockOffset(() => httpDateMs(first, opts.timeoutMs), 3, 500));
    findings.push('value' in clock ? clock.value : ok('clock', `not measured: the member's /health answered no Date header (${clock.error})`));

    const probe = `${parsed.prefix ?? DEFAULT_PREFIX}doctor-probe`;
    try {
      findings.push(await roundTrip(`range reads of "${probe}" on ${first}`, () => c.get(probe).buffer(), opts));
    } catch (e) {
      throw unreachable(`etcd at ${first}`, e);
    }
    return findings;
  } finally {
    c.close();
  }
}
