/**
 * A forked process of the `semaphore` and `rwlock` scenarios (bench/admission.ts): loops over one
 * key until told time, and reports its cycles, its longest wait and any over-admission it saw.
 */
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { Semaphore as PeerSemaphore } from 'redis-semaphore';
import type { DlockSource } from './libs.js';

export interface AdmissionJob {
  readonly lib: 'dlock-semaphore' | 'redis-semaphore' | 'dlock-rwlock' | 'dlock-mutex' | 'floor-rwlock' | 'floor-mutex';
  /**
   * Concurrent loops in this process (1 unless set). The floor rows run every loop in one process
   * on dlock's in-process engine (`memory:`), so that a lock operation costs no round trip and no
   * wake-up of another process: what the mix allows when locking is free.
   */
  readonly loops?: number;
  readonly url: string;
  /** dlock's engine when not `url`'s Redis (the counters stay on `url`). */
  readonly lockUrl?: string | undefined;
  readonly key: string;
  readonly permits: number;
  readonly readPct: number;
  readonly holdMs: number;
  readonly seconds: number;
  readonly dlock: DlockSource;
}

export interface AdmissionDone {
  readonly reads: number;
  readonly writes: number;
  readonly maxWaitMs: number;
  /** Times a holder saw more than `permits` holders inside (semaphore) or anyone beside a writer. */
  readonly overAdmitted: number;
  /** CPU (user + system, µs) this process spent in its loops. */
  readonly cpuUs: number;
  /** Context switches (voluntary + involuntary) of this process during its loops. */
  readonly switches: number;
}

type Dlock = typeof import('../src/index.js');

async function run(job: AdmissionJob): Promise<AdmissionDone> {
  const dl = (await (job.dlock === 'src' ? import('../src/index.js') : import(new URL('../dist/esm/index.js', import.meta.url).href))) as Dlock;
  const probe = new Redis(job.url);
  const peer = new Redis(job.url);
  const floor = job.lib.startsWith('floor');
  const client = job.lib.startsWith('dlock') || floor ? await dl.connect(floor ? 'memory:' : (job.lockUrl ?? job.url), { ttlMs: 10_000 }) : undefined;
  const inside = `${job.key}:inside`;
  const writing = `${job.key}:writing`;
  let reads = 0;
  let writes = 0;
  let maxWaitMs = 0;
  let overAdmitted = 0;
  const until = performance.now() + job.seconds * 1000;
  const section = async (write: boolean): Promise<void> => {
    const n = await probe.incr(inside);
    // Readers of the rwlock have no limit; semaphore holders have `permits`.
    const limit = job.lib === 'dlock-semaphore' || job.lib === 'redis-semaphore' ? job.permits : Number.POSITIVE_INFINITY;
    if (write ? n > 1 : n > limit) overAdmitted += 1;
    if (write) await probe.set(writing, '1');
    else if ((await probe.get(writing)) === '1') overAdmitted += 1;
    await sleep(job.holdMs);
    if (write) await probe.del(writing);
    await probe.decr(inside);
  };
  const mutex = job.lib === 'dlock-mutex' || job.lib === 'floor-mutex';
  const loop = async (): Promise<void> => {
    while (performance.now() < until) {
      const write = job.lib === 'dlock-rwlock' || mutex || job.lib === 'floor-rwlock' ? Math.random() * 100 >= job.readPct : false;
      const t0 = performance.now();
      if (job.lib === 'redis-semaphore') {
        const s = new PeerSemaphore(peer, job.key, job.permits, { lockTimeout: 10_000, acquireTimeout: 120_000 });
        await s.acquire();
        maxWaitMs = Math.max(maxWaitMs, performance.now() - t0);
        await section(false);
        await s.release();
      } else if (job.lib === 'dlock-semaphore') {
        const l = await new dl.Semaphore(client!, job.key, { permits: job.permits }).acquire({ waitMs: 120_000 });
        maxWaitMs = Math.max(maxWaitMs, performance.now() - t0);
        await section(false);
        await l.release();
      } else {
        const side = mutex ? undefined : new dl.ReadWriteLock(client!, job.key)[write ? 'write' : 'read'];
        const l = side ? await side.acquire({ waitMs: 120_000 }) : await client!.acquire(job.key, { waitMs: 120_000 });
        maxWaitMs = Math.max(maxWaitMs, performance.now() - t0);
        // The mutex holds alone whatever the cycle is: count it as the writer it is.
        await section(mutex ? true : write);
        await l.release();
      }
      if (write) writes += 1;
      else reads += 1;
    }
  };
  const cpu0 = process.cpuUsage();
  const ru0 = process.resourceUsage();
  await Promise.all(Array.from({ length: job.loops ?? 1 }, loop));
  const cpu = process.cpuUsage(cpu0);
  const ru = process.resourceUsage();
  const cpuUs = cpu.user + cpu.system;
  const switches = ru.voluntaryContextSwitches - ru0.voluntaryContextSwitches + ru.involuntaryContextSwitches - ru0.involuntaryContextSwitches;
  await client?.close();
  probe.disconnect();
  peer.disconnect();
  return { reads, writes, maxWaitMs, overAdmitted, cpuUs, switches };
}

process.once('message', (job: AdmissionJob) => {
  run(job).then(
    (r) => process.send?.({ ok: true, ...r }, () => process.exit(0)),
    (e: unknown) => process.send?.({ ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) }, () => process.exit(1)),
  );
});
