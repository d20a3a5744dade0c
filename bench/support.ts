/**
 * Shared helpers of the benchmarks: a private redis-server, engine counters (INFO stats, the
 * server's CPU from /proc), statistics and the table printer.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { startRedis, type RedisServer } from '../test/support/redis.js';

export { delay };

/** A redis-server started for one benchmark run (random free loopback port, temp dir, no persistence). */
export async function startServer(): Promise<RedisServer> {
  return startRedis({ args: ['--save', '', '--appendonly', 'no', '--loglevel', 'warning'] });
}

/** Nanoseconds on CLOCK_MONOTONIC (comparable between processes on one Linux host). */
export const now = (): bigint => process.hrtime.bigint();
/** Milliseconds between two {@link now} readings. */
export const msBetween = (a: bigint, b: bigint): number => Number(b - a) / 1e6;

/**
 * Engine-side counters, read on a connection of its own. `commands()` returns
 * `total_commands_processed`, minus the INFO calls this monitor made itself. Redis 7 also counts
 * the commands a Lua script runs (an EVALSHA running GET + DEL counts 3).
 */
export class ServerMonitor {
  private readonly conn: Redis;
  private infoCalls = 0;
  private readonly ticksPerSecond = 100; // USER_HZ on Linux
  constructor(
    url: string,
    private readonly pid: number,
  ) {
    this.conn = new Redis(url, { maxRetriesPerRequest: 1 });
  }

  async commands(): Promise<number> {
    const info = await this.conn.info('stats');
    this.infoCalls += 1;
    const m = /total_commands_processed:(\d+)/.exec(info);
    if (!m?.[1]) throw new Error('INFO stats has no total_commands_processed');
    // The INFO being answered is counted after its reply: earlier INFOs are in the total.
    return Number(m[1]) - (this.infoCalls - 1);
  }

  /**
   * `INFO commandstats` as calls per command (lower case; Lua-internal calls count, as in
   * `total_commands_processed`). The INFO calls of this monitor are included under `info`.
   */
  async commandStats(): Promise<Map<string, number>> {
    const info = await this.conn.info('commandstats');
    this.infoCalls += 1;
    const out = new Map<string, number>();
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1] ?? '?', Number(m[2]));
    return out;
  }

  /** CPU seconds the server has used (user + system), from /proc/<pid>/stat. */
  cpuSeconds(): number {
    const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / this.ticksPerSecond;
  }

  async close(): Promise<void> {
    await this.conn.quit().catch(() => this.conn.disconnect());
  }
}

/** A point-in-time snapshot of the counters a throughput measurement needs. */
export interface Snapshot {
  t: bigint;
  commands: number;
  serverCpu: number;
  clientCpu: NodeJS.CpuUsage;
}

export async function snapshot(monitor: ServerMonitor): Promise<Snapshot> {
  const commands = await monitor.commands();
  return { t: now(), commands, serverCpu: monitor.cpuSeconds(), clientCpu: process.cpuUsage() };
}

/** Elapsed seconds, commands, and server/client CPU% between two snapshots. */
export function between(
  a: Snapshot,
  b: Snapshot,
): { seconds: number; commands: number; serverCpuPct: number; clientCpuPct: number } {
  const seconds = Number(b.t - a.t) / 1e9;
  const clientUs = b.clientCpu.user - a.clientCpu.user + (b.clientCpu.system - a.clientCpu.system);
  return {
    seconds,
    commands: b.commands - a.commands,
    serverCpuPct: (100 * (b.serverCpu - a.serverCpu)) / seconds,
    clientCpuPct: (100 * clientUs) / 1e6 / seconds,
  };
}

/** The q-quantile (0..1) of sorted values, nearest-rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

export function median(values: readonly number[]): number {
  const s = [...values].filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** Median and range of one figure over the repetitions. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  reps: number[];
}

export function spread(values: readonly number[]): Spread {
  const ok = values.filter((v) => !Number.isNaN(v));
  return {
    median: median(ok),
    min: ok.length ? Math.min(...ok) : Number.NaN,
    max: ok.length ? Math.max(...ok) : Number.NaN,
    reps: [...values],
  };
}

/** Significant-ish formatting: 3 figures below 100, integers above. */
export function fmt(v: number, digits = 3): string {
  if (Number.isNaN(v)) return '-';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a === 0) return '0';
  return Number(v.toPrecision(digits)).toString();
}

/** `median [min–max]`, or just the value when every repetition agrees. */
export function fmtSpread(s: Spread, suffix = '', digits = 3): string {
  if (Number.isNaN(s.median)) return '-';
  const m = fmt(s.median, digits) + suffix;
  if (s.reps.length < 2) return m;
  const lo = fmt(s.min, digits);
  const hi = fmt(s.max, digits);
  return lo === hi ? m : `${m} [${lo}–${hi}]`;
}

/** A plain-text table with right-aligned figures. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The order of the libraries in repetition `rep`: rotated by one each time. */
export function rotate<T>(items: readonly T[], rep: number): T[] {
  const k = rep % Math.max(1, items.length);
  return [...items.slice(k), ...items.slice(0, k)];
}

/**
 * Flags for a forked benchmark worker: this process's loader flags (tsx), without a profiler's;
 * with `DLOCK_BENCH_WORKER_PROFILE=<dir>`, every worker writes a CPU profile there
 * (bench/profile-summary.ts reads it).
 */
export function workerExecArgv(): string[] {
  const argv = process.execArgv.filter((a) => !a.startsWith('--cpu-prof') && !a.startsWith('--prof'));
  const dir = process.env['DLOCK_BENCH_WORKER_PROFILE'];
  return dir ? [...argv, '--cpu-prof', `--cpu-prof-dir=${dir}`] : argv;
}
