/**
 * A lock client for the partition tests, run inside a lab host (test/support/netns.ts) with
 * `ip netns exec`: it does what the test process asks over IPC and appends every step to a
 * JSON-lines history file, each line stamped with `process.hrtime.bigint()` (CLOCK_MONOTONIC is
 * one clock for every process on the machine, namespaces included, so lines of different
 * workers and of the test process compare).
 * argv: host lockUrl historyFile counterUrl counterId ttlMs
 * Requests (each with an `id`, answered by `{type:'reply', id, ...}`):
 * - `acquire {key, waitMs, primitive?, permits?}` (a mutex by default; `read`/`write` of a
 *   read-write lock; `permits` of a semaphore of PARTITION_PERMITS): `request`, then `grant {token}` or `deny {code}`; after a grant the
 *   lease's signal is watched: `lost {code, validUntil}` (also sent to the parent as `{type:'lost'}`);
 *   `validUntil` is the lease's local deadline as last read (every 50 ms) while it held;
 * - `write`: a fenced write of the last granted lease's token to the shared resource (a Redis hash
 *   through FencedRedisHash, outside the partition): `write {token, accepted}`. It writes even if
 *   the lease was lost: the resource must be the one that says no;
 * - `release`: `release {ok}` (false when it was lost meanwhile);
 * - `modes`: the driver's admission modes (`info.modes`);
 * - `close`: closes the client and exits.
 */
import { appendFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { connect } from '../../src/connect.js';
import type { Lease } from '../../src/core/lease.js';
import { FencedRedisHash } from '../../src/drivers/redis/index.js';
import { isDlockError } from '../../src/index.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { PARTITION_PERMITS, type HistoryLine, type PartitionHold } from './partition-history.js';

const [host = '', lockUrl = '', historyFile = '', counterUrl = '', counterId = '', ttlArg = '2000'] = process.argv.slice(2);

const now = (): string => process.hrtime.bigint().toString();
const record = (line: Omit<HistoryLine, 'host'>): HistoryLine => {
  const full = { host, ...line };
  appendFileSync(historyFile, `${JSON.stringify(full)}\n`);
  return full;
};
const send = (m: unknown): void => {
  process.send?.(m);
};
const codeOf = (e: unknown): string => (isDlockError(e) ? e.code : e instanceof Error ? e.name : String(e));

// The parent is gone: nothing to report to.
process.on('disconnect', () => process.exit(3));
const raw = new Redis(counterUrl, { maxRetriesPerRequest: 1 });
raw.on('error', () => undefined);
const resource = new FencedRedisHash(raw, `fence-res:${counterId}`);
const locks = await connect(lockUrl, { ttlMs: Number(ttlArg) });
// The client's own account of the partition (session state, failed requests), for diagnosis.
locks.events.on('session', (e) => record({ t: now(), ev: 'event', code: `session ${e.state}` }));
locks.events.on('unavailable', (e) => record({ t: now(), ev: 'event', key: e.key, code: `unavailable ${e.operation}: ${codeOf(e.error)}` }));
locks.events.on('renewal-failed', (e) => record({ t: now(), ev: 'event', key: e.key, code: `renewal-failed: ${codeOf(e.error)}` }));
let lease: Lease | undefined;
/** The last lease granted, released or not: a write uses its token (a stale write on purpose). */
let last: Lease | undefined;

/** One hold of `what` on `key`. */
function take(key: string, waitMs: number, what: Partial<PartitionHold>): Promise<Lease> {
  switch (what.primitive ?? 'mutex') {
    case 'mutex':
      return locks.acquire(key, { waitMs });
    case 'read':
      return new ReadWriteLock(locks, key).read.acquire({ waitMs });
    case 'write':
      return new ReadWriteLock(locks, key).write.acquire({ waitMs });
    case 'semaphore':
      return new Semaphore(locks, key, { permits: PARTITION_PERMITS }).acquire({ waitMs, permits: what.permits ?? 1 });
  }
}

const handle = async (m: { cmd: string; key?: string; waitMs?: number } & Partial<PartitionHold>): Promise<Record<string, unknown>> => {
  switch (m.cmd) {
    case 'modes':
      return { modes: locks.driver.info.modes ?? ['exclusive'] };
    case 'acquire': {
      const key = m.key ?? 'k';
      record({ t: now(), ev: 'request', key });
      try {
        const l = await take(key, m.waitMs ?? 10_000, m);
        lease = l;
        last = l;
        const g = record({ t: now(), ev: 'grant', key, token: l.token.toString() });
        // The lease's local deadline on the hrtime clock, read while it holds: the 'lost' line
        // carries it, since on a loaded machine the abort (a timer) can fire after the deadline.
        const validUntil = (): string => (process.hrtime.bigint() + BigInt(l.remainingMs()) * 1_000_000n).toString();
        let lastValid = validUntil();
        const poll = setInterval(() => {
          if (l.isHeld()) lastValid = validUntil();
          else clearInterval(poll);
        }, 50);
        poll.unref();
        const onLost = (): void => {
          clearInterval(poll);
          const reason: unknown = l.signal.reason;
          const line = record({ t: now(), ev: 'lost', key, token: l.token.toString(), code: codeOf(reason), validUntil: lastValid });
          send({ type: 'lost', line });
        };
        if (l.signal.aborted) onLost();
        else l.signal.addEventListener('abort', onLost, { once: true });
        return { granted: true, line: g };
      } catch (e) {
        return { granted: false, line: record({ t: now(), ev: 'deny', key, code: codeOf(e) }) };
      }
    }
    case 'write': {
      const w = last;
      if (!w) throw new Error('write before any grant');
      const sentAt = now();
      let accepted = true;
      try {
        await resource.write(w.token, { by: host, token: w.token.toString() });
      } catch (e) {
        if (!isDlockError(e) || e.code !== 'DLOCK_STALE_TOKEN') throw e;
        accepted = false;
      }
      return { accepted, line: record({ t: now(), ev: 'write', key: w.key, token: w.token.toString(), accepted, sentAt }) };
    }
    case 'release': {
      if (!lease) throw new Error('release without a lease');
      const l = lease;
      lease = undefined;
      // The critical section ends here, before the release request is sent.
      const sentAt = now();
      const ok = await l.release().catch(() => false);
      return { ok, line: record({ t: now(), ev: 'release', key: l.key, token: l.token.toString(), ok, sentAt }) };
    }
    case 'state':
      return { held: lease?.isHeld() ?? false, aborted: lease?.signal.aborted ?? false };
    case 'close':
      await locks.close();
      raw.disconnect();
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown command ${m.cmd}`);
  }
};

process.on('message', (m: { id: number; cmd: string }) => {
  handle(m).then(
    (r) => send({ type: 'reply', id: m.id, ...r }),
    (e: unknown) => send({ type: 'reply', id: m.id, error: String(e instanceof Error ? (e.stack ?? e.message) : e) }),
  );
});
send({ type: 'ready' });
