/**
 * uncontended: `loops` async loops in one process, each on its own key, acquire + release as fast
 * as they can. One instance per library (its connection is shared by the loops, as an
 * application would share it).
 *
 * Other people's jobs come and go on these machines within seconds, so a repetition does not run
 * each library for `seconds` in one go: it cuts the time into slices of `sliceSeconds` and runs
 * the libraries round-robin, slice by slice (the order rotated every round). Each library gets
 * `seconds` in total, and every library sees the same mix of background load.
 */
import type { Locker, LibSpec } from './libs.js';
import { between, rotate, snapshot, type ServerMonitor } from './support.js';

export interface UncontendedOptions {
  loops: number;
  seconds: number;
  sliceSeconds: number;
  warmupSeconds: number;
}

export interface UncontendedResult {
  cyclesPerSecond: number;
  commandsPerCycle: number;
  clientCpuPct: number;
  serverCpuPct: number;
}

interface Totals {
  cycles: number;
  seconds: number;
  commands: number;
  clientCpuSeconds: number;
  serverCpuSeconds: number;
}

/** Run `loops` loops on `keys` for `ms`; resolves the cycles completed (all loops drained). */
async function cycleFor(locker: Locker, keys: readonly string[], ms: number): Promise<number> {
  let stop = false;
  let cycles = 0;
  const timer = setTimeout(() => (stop = true), ms);
  await Promise.all(
    keys.map(async (key) => {
      while (!stop) {
        const held = await locker.acquire(key);
        await held.release();
        cycles++;
      }
    }),
  );
  clearTimeout(timer);
  return cycles;
}

/** One repetition over every library in `specs`; results by library id. */
export async function uncontendedRep(
  specs: readonly LibSpec[],
  url: string,
  monitor: ServerMonitor,
  opts: UncontendedOptions,
  rep: number,
): Promise<Map<string, UncontendedResult>> {
  const lockers = new Map<string, Locker>();
  try {
    for (const spec of specs) lockers.set(spec.id, await spec.create(url));
    const keys = new Map(specs.map((s) => [s.id, Array.from({ length: opts.loops }, (_, i) => `bench:unc:${s.id}:r${rep}:${i}`)]));
    const totals = new Map<string, Totals>(
      specs.map((s) => [s.id, { cycles: 0, seconds: 0, commands: 0, clientCpuSeconds: 0, serverCpuSeconds: 0 }]),
    );
    for (const spec of rotate(specs, rep)) {
      await cycleFor(lockers.get(spec.id) as Locker, keys.get(spec.id) ?? [], opts.warmupSeconds * 1000);
    }
    const slices = Math.max(1, Math.round(opts.seconds / opts.sliceSeconds));
    for (let slice = 0; slice < slices; slice++) {
      for (const spec of rotate(specs, rep + slice)) {
        const a = await snapshot(monitor);
        const cycles = await cycleFor(lockers.get(spec.id) as Locker, keys.get(spec.id) ?? [], (opts.seconds / slices) * 1000);
        const b = await snapshot(monitor);
        const d = between(a, b);
        const t = totals.get(spec.id) as Totals;
        t.cycles += cycles;
        t.seconds += d.seconds;
        t.commands += d.commands;
        t.clientCpuSeconds += (d.clientCpuPct / 100) * d.seconds;
        t.serverCpuSeconds += (d.serverCpuPct / 100) * d.seconds;
      }
    }
    return new Map(
      [...totals].map(([id, t]) => [
        id,
        {
          cyclesPerSecond: t.cycles / t.seconds,
          commandsPerCycle: t.commands / t.cycles,
          clientCpuPct: (100 * t.clientCpuSeconds) / t.seconds,
          serverCpuPct: (100 * t.serverCpuSeconds) / t.seconds,
        },
      ]),
    );
  } finally {
    await Promise.all([...lockers.values()].map((l) => l.close()));
  }
}
