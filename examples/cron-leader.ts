/**
 * A cron job run by one process of a fleet: every process runs this same program, one is elected
 * leader and runs the job every 200 ms; when it stops (SIGTERM, crash, lost lock) another takes
 * over. The term number (a fencing token) goes with each run, so a deposed leader's late writes can
 * be rejected downstream.
 *
 *   DLOCK_URL=redis://127.0.0.1:6379 npx tsx examples/cron-leader.ts     # on each host; Ctrl-C to stop
 *
 * CRON_RUNS=N makes a process step down and exit after leading N runs (for the demo and the test).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, LeaderElection } from 'dlock';

const locks = await connect(process.env.DLOCK_URL ?? 'redis://127.0.0.1:6379');
const election = new LeaderElection(locks, 'leader:nightly-cleanup', { ttlMs: 5_000 });
const runs = Number(process.env.CRON_RUNS ?? Infinity);
const stop = new AbortController();
process.once('SIGTERM', () => stop.abort());
process.once('SIGINT', () => stop.abort());

async function cleanup(term: bigint): Promise<void> {
  const start = Date.now();
  await sleep(50); // the job: pass `term` to the store so that an older term's writes are refused
  console.log(`run term=${term} pid=${process.pid} start=${start} end=${Date.now()}`);
}

let done = 0;
await election.lead(async (term, signal) => {
  while (!signal.aborted && done < runs) {
    await cleanup(term.token);
    done++;
    await sleep(200, undefined, { signal }).catch(() => undefined); // next tick, or the term ended
  }
  if (done >= runs) stop.abort(); // demo: step down and exit
}, { signal: stop.signal });
await locks.close();
