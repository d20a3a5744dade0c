/**
 * Chaos scenarios 4 and 5 (reliability.md): the engine fails under a hold, on every engine and
 * primitive, in this process. A holder H (its own client) holds; a waiter W (another client)
 * waits for the conflicting hold (the write side for a read lock; the semaphore's last permit,
 * H's client holding the other two); then the fault:
 * - 4, crash: every server process of the engine killed with kill -9, kept down past H's local
 *   validity (TTL, or its session's timeout, + 1 TTL), started again on the same ports with its
 *   data (Redis and Redlock with `appendfsync always`, the configuration docs/reliability.md
 *   asks for).
 * - 5, connection faults, H's client behind the in-repo TCP proxy (test/support/delay-proxy.ts):
 *   a blackhole past H's local validity, then healed; connection resets (RST) at three moments
 *   of its renewals; an administrator killing H's SQL sessions (pg_terminate_backend, MariaDB
 *   KILL); and the engine absent at start (a client on a port nobody listens on, then a proxy
 *   started on that port: the same client must work; SQLite: a path that cannot be a file).
 * The history (request / acquired / released / lost, process.hrtime) goes to the checker.
 * Pass: no overlapping sections (no more than 3 semaphore holders); tokens increase across the
 * fault (so a fenced resource refuses the old holder's writes: no stale write can be accepted);
 * where no renewal could get through until H's local deadline had passed, H's signal aborted by
 * that deadline + 1 s; W granted in the end (or a typed error), and both clients take and give
 * back a new hold after the heal; an absent engine fails an acquire with a typed error within
 * its wait + 2 s; no unhandled rejection; nothing left on the engine once the engine's own
 * bound (3 × the TTL or session timeout) has passed.
 */
import { performance } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { connect } from '../../src/connect.js';
import type { LockClient } from '../../src/core/client.js';
import { DlockError } from '../../src/errors.js';
import { findOverlaps, tokenOrderViolations } from '../support/checkers.js';
import { startDelayProxy, type DelayProxy } from '../support/delay-proxy.js';
import { freePort } from '../support/ports.js';
import { tempDir } from '../support/processes.js';
import { withPorts, type EngineFaults, type RunningEngine } from './engines.js';
import { dayOfYear, FULL, leftovers, LocalHistory, maxConcurrent, msBetween, pause, readHistory, sections } from './harness.js';
import { defineScenario, type Cell } from './matrix.js';
import { contender, hold, keysOf, SEMAPHORE_PERMITS, type Held, type PrimitiveName } from './primitives.js';

const TTL_MS = 1000;
/** A loaded 2-core machine: timers and replies run late by this much. */
const SLACK_MS = 1000;
/** How long W may wait: outages of several seconds, plus a ZooKeeper restart. */
const WAIT_MS = 60_000;
const ABSENT_WAIT_MS = 1500;

const now = (): bigint => process.hrtime.bigint();
const codeOf = (e: unknown): string => (e instanceof DlockError ? e.code : e instanceof Error ? `untyped ${e.name}: ${e.message}` : String(e));

/** What a contest found. */
interface Outcome {
  /** Violations, each said in a line. */
  readonly violations: string[];
  readonly figures: Record<string, number | string>;
}

/** A hold recorded in the history: request, acquired, lost (when its signal aborts first), released. */
async function recordedHold(history: LocalHistory, c: LockClient, p: PrimitiveName, key: string, waitMs: number): Promise<{ held: Held; cycle: number; lost: Promise<bigint> }> {
  const cycle = history.nextCycle();
  history.record({ op: p, phase: 'request', cycle });
  const held = await hold(c, p, key, { ttlMs: TTL_MS, waitMs });
  history.record({ op: p, phase: 'acquired', cycle, token: String(held.tokens[0]) });
  const lost = new Promise<bigint>((resolve) => {
    const on = (): void => {
      const t = now();
      history.record({ op: p, phase: 'lost', cycle, code: codeOf(held.signal.reason) });
      resolve(t);
    };
    if (held.signal.aborted) on();
    else held.signal.addEventListener('abort', on, { once: true });
  });
  return { held, cycle, lost };
}

async function releaseRecorded(history: LocalHistory, p: PrimitiveName, h: { held: Held; cycle: number }): Promise<void> {
  if (!h.held.signal.aborted) history.record({ op: p, phase: 'released', cycle: h.cycle, stillHeld: h.held.isHeld() });
  await h.held.release().catch(() => undefined);
}

/** What the fault tells the checker: when H's local deadline must have fired (no renewal could get through until past it). */
interface FaultResult {
  mustBeToldBy?: bigint;
  figures?: Record<string, number | string>;
}

/**
 * H on `hc` holds (with the semaphore's other permits), W on `wc` waits, `fault` runs, then H
 * gives back what it still holds, W is awaited, and the history is checked.
 */
async function contest(
  cell: Cell,
  hc: LockClient,
  wc: LockClient,
  key: string,
  fault: (h: { held: Held; deadline: bigint }) => Promise<FaultResult>,
  beforeWaiter?: () => Promise<void>,
): Promise<Outcome> {
  const { primitive, engine } = cell;
  const history = new LocalHistory();
  const violations: string[] = [];
  const fills: Array<Awaited<ReturnType<typeof recordedHold>>> = [];
  if (primitive === 'semaphore') for (let i = 1; i < SEMAPHORE_PERMITS; i++) fills.push(await recordedHold(history, hc, primitive, key, 10_000));
  const h = await recordedHold(history, hc, primitive, key, 10_000);
  await beforeWaiter?.();
  const waiter = recordedHold(history, wc, contender(primitive), key, WAIT_MS).then(
    (w) => ({ ok: true as const, w }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  await pause(300); // W queued, H renewing
  const faultAt = now();
  const deadline = faultAt + BigInt(Math.round((h.held.remainingMs?.() ?? engine.localLiveMs(TTL_MS)) * 1e6));
  const r = await fault({ held: h.held, deadline });
  const healedAt = now();
  // H is told, or keeps its hold (its renewals get through again), within two TTLs of the heal.
  await Promise.race([h.lost, pause(2 * TTL_MS)]);
  const lostAt = h.held.signal.aborted ? await h.lost : undefined;
  for (const x of [h, ...fills]) await releaseRecorded(history, primitive, x);
  const w = await waiter;
  let waiterOutcome: string;
  if (w.ok) {
    waiterOutcome = 'granted';
    await releaseRecorded(history, contender(primitive), w.w);
  } else {
    waiterOutcome = codeOf(w.e);
    if (waiterOutcome.startsWith('untyped')) violations.push(`the waiter failed with an ${waiterOutcome}`);
  }

  // The checker.
  const s = sections(readHistory(history.file), now());
  if (primitive === 'semaphore') {
    const most = maxConcurrent(s);
    if (most > SEMAPHORE_PERMITS) violations.push(`${most} semaphore holders at once`);
  } else {
    violations.push(...findOverlaps(s), ...tokenOrderViolations(s));
  }
  if (r.mustBeToldBy !== undefined) {
    const by = r.mustBeToldBy + BigInt(SLACK_MS * 1e6);
    if (lostAt === undefined || lostAt > by) {
      violations.push(`H not told within its deadline + ${SLACK_MS} ms: ${lostAt === undefined ? 'never' : `${Math.round(msBetween(r.mustBeToldBy, lostAt))} ms after it`}`);
    }
  }
  return {
    violations,
    figures: {
      ...r.figures,
      outageMs: Math.round(msBetween(faultAt, healedAt)),
      ...(lostAt === undefined ? { held: 'kept' } : { toldMs: Math.round(msBetween(faultAt, lostAt)), lostBy: codeOf(h.held.signal.reason) }),
      waiter: waiterOutcome,
    },
  };
}

/** After the heal, each client takes and gives back a hold of its own (the clients work again). */
async function worksAgain(clients: readonly LockClient[], p: PrimitiveName, key: string): Promise<string[]> {
  const broken: string[] = [];
  for (const [i, c] of clients.entries()) {
    try {
      const h = await hold(c, p, `${key}:after${i}`, { ttlMs: TTL_MS, waitMs: 30_000 });
      if (!(await h.release())) broken.push(`client ${i}: the hold after the heal was lost before its release`);
    } catch (e) {
      broken.push(`client ${i} after the heal: ${codeOf(e)}`);
    }
  }
  return broken;
}

/** Nothing under `key` on the engine, polled until the engine's own bound has passed. */
async function leakCheck(engine: RunningEngine, observer: LockClient, p: PrimitiveName, key: string): Promise<{ left: string[]; clearMs: number }> {
  const boundMs = 3 * Math.max(TTL_MS, engine.localLiveMs(TTL_MS));
  const start = performance.now();
  for (;;) {
    const left = await leftovers(observer, key, keysOf(p, key)).catch((e: unknown) => [`list failed: ${codeOf(e)}`]);
    const clearMs = Math.round(performance.now() - start);
    if (left.length === 0 || clearMs > boundMs) return { left, clearMs };
    await pause(250);
  }
}

/** Unhandled rejections of this process while `fn` runs. */
async function noUnhandled<T>(fn: () => Promise<T>): Promise<{ value: T; unhandled: string[] }> {
  const unhandled: string[] = [];
  const on = (r: unknown): void => void unhandled.push(String(r));
  process.on('unhandledRejection', on);
  try {
    const value = await fn();
    await pause(50);
    return { value, unhandled };
  } finally {
    process.off('unhandledRejection', on);
  }
}

/** Proxies in front of every port of the engine, and the URL through them. */
async function proxied(engine: RunningEngine, faults: EngineFaults): Promise<{ url: string; proxies: DelayProxy[] }> {
  const proxies = await Promise.all(faults.ports.map((p) => startDelayProxy(p)));
  const byPort = new Map(faults.ports.map((p, i) => [p, proxies[i]!.port]));
  return { url: withPorts(engine.localUrl, faults, (p) => byPort.get(p)!), proxies };
}

/** Run `cases` one after the other on fresh keys; one result for the cell, every violation listed. */
async function runCases(cell: Cell, cases: ReadonlyArray<readonly [string, (key: string) => Promise<Outcome>]>) {
  const figures: Record<string, number | string> = {};
  const violations: string[] = [];
  for (const [name, run] of cases) {
    const { value, unhandled } = await noUnhandled(() => run(`${cell.key}:${name}`));
    for (const [k, v] of Object.entries(value.figures)) figures[`${name}.${k}`] = v;
    violations.push(...value.violations.map((v) => `${name}: ${v}`), ...unhandled.map((u) => `${name}: unhandled rejection ${u}`));
  }
  console.info(`[chaos faults] ${cell.engineName} ${cell.primitive}: ${JSON.stringify(figures)}`);
  expect(violations).toEqual([]);
  return { runs: cases.length, violations: violations.length, figures };
}

/** The end of every contest case: the clients work again, nothing leaks, everything closes. */
async function finish(cell: Cell, key: string, o: Outcome, clients: readonly LockClient[], observer: LockClient): Promise<Outcome> {
  const broken = await worksAgain(clients, cell.primitive, key);
  const leak = await leakCheck(cell.engine, observer, cell.primitive, key);
  return {
    violations: [...o.violations, ...broken, ...leak.left.map((l) => `left on the engine after ${leak.clearMs} ms: ${l}`)],
    figures: { ...o.figures, clearMs: leak.clearMs },
  };
}

const noServer = (engine: RunningEngine): string => `${engine.info.name} is embedded (no server process to crash, no connection to fault)`;

defineScenario(
  {
    number: 4,
    title: 'engine crash and restart while held and waited on',
    durable: true,
    // Engines that restart in well under a second with a 1 s TTL (ZooKeeper's JVM and MariaDB take
    // seconds, etcd's hold outlives a 5 s lease): the fast slice in `npm test` stays short.
    fastEngines: ['redis', 'redlock', 'postgres-session', 'postgres-table'],
    fastPrimitives: ['mutex', 'read', 'write', 'semaphore', 'multi', 'election'],
    timeoutMs: 180_000,
  },
  async (cell) => {
    const { engine, client, skip } = cell;
    const faults = engine.faults;
    if (!faults) return skip(noServer(engine));
    return runCases(cell, [
      [
        'crash',
        async (key) => {
          const [hc, wc, observer] = [await client({ ttlMs: TTL_MS }), await client({ ttlMs: TTL_MS }), await client()];
          // Down past H's local validity: no renewal can get through until its deadline has passed.
          const downMs = engine.localLiveMs(TTL_MS) + TTL_MS;
          const o = await contest(cell, hc, wc, key, async ({ deadline }) => {
            const t0 = performance.now();
            await faults.crash(downMs);
            return { mustBeToldBy: deadline, figures: { downMs, restartMs: Math.round(performance.now() - t0 - downMs) } };
          });
          return finish(cell, key, o, [hc, wc], observer);
        },
      ],
    ]);
  },
);

defineScenario(
  {
    number: 5,
    title: 'connection faults: blackhole, reset mid-renewal, admin kill, engine absent at start',
    // 1 s TTLs, quick to start (ZooKeeper and etcd blackhole past a 4-5 s session; MariaDB starts slowly).
    fastEngines: ['sqlite', 'redis', 'redlock', 'postgres-session', 'postgres-table'],
    fastPrimitives: ['mutex', 'read', 'write', 'semaphore', 'multi', 'election'],
    timeoutMs: 180_000,
  },
  async (cell) => {
    const { engine, primitive, client, skip } = cell;
    const faults = engine.faults;
    if (engine.info.name === 'memory') return skip(noServer(engine));
    const absent: readonly [string, (key: string) => Promise<Outcome>] = [
      'absent',
      async (key) => {
        const violations: string[] = [];
        let url: string;
        let heal: () => Promise<DelayProxy[]>;
        if (faults) {
          const ports = await Promise.all(faults.ports.map(() => freePort()));
          const byPort = new Map(faults.ports.map((p, i) => [p, ports[i]!]));
          url = withPorts(engine.localUrl, faults, (p) => byPort.get(p)!);
          heal = () => Promise.all(faults.ports.map((p) => startDelayProxy(p, { port: byPort.get(p)! })));
        } else {
          // SQLite: the engine is a file; absent = a path that cannot be one (under a regular file).
          const file = join(tempDir('dlock-chaos-absent-'), 'not-a-dir');
          writeFileSync(file, '');
          url = `sqlite:${join(file, 'locks.db')}`;
          heal = () => Promise.resolve([]);
        }
        const t0 = performance.now();
        let c: LockClient | undefined;
        let outcome: string;
        try {
          c = await connect(url, { ttlMs: TTL_MS });
          await (await hold(c, primitive, key, { ttlMs: TTL_MS, waitMs: ABSENT_WAIT_MS })).release();
          outcome = 'granted';
        } catch (e) {
          outcome = codeOf(e);
        }
        const failMs = Math.round(performance.now() - t0);
        if (outcome === 'granted' || outcome.startsWith('untyped')) violations.push(`an acquire on an absent engine: ${outcome}`);
        if (failMs > ABSENT_WAIT_MS + 2000) violations.push(`the acquire on an absent engine failed after ${failMs} ms (wait ${ABSENT_WAIT_MS} ms)`);
        const figures: Record<string, number | string> = { failMs, error: outcome };
        const proxies = await heal();
        try {
          if (faults) {
            // The engine appears on the port: the same client works (or, when connect() itself
            // refused, a new one on the same URL).
            const t1 = performance.now();
            if (!c) figures.connectRefused = 1;
            c ??= await connect(url, { ttlMs: TTL_MS });
            violations.push(...(await worksAgain([c], primitive, key)));
            figures.recoverMs = Math.round(performance.now() - t1);
          }
        } finally {
          await c?.close();
          await Promise.all(proxies.map((p) => p.close()));
        }
        return { violations, figures };
      },
    ];
    if (!faults) return runCases(cell, [absent]);

    const throughProxy = async (key: string, fault: (proxies: DelayProxy[], hc: LockClient, h: { held: Held; deadline: bigint }) => Promise<FaultResult>) => {
      const { url, proxies } = await proxied(engine, faults);
      const hc = await connect(url, { ttlMs: TTL_MS });
      try {
        const [wc, observer] = [await client({ ttlMs: TTL_MS }), await client()];
        const o = await contest(cell, hc, wc, key, (h) => fault(proxies, hc, h));
        return await finish(cell, key, o, [hc, wc], observer);
      } finally {
        await hc.close();
        await Promise.all(proxies.map((p) => p.close()));
      }
    };
    const cases: Array<readonly [string, (key: string) => Promise<Outcome>]> = [
      [
        'blackhole',
        (key) =>
          throughProxy(key, async (proxies, _hc, { deadline }) => {
            // Past H's local validity (TTL, or its session's timeout), + 1 TTL.
            const ms = Math.max(2 * TTL_MS, engine.localLiveMs(TTL_MS) + TTL_MS);
            for (const p of proxies) p.blackhole(true);
            await pause(ms);
            for (const p of proxies) p.blackhole(false);
            return { mustBeToldBy: deadline, figures: { blackholeMs: ms } };
          }),
      ],
      [
        'reset',
        (key) =>
          throughProxy(key, async (proxies) => {
            // Three resets at random moments of 2 TTLs: renewals every TTL/3 are in flight at some.
            for (let i = 0; i < 3; i++) {
              await pause(Math.random() * (2 * TTL_MS) / 3);
              for (const p of proxies) p.reset();
            }
            return {};
          }),
      ],
    ];
    if (faults.sessions && faults.kill) {
      const sessions = faults.sessions.bind(faults);
      const kill = faults.kill.bind(faults);
      cases.push([
        'admin-kill',
        async (key) => {
          const [wc, observer] = [await client({ ttlMs: TTL_MS }), await client()];
          const before = new Set(await sessions());
          const hc = await client({ ttlMs: TTL_MS });
          let mine: string[] = [];
          const o = await contest(
            cell,
            hc,
            wc,
            key,
            async () => {
              await kill(mine);
              return { figures: { killed: mine.length } };
            },
            // H's sessions: those opened once it holds, before W starts waiting (its client's, and only its).
            async () => void (mine = (await sessions()).filter((id) => !before.has(id))),
          );
          const killed = mine.length;
          if (killed === 0) o.violations.push('no session of the holder found to kill');
          return finish(cell, key, o, [hc, wc], observer);
        },
      ]);
    }
    cases.push(absent);
    // The fast slice in `npm test`: one of the cases, rotating by day as the cells do.
    if (!FULL) return runCases(cell, [cases[dayOfYear() % cases.length]!]);
    return runCases(cell, cases);
  },
);
