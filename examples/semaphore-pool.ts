/**
 * A worker pool bounded by a semaphore: at most 3 calls to a partner API at once, however many
 * workers (here 12 tasks; across processes and hosts the bound holds the same).
 *
 *   DLOCK_URL=redis://127.0.0.1:6379 npx tsx examples/semaphore-pool.ts
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, Semaphore } from 'dlock';

const locks = await connect(process.env.DLOCK_URL ?? 'redis://127.0.0.1:6379');
const partnerApi = new Semaphore(locks, 'partner-api', { permits: 3 });

let running = 0;
let peak = 0;
async function callPartner(job: number, signal: AbortSignal): Promise<void> {
  running++;
  peak = Math.max(peak, running);
  try {
    await sleep(50 + (job % 4) * 25, undefined, { signal }); // the call; abandoned if the permit is lost
  } finally {
    running--;
  }
}

const jobs = Array.from({ length: 12 }, (_, i) => i);
await Promise.all(jobs.map((job) => partnerApi.using({ waitMs: 30_000 }, (permit) => callPartner(job, permit.signal))));
console.log(`${jobs.length} jobs done, at most ${peak} at once (permits: 3)`);
await locks.close();
