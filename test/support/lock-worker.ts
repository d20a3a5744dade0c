/**
 * A forked lock worker (run with `--import tsx`). argv[2] is a JSON {@link WorkerSpec}.
 * Protocol: send `ready`, wait for `go` (a shared CLOCK_MONOTONIC start time), run, send
 * `done` with the log (or `held` in hold mode), exit. Dies with the parent's IPC channel.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from '../../src/connect.js';
import type { GoMessage, LogEntry, WorkerMessage, WorkerSpec } from './protocol.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as WorkerSpec;
const now = (): string => process.hrtime.bigint().toString();

function send(msg: WorkerMessage): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (!process.send) {
      reject(new Error('lock-worker must be forked with an IPC channel'));
      return;
    }
    process.send(msg, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}

function waitForGo(): Promise<bigint> {
  return new Promise<bigint>((resolve) => {
    const onMessage = (m: GoMessage): void => {
      if (m.type !== 'go') return;
      process.off('message', onMessage);
      resolve(BigInt(m.at));
    };
    process.on('message', onMessage);
  });
}

/** Sleep coarsely, then spin the last milliseconds so every worker starts at the same instant. */
async function until(at: bigint): Promise<void> {
  const ms = Number(at - process.hrtime.bigint()) / 1e6;
  if (ms > 3) await sleep(ms - 3);
  while (process.hrtime.bigint() < at) {
    // spin: at most ~3 ms
  }
}

async function loop(s: Extract<WorkerSpec, { mode: 'loop' }>): Promise<void> {
  const client = await connect(s.url);
  const log: LogEntry[] = [];
  const pid = process.pid;
  const go = waitForGo();
  await send({ type: 'ready', pid });
  await until(await go);
  for (let cycle = 0; cycle < s.cycles; cycle++) {
    log.push({ pid, op: 'lock', phase: 'request', t: now(), cycle });
    const lease = await client.acquire(s.key, { ttlMs: s.ttlMs, waitMs: s.waitMs });
    log.push({ pid, op: 'lock', phase: 'acquired', t: now(), token: lease.token.toString(), cycle });
    await sleep(s.holdMs);
    // The critical section ends here, before the release request is sent.
    const t = now();
    const stillHeld = lease.isHeld();
    const releaseOk = await lease.release();
    log.push({ pid, op: 'lock', phase: 'released', t, token: lease.token.toString(), cycle, stillHeld, releaseOk, lost: lease.signal.aborted });
  }
  await client.close();
  await send({ type: 'done', pid, log });
}

async function hold(s: Extract<WorkerSpec, { mode: 'hold' }>): Promise<void> {
  const client = await connect(s.url);
  const go = waitForGo();
  await send({ type: 'ready', pid: process.pid });
  await until(await go);
  const lease = await client.acquire(s.key, { ttlMs: s.ttlMs, renew: true, waitMs: 10_000, ...(s.admission ? { admission: s.admission } : {}) });
  lease.signal.addEventListener('abort', () => {
    const code = (lease.signal.reason as { code?: unknown } | undefined)?.code;
    void send({ type: 'lost', pid: process.pid, code: typeof code === 'string' ? code : String(lease.signal.reason), t: now() }).catch(() => undefined);
  });
  await send({ type: 'held', pid: process.pid, token: lease.token.toString(), owner: lease.owner, t: now() });
  // Hold (renewing) until SIGKILLed; the IPC channel keeps the process alive.
}

// Never outlive the test process.
process.on('disconnect', () => process.exit(3));

const main = spec.mode === 'loop' ? loop(spec) : spec.mode === 'hold' ? hold(spec) : Promise.reject(new Error(`unknown mode in ${process.argv[2]}`));
main.then(
  () => {
    if (spec.mode === 'loop') process.exit(0);
  },
  async (e: unknown) => {
    const message = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e);
    await send({ type: 'error', pid: process.pid, message }).catch(() => undefined);
    process.exit(1);
  },
);
