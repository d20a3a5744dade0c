/**
 * The paused-holder scenario behind the fencing tests (no vitest here; the cases are in
 * paused-holder-cases.ts): `workers` processes (paused-holder-worker.ts) each take the lock
 * `increments` times and add one to a counter kept in a fenced resource (fenced-counter/<kind>.ts).
 * The first to hold the lock in worker 0 (the victim) reads the counter and is then frozen
 * (SIGSTOP) for `pauseMs`: its renewals cannot run; past its TTL its lease is lost.
 *
 * The interleaving that loses an update with fenced writes alone is then forced, not hoped for:
 * the first holder after the victim (a newer token) reads and holds its write; the victim, resumed,
 * writes its stale value; only then does the newer holder write. With fenced reads (the helpers'
 * default) the newer holder's read has raised the fence, the stale write is refused and no
 * increment is lost; with plain reads the stale write is accepted and the newer holder repeats the
 * same value: one increment lost although every write was fenced (the control run).
 *
 * Two pauses: `resumeAfterNewerRead` keeps the victim frozen until that newer holder has read
 * (the engine freed the lock during the pause: TTL or session timeout); without it the victim is
 * resumed after `pauseMs` and the newer holder can only come after, when the resumed victim's core
 * sees its lease past the local deadline and gives the lock back (a session engine that kept the
 * lock through a pause shorter than its session timeout).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { openCounter, type CounterKind, type FencedCounter } from './fenced-counter/index.js';
import { alive, safeKill } from './processes.js';

const WORKER = fileURLToPath(new URL('./paused-holder-worker.ts', import.meta.url));
/** How long the scenario waits for a newer holder's read (a loaded machine, a session timeout). */
const NEWER_READ_LIMIT_MS = 30_000;

/** What the victim said when it held the lock (plus its counter's `holding` facts). */
export interface Holding {
  type: 'holding';
  token: string;
  pid: number;
  [fact: string]: unknown;
}

export interface WorkerDone {
  accepted: number;
  rejected: number;
  /** Fenced reads refused (a newer token had read or written). */
  readsRefused: number;
  /** The victim's view of its paused lease when it resumed. */
  paused?: { abortedBeforeWrite: boolean; reason?: string; token: string };
}

export interface PausedHolderOptions {
  /** Which store keeps the counter. */
  counter: CounterKind;
  /** The lock URL the workers connect to. */
  url: string;
  /** Where the counter is. Default `url`. */
  counterUrl?: string;
  /** `fenced`: read-and-advance (the helpers' default); `plain`: reads leave the fence alone (the control). Writes are fenced in both. */
  reads: 'fenced' | 'plain';
  ttlMs: number;
  /** How long the victim stays frozen at least. */
  pauseMs: number;
  /** Keep the victim frozen until a newer holder has read (bounded). Default false. */
  resumeAfterNewerRead?: boolean;
  /** Default 3. */
  workers?: number;
  /** Lock-and-increment cycles per worker. Default 5. */
  increments?: number;
  /** Which primitive the workers take (test/chaos/primitives.ts). Default `mutex`. */
  primitive?: string;
  /**
   * How the victim is paused: `sigstop` (default: SIGSTOP, then SIGCONT), or `atomics`: its event
   * loop is blocked with Atomics.wait for exactly `pauseMs` (a long GC pause; the process keeps
   * running, its sockets stay open, nothing of its own runs).
   */
  pauseBy?: 'sigstop' | 'atomics';
  /** Create the counter `id` before the workers start (e.g. insert its row). */
  prepare?(id: string): Promise<void>;
  /**
   * Runs while the victim is frozen, from the SIGSTOP; `pauseOver` resolves after `pauseMs`. The
   * victim is resumed once both this and `pauseMs` are over.
   */
  whilePaused?(ctx: { holding: Holding; counter: FencedCounter; pauseOver: Promise<void> }): Promise<void>;
}

export interface PausedHolderResult {
  /** The counter at the end. */
  final: number;
  /** Writes accepted, summed over the workers. */
  accepted: number;
  /** `accepted - final`: increments lost. */
  lost: number;
  /** Writes refused as stale, summed over the workers. */
  rejected: number;
  /** Per worker; [0] is the victim. */
  done: WorkerDone[];
  /** A holder with a newer token read before the victim wrote (the interleaving happened). */
  newerReadFirst: boolean;
  /** That read came while the victim was still frozen (the engine gave its lock away meanwhile). */
  newerReadDuringPause: boolean;
  /** The victim's write was accepted although a newer token had read: a stale write accepted. */
  staleAccepted: number;
  /** How long the victim was really frozen. */
  pausedMs: number;
}

/** Run the scenario once on a fresh key and counter; every worker is gone when it settles. */
export async function runPausedHolder(opts: PausedHolderOptions): Promise<PausedHolderResult> {
  const id = randomUUID();
  const key = `fence-test:${id}`;
  const counterUrl = opts.counterUrl ?? opts.url;
  await opts.prepare?.(id);
  const counter = await openCounter(opts.counter, counterUrl, id);
  const procs: ChildProcess[] = [];
  try {
    for (let i = 0; i < (opts.workers ?? 3); i++) {
      const args = [opts.counter, opts.url, counterUrl, key, id, opts.reads, String(opts.increments ?? 5), String(opts.ttlMs), i === 0 ? '1' : '0', opts.primitive ?? 'mutex'];
      procs.push(fork(WORKER, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    }
    const victim = procs[0]!;
    const done = procs.map(
      (c) =>
        new Promise<WorkerDone>((resolve, reject) => {
          c.on('message', (m: { type: string } & WorkerDone) => {
            if (m.type === 'done') resolve(m);
          });
          c.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))));
        }),
    );
    // Every rejection is handled by Promise.all below; this keeps an early one from going unhandled.
    for (const d of done) d.catch(() => undefined);

    // The first read by a holder newer than the frozen victim: that holder waits for 'continue'.
    let gated: ChildProcess | undefined;
    let frozen = false;
    let newerReadDuringPause = false;
    let onNewerRead: () => void = () => undefined;
    const newerRead = new Promise<void>((resolve) => (onNewerRead = resolve));
    for (const c of procs.slice(1)) {
      c.on('message', (m: { type: string }) => {
        if (m.type !== 'newer-read') return;
        if (gated !== undefined) return void c.send({ type: 'continue' });
        gated = c;
        newerReadDuringPause = frozen;
        onNewerRead();
      });
    }
    const limit = (): Promise<void> => delay(NEWER_READ_LIMIT_MS, undefined, { ref: false });

    let pausedMs = 0;
    let newerReadFirst = false;
    let victimAccepted = false;
    const victimWrote = new Promise<void>((resolve) => {
      victim.on('message', (m: { type: string; accepted?: boolean }) => {
        if (m.type !== 'wrote') return;
        victimAccepted = m.accepted === true;
        resolve();
      });
    });
    const holding = new Promise<Holding>((resolve) => victim.on('message', (m: Holding) => m.type === 'holding' && resolve(m)));
    const schedule = (async () => {
      const h = await holding;
      const atomics = opts.pauseBy === 'atomics';
      if (atomics) victim.send({ type: 'block', ms: opts.pauseMs });
      else process.kill(victim.pid!, 'SIGSTOP');
      frozen = true;
      const t0 = performance.now();
      for (const c of procs.slice(1)) c.send({ type: 'arm', token: h.token });
      const pauseOver = delay(opts.pauseMs);
      await Promise.all([pauseOver, opts.whilePaused?.({ holding: h, counter, pauseOver })]);
      if (opts.resumeAfterNewerRead && !atomics) await Promise.race([newerRead, limit()]);
      if (!atomics) process.kill(victim.pid!, 'SIGCONT');
      frozen = false;
      pausedMs = performance.now() - t0;
      // Resumed, the victim's core sees its lease past the deadline (and gives a kept lock back).
      await Promise.race([newerRead, limit()]);
      newerReadFirst = gated !== undefined;
      victim.send({ type: 'write' });
      await victimWrote;
      for (const c of procs.slice(1)) c.send({ type: 'disarm' });
      gated?.send({ type: 'continue' });
    })();
    // Once every worker is connected, the victim goes first and the others once it holds: were
    // they started together, the others could finish every increment before the victim's first
    // grant, and no newer holder would come while it is frozen (seen on Redlock).
    const ready = Promise.all(procs.map((c) => new Promise<void>((resolve) => c.on('message', (m: { type: string }) => m.type === 'ready' && resolve()))));
    await Promise.race([ready, Promise.all(done)]);
    victim.send({ type: 'go' });
    void holding.then(() => {
      for (const c of procs.slice(1)) c.send({ type: 'go' });
    });
    const [results] = await Promise.all([Promise.all(done), schedule]);
    const final = await counter.readPlain();
    const accepted = results.reduce((s, d) => s + d.accepted, 0);
    return {
      final,
      accepted,
      lost: accepted - final,
      rejected: results.reduce((s, d) => s + d.rejected, 0),
      done: results,
      newerReadFirst,
      newerReadDuringPause,
      staleAccepted: newerReadFirst && victimAccepted ? 1 : 0,
      pausedMs,
    };
  } finally {
    for (const c of procs) {
      if (alive(c) && c.pid !== undefined) {
        safeKill(c.pid, 'SIGCONT');
        safeKill(c.pid, 'SIGKILL');
      }
    }
    await counter.close();
  }
}
