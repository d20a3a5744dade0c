/**
 * dlock benchmarks against its Redis peers, measured in the same run on the same private
 * redis-server, back to back, with the library order rotated between repetitions. Every claim is
 * a ratio within one repetition (these machines are shared and noisy).
 *
 *   npm run bench -- handoff|uncontended|contended|semaphore|rwlock|waiters|ids|redlock|engines|all [--json] [--reps N] [--seconds S]
 *                    [--handoffs N] [--idle-ms MS] [--count N] [--only id,id] [--src]
 *
 * See /work/shared/design/performance.md for the method and the peers' figures.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { WorkerPool, type ContendedResult } from './contended.js';
import { handoffOnce, type HandoffResult } from './handoff.js';
import { ID_LIBS, runIds } from './ids.js';
import { captureReport } from './report.js';
import { BASELINE_ID, DLOCK_FAIR_ID, FENCED_FLOOR_ID, LIBS, dlockEntry, useDlockFrom, type LibSpec, type Scenario } from './libs.js';
import { ServerMonitor, fmt, fmtSpread, rotate, spread, startServer, table, type Spread } from './support.js';
import { uncontendedRep, type UncontendedResult } from './uncontended.js';

const USAGE = `usage: npm run bench -- <handoff|uncontended|contended|semaphore|rwlock|waiters|ids|redlock|engines|all> [options]
  semaphore         4 permits, 16 processes: dlock's Semaphore against redis-semaphore's (not in 'all')
  rwlock            8 processes, 90% reads: dlock's ReadWriteLock against its mutex (not in 'all')
  waiters           --waiters N (default 10000) waiters on one key in one process: RSS growth, engine
                    commands/s while held, all served after release; dlock (Redis, SQLite) and
                    redis-semaphore's Mutex (not in 'all')
  redlock           dlock's redlock:// against node-redlock 4 and 5 on the same 3 redis-servers
  engines           dlock on every engine (SQLite, Redis, ZooKeeper, etcd, PostgreSQL, MySQL, ...):
                    handoff in round trips of that engine, contended throughput; --only picks engines
  --json            one JSON object per row instead of the table
  --reps N          repetitions (default 3); median [min–max] over them
  --seconds S       duration of each throughput run (default 3)
  --handoffs N      timed handoffs per library per repetition (default 200)
  --idle-ms MS      how long the lock is held while measuring an idle waiter (default 3000)
  --loops N         async loops of 'uncontended' (default 64)
  --processes N     processes of 'contended' (default 8)
  --count N         ids per library per rep in 'ids' (default 1000000)
  --only a,b        only these libraries; ratios need the baseline '${BASELINE_ID}' (ids: ${LIBS.map((l) => l.id).join(', ')};
                    in 'ids': ${ID_LIBS.join(', ')})
  --engine E        semaphore/rwlock: run dlock on this engine instead of Redis (redlock: 3 private
                    redis-servers, rwlock only; mysql-table: a private MariaDB, table mode); the
                    peer and the counters stay on the bench's Redis
  --src             load dlock from src/ via tsx instead of the built dist/
  --report FILE     also draw the results: FILE.svg (charts) or FILE.html (charts and every figure)`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    json: { type: 'boolean', default: false },
    reps: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
    handoffs: { type: 'string', default: '200' },
    'idle-ms': { type: 'string', default: '3000' },
    loops: { type: 'string', default: '64' },
    processes: { type: 'string', default: '8' },
    count: { type: 'string', default: '1000000' },
    waiters: { type: 'string', default: '10000' },
    only: { type: 'string' },
    engine: { type: 'string' },
    src: { type: 'boolean', default: false },
    report: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function positive(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

const SCENARIOS: readonly Scenario[] = ['handoff', 'uncontended', 'contended'];
const which = positionals[0] ?? 'all';
const admissionScenario = which === 'semaphore' || which === 'rwlock' ? which : undefined;
if (values.help || positionals.length > 1 || !(which === 'all' || admissionScenario !== undefined || which === 'ids' || which === 'waiters' || which === 'engines' || which === 'redlock' || (SCENARIOS as readonly string[]).includes(which))) {
  console.error(USAGE);
  process.exit(values.help ? 0 : 2);
}
const scenarios: readonly Scenario[] =
  which === 'all' ? SCENARIOS : admissionScenario !== undefined || which === 'ids' || which === 'waiters' || which === 'engines' || which === 'redlock' ? [] : [which as Scenario];
const idsScenario = which === 'all' || which === 'ids';
const count = Math.round(positive('count', values.count));
const reps = Math.round(positive('reps', values.reps));
const seconds = positive('seconds', values.seconds);
const handoffs = Math.round(positive('handoffs', values.handoffs));
const idleMs = positive('idle-ms', values['idle-ms']);
const loops = Math.round(positive('loops', values.loops));
const processes = Math.round(positive('processes', values.processes));
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
if (only && which !== 'engines' && which !== 'redlock') {
  for (const id of only) if (!LIBS.some((l) => l.id === id) && !ID_LIBS.includes(id)) throw new Error(`--only: unknown library "${id}"`);
}
const dlockSource = values.src ? 'src' : 'dist';
useDlockFrom(dlockSource);
const report = values.report ? captureReport(values.report, values.json) : undefined;
const json = values.json || report !== undefined;

const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

interface Row {
  scenario: Scenario;
  library: string;
  id: string;
  baseline: boolean;
  figures: Record<string, Spread>;
}

function libsFor(s: Scenario): LibSpec[] {
  return LIBS.filter((l) => l.scenarios.includes(s) && (only ? only.includes(l.id) : !l.extra));
}

/** Run `once` for every library of `s`, `reps` times, rotating the order; results[id][rep]. */
async function measure<R>(s: Scenario, once: (spec: LibSpec, rep: number) => Promise<R>, show: (r: R) => string): Promise<Map<string, R[]>> {
  const libs = libsFor(s);
  const results = new Map<string, R[]>(libs.map((l) => [l.id, []]));
  for (let rep = 0; rep < reps; rep++) {
    for (const spec of rotate(libs, rep)) {
      const t = Date.now();
      const r = await once(spec, rep);
      results.get(spec.id)?.push(r);
      log(`  [${s} ${rep + 1}/${reps}] ${spec.name.padEnd(30)} ${show(r)}  (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    }
  }
  return results;
}

/** Per-repetition figures of every library, and `ratioName` = figure / baseline's figure in the same repetition. */
function rows<R>(s: Scenario, results: Map<string, R[]>, figures: Record<string, (r: R) => number>, ratio: { name: string; of: string }): Row[] {
  const base = results.get(BASELINE_ID) ?? [];
  const out: Row[] = [];
  for (const spec of libsFor(s)) {
    const rs = results.get(spec.id) ?? [];
    const f: Record<string, Spread> = {};
    for (const [name, get] of Object.entries(figures)) f[name] = spread(rs.map(get));
    const get = figures[ratio.of];
    if (get) {
      f[ratio.name] = spread(rs.map((r, i) => (base[i] === undefined ? Number.NaN : get(r) / get(base[i] as R))));
    }
    out.push({ scenario: s, library: spec.name, id: spec.id, baseline: spec.id === BASELINE_ID, figures: f });
  }
  return out;
}

function print(title: string, rs: Row[], columns: Array<[header: string, figure: string, suffix?: string]>, notes: string[]): void {
  if (json) {
    for (const r of rs) console.log(JSON.stringify({ ...r, params: params() }));
    return;
  }
  console.log(`\n## ${title}`);
  console.log(
    table(
      ['library', ...columns.map(([h]) => h)],
      rs.map((r) => [r.library + (r.baseline ? ' (baseline)' : ''), ...columns.map(([, f, sfx]) => (r.figures[f] ? fmtSpread(r.figures[f], sfx ?? '') : '-'))]),
    ),
  );
  for (const n of notes) console.log(n);
}

function params(): Record<string, unknown> {
  return { reps, seconds, handoffs, idleMs, loops, processes, count, dlock: dlockSource };
}

function verdict(ok: boolean): string {
  return ok ? 'MET' : 'MISSED';
}

/**
 * The targets of issue 11 for `contended`, from the same run: dlock's default mode against the
 * best peer of each repetition (cycles/s ratio, median of the reps), its longest wait and its
 * give-ups; `fair: true` against the 661 cycles/s measured when the issue was filed, and against
 * that figure scaled by redis-semaphore's speed in this run (2,208/s on the issue's day).
 */
function contendedTargets(results: Map<string, ContendedResult[]>): void {
  const mine = results.get('dlock') ?? [];
  const peers = [...results].filter(([id]) => id !== 'dlock' && id !== DLOCK_FAIR_ID && id !== FENCED_FLOOR_ID && !id.startsWith('dlock-'));
  if (mine.length === 0 || peers.length === 0) return;
  /** Each rep's cycles/s of `runs` over the best peer's in that rep. */
  const vsBestPeer = (runs: readonly ContendedResult[]): number[] => runs.map((r, i) => r.cyclesPerSecond / Math.max(...peers.map(([, rs]) => rs[i]?.cyclesPerSecond ?? 0)));
  const ratios = vsBestPeer(mine);
  const ratio = spread(ratios).median;
  const maxWait = Math.max(...mine.map((r) => r.maxWaitMs));
  const giveUps = mine.reduce((n, r) => n + r.giveUps, 0);
  const lost = mine.reduce((n, r) => n + r.lostUpdates, 0);
  console.log(
    `target: dlock (default) >= 1.0× the best peer's cycles/s: ${fmtSpread(spread(ratios), '×')}, ${verdict(ratio >= 1)}; ` +
      `max wait <= 100 ms: ${fmt(maxWait)} ms (worst rep), ${verdict(maxWait <= 100)}; 0 give-ups: ${giveUps}, ${verdict(giveUps === 0)}; 0 lost updates: ${lost}, ${verdict(lost === 0)}`,
  );
  const fenced = results.get(FENCED_FLOOR_ID) ?? [];
  if (fenced.length > 0) {
    // The same run's floor of a fenced lock: the baseline plus a token per grant, waits unbounded.
    const vsBest = spread(vsBestPeer(fenced));
    const vsFloor = spread(mine.map((r, i) => r.cyclesPerSecond / (fenced[i]?.cyclesPerSecond ?? Number.NaN)));
    const base = results.get(BASELINE_ID) ?? [];
    const baseVsBest = base.length > 0 ? spread(vsBestPeer(base)) : undefined;
    console.log(
      `floor: the hand-rolled lock plus a fencing token (SET NX + INCR in one script, 10 ms polling, waits unbounded: max ${fmt(Math.max(...fenced.map((r) => r.maxWaitMs)))} ms) ` +
        `runs ${fmtSpread(vsBest, '×')} the best peer${baseVsBest ? ` (the same lock without the token, the baseline: ${fmtSpread(baseVsBest, '×')})` : ''}; ` +
        `dlock = ${fmtSpread(vsFloor, '×')} of that floor`,
    );
  }
  const fair = results.get(DLOCK_FAIR_ID) ?? [];
  if (fair.length > 0) {
    const rate = spread(fair.map((r) => r.cyclesPerSecond));
    const retaken = Math.max(...fair.map((r) => r.retakenPct));
    console.log(
      `target: dlock fair: true >= 1.5× 661 cycles/s (992): ${fmtSpread(rate)}, ${verdict(rate.median >= 992)}; ` +
        `re-taken by the releaser 0%: ${fmt(retaken)}% (worst rep), ${verdict(retaken === 0)}; vs dlock default in the same run ${fmtSpread(spread(fair.map((r, i) => r.cyclesPerSecond / (mine[i]?.cyclesPerSecond ?? Number.NaN))), '×')}`,
    );
    // 661/s was measured on the day redis-semaphore ran 2,208/s: the same target on this run's
    // machine is 992 scaled by the peer's speed now (each rep against its own peer figure).
    const peer = results.get('semaphore') ?? [];
    if (peer.length === fair.length) {
      const vsScaled = spread(fair.map((r, i) => r.cyclesPerSecond / ((992 * (peer[i]?.cyclesPerSecond ?? Number.NaN)) / 2208)));
      console.log(
        `       the same target scaled to this machine (992 × redis-semaphore ${fmtSpread(spread(peer.map((r) => r.cyclesPerSecond)))} now ÷ 2,208 then): ` +
          `fair = ${fmtSpread(vsScaled, '×')} of it, ${verdict(vsScaled.median >= 1)}`,
      );
    }
  }
}

async function main(): Promise<void> {
  const server = await startServer();
  const monitor = new ServerMonitor(server.url, server.pid);
  let pool: WorkerPool | undefined;
  const stopAll = async (): Promise<void> => {
    await pool?.stop().catch(() => undefined);
    await monitor.close();
    await server.stop();
  };
  const onSignal = (): void => {
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const info = await (async () => {
      const { Redis } = await import('ioredis');
      const c = new Redis(server.url);
      const v = /redis_version:(\S+)/.exec(await c.info('server'))?.[1] ?? '?';
      await c.quit();
      return v;
    })();
    const header = `node ${process.version}, redis-server ${info} on 127.0.0.1:${server.port} (pid ${server.pid}, no persistence), ${availableParallelism()} cpus; dlock from ${dlockEntry()}; ${reps} reps, order rotated; median [min–max] of the reps`;
    if (json) log(header);
    else console.log(header);

    for (const s of scenarios) {
      if (s === 'handoff') {
        const results = await measure<HandoffResult>(
          s,
          (spec, rep) => handoffOnce(spec, server.url, monitor, { handoffs, warmup: 10, idleMs }, `r${rep}`),
          (r) =>
            `p50 ${fmt(r.p50)} ms  p90 ${fmt(r.p90)} ms  PING after idle ${fmt(r.pingAfterIdleP50)} ms (${fmt(r.p50 / r.pingAfterIdleP50)}×)  ` +
            `${fmt(r.commandsPerHandoff)} cmd/handoff  idle ${fmt(r.idleCommandsPerSecond)} cmd/s`,
        );
        const rs = rows(
          s,
          results,
          {
            p50: (r) => r.p50,
            p90: (r) => r.p90,
            p99: (r) => r.p99,
            max: (r) => r.max,
            commandsPerHandoff: (r) => r.commandsPerHandoff,
            idleWaiterCommandsPerSecond: (r) => r.idleCommandsPerSecond,
            pingAfterIdleP50: (r) => r.pingAfterIdleP50,
            pingBusyP50: (r) => r.pingBusyP50,
            shortWaitP50: (r) => r.shortWaitP50,
            // The floor of a direct handoff is one round trip after the same idle pause, same run.
            p50VsPing: (r) => r.p50 / r.pingAfterIdleP50,
            // The bare wake-up mechanisms after the same pause (dlock's runs only), and as PINGs.
            floorBlpopP50: (r) => r.floorBlpopP50,
            floorPubsubP50: (r) => r.floorPubsubP50,
            floorBlpopVsPing: (r) => r.floorBlpopP50 / r.pingAfterIdleP50,
            floorPubsubVsPing: (r) => r.floorPubsubP50 / r.pingAfterIdleP50,
            // The minimal safe release script's direct handoff (bench/handoff.ts header), as PINGs.
            floorScriptPubsubP50: (r) => r.floorScriptPubsubP50,
            floorScriptBlpopP50: (r) => r.floorScriptBlpopP50,
            floorScriptPubsubVsPing: (r) => r.floorScriptPubsubP50 / r.pingAfterIdleP50,
            floorScriptBlpopVsPing: (r) => r.floorScriptBlpopP50 / r.pingAfterIdleP50,
            // dlock against the safe floor of its own carrier (pub/sub), same run.
            p50VsScriptPubsub: (r) => r.p50 / r.floorScriptPubsubP50,
          },
          { name: 'p50VsBaseline', of: 'p50' },
        );
        const pingRow = (name: 'pingAfterIdleP50' | 'pingBusyP50'): Spread => spread(rs.flatMap((r) => r.figures[name]?.reps ?? []));
        const d = rs.find((r) => r.id === 'dlock');
        const notes = [
          `${handoffs} timed handoffs per library per rep (+10 warm-up); release at 5 ms + uniform(0, max(10, retry period)) after the waiter started.`,
          'commands/handoff: all commands the server ran during the timed handoffs / handoffs (holder acquire + release, waiter tries, waiter release; Lua-internal calls count).',
          `idle waiter: server commands/s while the lock is held ${idleMs / 1000} s and one waiter waits (the holder not renewing meanwhile: only the waiter's commands count).`,
          'p50 after a 1–4 ms wait: a second series, released 1 ms + uniform(0, 3 ms) after the waiter started (under dlock\'s 5 ms barging bound), the holder not asking again.',
          `PING floor: round trip p50 ${fmtSpread(pingRow('pingBusyP50'), ' ms')} back to back, ` +
            `${fmtSpread(pingRow('pingAfterIdleP50'), ' ms')} after a 5–15 ms idle pause (a handoff starts after such a pause), ` +
            "measured on a connection of its own before every timed handoff; '÷ PING' = p50 / that library run's PING p50.",
        ];
        if (d?.figures.p50 && d.figures.p50VsPing && d.figures.idleWaiterCommandsPerSecond && d.figures.pingAfterIdleP50) {
          const ratio = d.figures.p50VsPing;
          const idle = d.figures.idleWaiterCommandsPerSecond;
          const bl = d.figures.floorBlpopVsPing;
          const ps = d.figures.floorPubsubVsPing;
          const floorNote =
            bl && ps && d.figures.floorBlpopP50 && d.figures.floorPubsubP50
              ? ` (floor in this run, the bare mechanisms after the same pause, no lock: BLPOP woken by LPUSH ${fmt(d.figures.floorBlpopP50.median)} ms = ` +
                `${fmtSpread(bl, '×')}, SUBSCRIBE woken by PUBLISH ${fmt(d.figures.floorPubsubP50.median)} ms = ${fmtSpread(ps, '×')} PING)`
              : '';
          const sp = d.figures.floorScriptPubsubVsPing;
          const sb = d.figures.floorScriptBlpopVsPing;
          const vsSafe = d.figures.p50VsScriptPubsub;
          const safeNote =
            sp && sb && vsSafe && d.figures.floorScriptPubsubP50 && d.figures.floorScriptBlpopP50
              ? `floor of a SAFE direct handoff in this run (the 7-line release script: owner check, LPOP head, INCR fence, SET PX, then notify): ` +
                `to a subscriber (PUBLISH) ${fmt(d.figures.floorScriptPubsubP50.median)} ms = ${fmtSpread(sp, '×')} PING, ` +
                `to a waiter in BLPOP (LPUSH) ${fmt(d.figures.floorScriptBlpopP50.median)} ms = ${fmtSpread(sb, '×')} PING; ` +
                `dlock (pub/sub) = ${fmtSpread(vsSafe, '×')} its carrier's safe floor` +
                `${sp.median > 1.5 ? '. The 1.5× PING target is below the safe pub/sub floor in this run' : ''}`
              : undefined;
          if (safeNote) notes.push(safeNote);
          notes.push(
            `target: dlock handoff p50 <= 1.5× PING after the same idle pause: ${fmt(d.figures.p50.median)} ms vs PING ` +
              `${fmt(d.figures.pingAfterIdleP50.median)} ms = ${fmtSpread(ratio, '×')}: ${verdict(ratio.median <= 1.5)}${floorNote}`,
            `target: 0 commands while waiting: ${fmt(idle.median)} commands/s (max of the reps ${fmt(idle.max)}): ${verdict(idle.max === 0)}`,
          );
          if (json) {
            const target = { scenario: s, id: 'dlock', params: params() };
            console.log(JSON.stringify({ ...target, target: 'p50 <= 1.5x PING after the same idle pause', ratio, pingAfterIdleP50: d.figures.pingAfterIdleP50, floorBlpopP50: d.figures.floorBlpopP50, floorPubsubP50: d.figures.floorPubsubP50, floorBlpopVsPing: bl, floorPubsubVsPing: ps, floorScriptPubsubP50: d.figures.floorScriptPubsubP50, floorScriptBlpopP50: d.figures.floorScriptBlpopP50, floorScriptPubsubVsPing: sp, floorScriptBlpopVsPing: sb, p50VsScriptPubsub: vsSafe, verdict: verdict(ratio.median <= 1.5) }));
            console.log(JSON.stringify({ ...target, target: '0 commands while waiting', idleWaiterCommandsPerSecond: idle, verdict: verdict(idle.max === 0) }));
          }
        }
        print(
          'handoff: release -> the waiter holds it (ms)',
          rs,
          [
            ['p50 ms', 'p50'],
            ['p90 ms', 'p90'],
            ['p99 ms', 'p99'],
            ['p50 ÷ PING', 'p50VsPing', '×'],
            ['p50 ÷ hand-rolled', 'p50VsBaseline', '×'],
            ['p50 after a 1–4 ms wait', 'shortWaitP50'],
            ['commands/handoff', 'commandsPerHandoff'],
            ['idle waiter commands/s', 'idleWaiterCommandsPerSecond'],
          ],
          notes,
        );
      } else if (s === 'uncontended') {
        const libs = libsFor(s);
        const results = new Map<string, UncontendedResult[]>(libs.map((l) => [l.id, []]));
        for (let rep = 0; rep < reps; rep++) {
          const t = Date.now();
          const r = await uncontendedRep(libs, server.url, monitor, { loops, seconds, sliceSeconds: 0.5, warmupSeconds: 0.5 }, rep);
          for (const spec of libs) {
            const x = r.get(spec.id);
            if (!x) continue;
            results.get(spec.id)?.push(x);
            log(`  [${s} ${rep + 1}/${reps}] ${spec.name.padEnd(30)} ${fmt(x.cyclesPerSecond)} cycles/s  client CPU ${fmt(x.clientCpuPct)}%`);
          }
          log(`  (${((Date.now() - t) / 1000).toFixed(1)} s)`);
        }
        const rs = rows(
          s,
          results,
          {
            cyclesPerSecond: (r) => r.cyclesPerSecond,
            commandsPerCycle: (r) => r.commandsPerCycle,
            clientCpuPct: (r) => r.clientCpuPct,
            serverCpuPct: (r) => r.serverCpuPct,
            // CPU per cycle (µs): steadier than cycles/s on a shared machine.
            clientCpuUsPerCycle: (r) => (r.clientCpuPct * 1e4) / r.cyclesPerSecond,
            serverCpuUsPerCycle: (r) => (r.serverCpuPct * 1e4) / r.cyclesPerSecond,
          },
          { name: 'vsBaseline', of: 'cyclesPerSecond' },
        );
        const d = rs.find((r) => r.id === 'dlock');
        const notes = [
          `${loops} async loops, one process, one instance per library, distinct keys; ${seconds} s per library per rep, run as 0.5 s slices round-robin across the libraries (order rotated every round), after a 0.5 s warm-up each.`,
          'commands/cycle counts Lua-internal calls (Redis 7 counts them): hand-rolled = SET + EVALSHA(GET, DEL) = 4.',
        ];
        if (d?.figures.vsBaseline) {
          notes.push(`target: dlock >= 1.5× hand-rolled: ${fmtSpread(d.figures.vsBaseline, '×')}, ${verdict(d.figures.vsBaseline.median >= 1.5)}`);
        }
        print(
          'uncontended: acquire + release cycles/s',
          rs,
          [
            ['cycles/s', 'cyclesPerSecond'],
            ['× hand-rolled', 'vsBaseline', '×'],
            ['commands/cycle', 'commandsPerCycle'],
            ['client CPU %', 'clientCpuPct'],
            ['server CPU %', 'serverCpuPct'],
            ['client CPU µs/cycle', 'clientCpuUsPerCycle'],
            ['server CPU µs/cycle', 'serverCpuUsPerCycle'],
          ],
          notes,
        );
      } else {
        log(`  starting ${processes} worker processes`);
        pool = WorkerPool.start(processes);
        const p = pool;
        const results = await measure<ContendedResult>(
          s,
          (spec, rep) => p.run(spec, server.url, monitor, { processes, seconds, warmupSeconds: 0.5, dlock: dlockSource }, `r${rep}`),
          (r) => `${fmt(r.cyclesPerSecond)} cycles/s  max wait ${fmt(r.maxWaitMs)} ms  re-taken ${fmt(r.retakenPct)}%`,
        );
        await pool.stop();
        pool = undefined;
        const rs = rows(
          s,
          results,
          {
            cyclesPerSecond: (r) => r.cyclesPerSecond,
            p99WaitMs: (r) => r.p99WaitMs,
            maxWaitMs: (r) => r.maxWaitMs,
            retakenPct: (r) => r.retakenPct,
            lostUpdates: (r) => r.lostUpdates,
            giveUps: (r) => r.giveUps,
            commandsPerCycle: (r) => r.commandsPerCycle,
            serverCpuPct: (r) => r.serverCpuPct,
          },
          { name: 'vsBaseline', of: 'cyclesPerSecond' },
        );
        print(
          `contended: ${processes} processes, one key, lock -> GET -> +1 -> SET -> unlock`,
          rs,
          [
            ['cycles/s', 'cyclesPerSecond'],
            ['× hand-rolled', 'vsBaseline', '×'],
            ['p99 wait ms', 'p99WaitMs'],
            ['max wait ms', 'maxWaitMs'],
            ['re-taken by releaser %', 'retakenPct'],
            ['lost updates', 'lostUpdates'],
            ['commands/cycle', 'commandsPerCycle'],
            ['server CPU %', 'serverCpuPct'],
          ],
          [
            `${seconds} s per library per rep after a 0.5 s untimed round of the same contention; cycles/s counts cycles finished inside the window.`,
            're-taken: share of releases after which the same process took the lock next (from the counter order); lost updates: counter values seen twice (must be 0).',
            'commands/cycle: every command the server ran during the window (Lua-internal calls count) / cycles, including the GET + SET of the work itself. Per command (INFO commandstats, median rep):',
            ...libsFor(s).map((spec) => {
              const runs = results.get(spec.id) ?? [];
              const mid = [...runs].sort((x, y) => x.commandsPerCycle - y.commandsPerCycle)[Math.floor(runs.length / 2)];
              const parts = (mid?.commandBreakdown ?? []).filter(([, n]) => n >= 0.01).map(([cmd, n]) => `${cmd} ${fmt(n)}`);
              return `  ${spec.name}: ${fmt(mid?.commandsPerCycle ?? Number.NaN)} = ${parts.join(' + ')}`;
            }),
          ],
        );
        contendedTargets(results);
        if (json) {
          for (const spec of libsFor(s)) {
            console.log(JSON.stringify({ scenario: s, id: spec.id, commandBreakdownPerRep: (results.get(spec.id) ?? []).map((r) => Object.fromEntries(r.commandBreakdown)) }));
          }
        }
      }
    }
    if (idsScenario) {
      await runIds({ count, reps, json, redisUrl: server.url, dlock: dlockSource, only, params: params(), log });
    }
    if (which === 'waiters') {
      const { runWaitersBench } = await import('./waiters.js');
      await runWaitersBench({ redisUrl: server.url, count: Math.round(positive('waiters', values.waiters)), dlock: dlockSource, json, log });
    }
    if (admissionScenario) {
      const { runAdmissionBench } = await import('./admission.js');
      const explicit = process.argv.some((a) => a === '--processes' || a.startsWith('--processes='));
      const engine = values.engine;
      if (engine !== undefined && engine !== 'mysql-table' && engine !== 'redlock') throw new Error(`--engine must be redlock or mysql-table, got ${JSON.stringify(engine)}`);
      if (engine === 'redlock' && admissionScenario !== 'rwlock') throw new Error('--engine redlock: rwlock only (Redlock grants no counted permits)');
      const mysql = engine === 'mysql-table' ? await (await import('../test/support/mysql.js')).startMysql() : undefined;
      const redlock = engine === 'redlock' ? await (await import('../test/support/redlock.js')).startRedlock({ nodes: 3 }) : undefined;
      try {
        const lockUrl = mysql ? `${mysql.url}?mode=table` : redlock?.url;
        await runAdmissionBench({ scenario: admissionScenario, url: server.url, lockUrl, reps, seconds, processes: explicit ? processes : undefined, dlock: dlockSource, json, log });
      } finally {
        await mysql?.stop();
        await redlock?.stop();
      }
    }
  } finally {
    await stopAll();
  }
}

const enginesScenario = which === 'all' || which === 'engines';

(which === 'engines' || which === 'redlock' ? Promise.resolve() : main())
  .then(async () => {
    if (which === 'all' || which === 'redlock') {
      const { runRedlockBench, printRedlockBench } = await import('./redlock.js');
      printRedlockBench(await runRedlockBench({ reps, seconds, loops, handoffs, idleMs, source: dlockSource, log }), json);
    }
    if (enginesScenario) {
      const { runEngines } = await import('./engines.js');
      await runEngines({ only: which === 'engines' ? only : undefined, reps, handoffs, seconds, processes, dlock: dlockSource, json, log });
    }
  })
  .then(
  () => {
    report?.finish(`npm run bench -- ${which}: node ${process.version}, ${availableParallelism()} cpus, ${reps} reps; median [min–max]`);
    process.exit(0);
  },
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
