/**
 * Redlock rows: dlock's Redlock driver against node-redlock (4.2.0 and 5.0.0-beta.2) on the SAME
 * 3 independent redis-servers, in the same run, with the same method as bench/uncontended.ts
 * (cycles/s of 64 loops on their own keys, time-sliced round-robin) and bench/handoff.ts
 * (release -> waiter's acquire resolving, at a random phase of a poller's retry period).
 *
 *   import { runRedlockBench, printRedlockBench } from './redlock.js';
 *   const rows = await runRedlockBench({ reps, seconds, loops, handoffs, idleMs, source, log });
 *   printRedlockBench(rows, json);
 *
 * or on its own: `npx tsx bench/redlock.ts [--src] [--json] [--reps N] [--seconds S] [--handoffs N]`.
 * Commands are summed over the 3 nodes (INFO stats of each); a Redlock operation costs at least
 * one command per node.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import Redlock4 from 'redlock';
import Redlock5Untyped from 'redlock5';
import type Redlock5Typed from '../node_modules/redlock5/dist/index.js';
import { startRedlock, type RedlockNodes } from '../test/support/redlock.js';
import { handoffOnce, type HandoffResult } from './handoff.js';
import { TTL_MS, type LibSpec, type Locker } from './libs.js';
import { ServerMonitor, fmt, fmtSpread, rotate, spread, table, type Spread } from './support.js';
import { uncontendedRep, type UncontendedResult } from './uncontended.js';

const Redlock5 = Redlock5Untyped as typeof Redlock5Typed;

type DlockCore = typeof import('../src/index.js');
type DlockRedlock = typeof import('../src/drivers/redlock/index.js');

export interface RedlockBenchOptions {
  reps: number;
  /** Seconds per library per repetition of 'uncontended'. */
  seconds: number;
  /** Async loops of 'uncontended'. Default 64. */
  loops?: number;
  /** Timed handoffs per library per repetition. */
  handoffs: number;
  /** How long the lock is held while measuring an idle waiter, ms. */
  idleMs: number;
  /** Load dlock from the built dist/ (default) or from src/ through tsx. */
  source?: 'dist' | 'src';
  /** Progress lines (stderr in bench/main.ts). */
  log?: (line: string) => void;
}

export interface RedlockBenchRow {
  scenario: 'redlock-uncontended' | 'redlock-handoff';
  library: string;
  id: string;
  figures: Record<string, Spread>;
}

/** INFO stats and CPU summed over every node (a ServerMonitor on node 1, extended to all). */
class NodesMonitor extends ServerMonitor {
  private readonly conns: Redis[];
  private infos = 0;
  constructor(private readonly nodes: RedlockNodes) {
    const first = nodes.nodes[0];
    if (!first?.pid) throw new Error('no running node');
    super(first.url, first.pid);
    this.conns = nodes.nodes.map((n) => new Redis(n.url, { maxRetriesPerRequest: 1 }));
  }
  override async commands(): Promise<number> {
    this.infos += 1;
    let total = 0;
    for (const c of this.conns) {
      const m = /total_commands_processed:(\d+)/.exec(await c.info('stats'));
      total += Number(m?.[1] ?? Number.NaN);
    }
    // Each node counted our earlier INFO calls on it.
    return total - this.conns.length * (this.infos - 1);
  }
  override cpuSeconds(): number {
    let s = 0;
    for (const n of this.nodes.nodes) {
      const stat = readFileSync(`/proc/${n.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      s += (Number(f[11]) + Number(f[12])) / 100;
    }
    return s;
  }
  override async close(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.quit().catch(() => c.disconnect())));
    await super.close();
  }
}

function nodeUrls(redlockUrl: string): string[] {
  return redlockUrl.replace(/^redlock:\/\//, '').split(',').map((h) => `redis://${h}`);
}

async function connectAll(redlockUrl: string): Promise<Redis[]> {
  return Promise.all(
    nodeUrls(redlockUrl).map(async (u) => {
      const r = new Redis(u, { lazyConnect: true });
      r.on('error', () => undefined);
      await r.connect();
      return r;
    }),
  );
}

async function quitAll(rs: readonly Redis[]): Promise<void> {
  await Promise.all(rs.map((r) => r.quit().catch(() => r.disconnect())));
}

function specs(source: 'dist' | 'src'): LibSpec[] {
  let modules: Promise<[DlockCore, DlockRedlock]> | undefined;
  const load = (): Promise<[DlockCore, DlockRedlock]> =>
    (modules ??=
      source === 'dist'
        ? Promise.all([
            import(new URL('../dist/esm/index.js', import.meta.url).href) as Promise<DlockCore>,
            import(new URL('../dist/esm/drivers/redlock/index.js', import.meta.url).href) as Promise<DlockRedlock>,
          ])
        : Promise.all([import('../src/index.js'), import('../src/drivers/redlock/index.js')]));
  const both = ['handoff', 'uncontended'] as const;
  return [
    {
      id: 'dlock-redlock',
      name: 'dlock redlock://',
      pollMs: 0,
      scenarios: both,
      async create(url): Promise<Locker> {
        const [{ LockClient }, { RedlockDriver }] = await load();
        const client = new LockClient(new RedlockDriver({ url }), { ttlMs: TTL_MS });
        return { acquire: (key) => client.acquire(key), close: () => client.close() };
      },
    },
    {
      id: 'redlock4-3',
      name: 'redlock@4.2.0 (3 nodes)',
      pollMs: 300,
      scenarios: both,
      async create(url): Promise<Locker> {
        const clients = await connectAll(url);
        // Defaults: retryDelay 200 ms, retryJitter 100 ms; retryCount -1 = retry forever.
        const redlock = new Redlock4(clients, { retryCount: -1 });
        redlock.on('clientError', () => undefined);
        return {
          acquire: (key) => redlock.lock(key, TTL_MS).then((lock) => ({ release: () => lock.unlock() })),
          close: () => quitAll(clients),
        };
      },
    },
    {
      id: 'redlock5-3',
      name: 'redlock@5.0.0-beta.2 (3 nodes)',
      pollMs: 300,
      scenarios: both,
      async create(url): Promise<Locker> {
        const clients = await connectAll(url);
        const redlock = new Redlock5(clients, { retryCount: -1 });
        return {
          acquire: (key) => redlock.acquire([key], TTL_MS).then((lock) => ({ release: () => lock.release() })),
          close: () => quitAll(clients),
        };
      },
    },
  ];
}

/** Start 3 nodes, run both scenarios for every library `reps` times (order rotated), stop the nodes. */
export async function runRedlockBench(opts: RedlockBenchOptions): Promise<RedlockBenchRow[]> {
  const log = opts.log ?? (() => undefined);
  const libs = specs(opts.source ?? 'dist');
  const nodes = await startRedlock({ nodes: 3, args: ['--loglevel', 'warning'] });
  const monitor = new NodesMonitor(nodes);
  try {
    const unc = new Map<string, UncontendedResult[]>(libs.map((l) => [l.id, []]));
    const hand = new Map<string, HandoffResult[]>(libs.map((l) => [l.id, []]));
    for (let rep = 0; rep < opts.reps; rep++) {
      const r = await uncontendedRep(libs, nodes.url, monitor, { loops: opts.loops ?? 64, seconds: opts.seconds, sliceSeconds: 1, warmupSeconds: 0.5 }, rep);
      for (const [id, res] of r) {
        unc.get(id)?.push(res);
        log(`  [redlock uncontended ${rep + 1}/${opts.reps}] ${id.padEnd(16)} ${fmt(res.cyclesPerSecond)} cycles/s, ${fmt(res.commandsPerCycle)} cmd/cycle`);
      }
      for (const spec of rotate(libs, rep)) {
        const h = await handoffOnce(spec, nodes.url, monitor, { handoffs: opts.handoffs, warmup: 5, idleMs: opts.idleMs }, `redlock-r${rep}`);
        hand.get(spec.id)?.push(h);
        log(`  [redlock handoff ${rep + 1}/${opts.reps}] ${spec.id.padEnd(16)} p50 ${fmt(h.p50)} ms  p90 ${fmt(h.p90)} ms`);
      }
    }
    const rows: RedlockBenchRow[] = [];
    const base = 'redlock4-3';
    for (const l of libs) {
      const u = unc.get(l.id) ?? [];
      const b = unc.get(base) ?? [];
      rows.push({
        scenario: 'redlock-uncontended',
        library: l.name,
        id: l.id,
        figures: {
          cyclesPerSecond: spread(u.map((x) => x.cyclesPerSecond)),
          vsRedlock4: spread(u.map((x, i) => x.cyclesPerSecond / (b[i]?.cyclesPerSecond ?? Number.NaN))),
          commandsPerCycle: spread(u.map((x) => x.commandsPerCycle)),
          clientCpuPct: spread(u.map((x) => x.clientCpuPct)),
          serverCpuPct: spread(u.map((x) => x.serverCpuPct)),
        },
      });
    }
    for (const l of libs) {
      const h = hand.get(l.id) ?? [];
      rows.push({
        scenario: 'redlock-handoff',
        library: l.name,
        id: l.id,
        figures: {
          p50: spread(h.map((x) => x.p50)),
          p90: spread(h.map((x) => x.p90)),
          p99: spread(h.map((x) => x.p99)),
          commandsPerHandoff: spread(h.map((x) => x.commandsPerHandoff)),
          idleWaiterCommandsPerSecond: spread(h.map((x) => x.idleCommandsPerSecond)),
        },
      });
    }
    return rows;
  } finally {
    await monitor.close();
    await nodes.stop();
  }
}

/** Print the rows as two tables (or one JSON object per row). */
export function printRedlockBench(rows: readonly RedlockBenchRow[], json = false): void {
  if (json) {
    for (const r of rows) console.log(JSON.stringify(r));
    return;
  }
  const show = (scenario: RedlockBenchRow['scenario'], title: string, cols: Array<[string, string, string?]>): void => {
    console.log(`\n## ${title}`);
    console.log(
      table(
        ['library', ...cols.map(([h]) => h)],
        rows.filter((r) => r.scenario === scenario).map((r) => [r.library, ...cols.map(([, f, sfx]) => (r.figures[f] ? fmtSpread(r.figures[f], sfx ?? '') : '-'))]),
      ),
    );
  };
  show('redlock-uncontended', 'Redlock, 3 nodes: uncontended (64 loops, own keys)', [
    ['cycles/s', 'cyclesPerSecond'],
    ['vs redlock@4', 'vsRedlock4', 'x'],
    ['cmd/cycle', 'commandsPerCycle'],
    ['client CPU', 'clientCpuPct', '%'],
    ['servers CPU', 'serverCpuPct', '%'],
  ]);
  show('redlock-handoff', 'Redlock, 3 nodes: handoff (release -> waiter holds it)', [
    ['p50', 'p50', ' ms'],
    ['p90', 'p90', ' ms'],
    ['p99', 'p99', ' ms'],
    ['cmd/handoff', 'commandsPerHandoff'],
    ['idle waiter cmd/s', 'idleWaiterCommandsPerSecond'],
  ]);
}

// Run on its own: npx tsx bench/redlock.ts [--src] [--json] [--reps N] [--seconds S] [--handoffs N] [--idle-ms MS]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({
    options: {
      src: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      reps: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '3' },
      handoffs: { type: 'string', default: '100' },
      'idle-ms': { type: 'string', default: '2000' },
    },
  });
  const rows = await runRedlockBench({
    reps: Number(values.reps),
    seconds: Number(values.seconds),
    handoffs: Number(values.handoffs),
    idleMs: Number(values['idle-ms']),
    source: values.src ? 'src' : 'dist',
    log: (s) => process.stderr.write(`${s}\n`),
  });
  printRedlockBench(rows, values.json);
}
