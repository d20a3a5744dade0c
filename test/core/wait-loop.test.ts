/**
 * Unit tests of the core wait loop's try-set path (src/core/wait-loop.ts) with an injected clock:
 * vitest's fake timers drive `setTimeout` and `performance.now()`, so nothing here sleeps for real.
 * The driver is a small in-memory try-set engine written for the test (pure logic, not a mock of
 * any real engine); each test controls when its answers come back.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { track } from './track.js';
import { LatchWatch } from '../../src/core/change-watch.js';
import { SILENT_ENGINE_MS, WaitLoop } from '../../src/core/wait-loop.js';
import type { AcquireRequest, ChangeWatch, ExtendItem, LockState, TryResult, TrySetDriver, ForceReleased, KeyPage } from '../../src/drivers/driver.js';
import { UnavailableError } from '../../src/errors.js';

interface Pending {
  resolve: (r: TryResult) => void;
  reject: (e: Error) => void;
}

/** A try-set engine whose answers the test hands out one by one, or answers by itself. */
class ScriptedEngine implements TrySetDriver {
  readonly kind = 'try-set' as const;
  readonly info = { name: 'scripted', liveness: 'lease', fair: false, scope: 'process' } as const;
  holder: string | undefined;
  token = 0n;
  /** When set, tries wait for the test to answer them. */
  manual = false;
  pending: Pending[] = [];
  /** Errors the next tries throw, in order. */
  failures: Error[] = [];
  released: string[] = [];
  cancelled: string[] = [];
  tries = 0;
  /** Busy answers say the watch cannot see this holder go (TryResult.unseen). */
  unseen = false;
  private readonly watches = new Set<LatchWatch>();

  /** Offer watchNow (a watch that opens at once, as Redis's once its channel is subscribed). */
  eager = false;
  /** The `queue` flag of every try, in order. */
  queues: boolean[] = [];

  tryAcquire(req: AcquireRequest, queue = false): Promise<TryResult> {
    this.tries += 1;
    this.queues.push(queue);
    if (this.manual) return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
    const failure = this.failures.shift();
    if (failure !== undefined) return Promise.reject(failure);
    if (this.holder !== undefined) return Promise.resolve(this.unseen ? { ok: false, retryAfterMs: -1, unseen: true } : { ok: false, retryAfterMs: -1 });
    this.holder = req.owner;
    this.token += 1n;
    return Promise.resolve({ ok: true, grant: { token: this.token, sentAt: performance.now() } });
  }

  watch(): Promise<ChangeWatch> {
    const w = new LatchWatch((x) => this.watches.delete(x));
    this.watches.add(w);
    return Promise.resolve(w);
  }

  watchNow(): ChangeWatch | undefined {
    if (!this.eager) return undefined;
    const w = new LatchWatch((x) => this.watches.delete(x));
    this.watches.add(w);
    return w;
  }

  cancel(_key: string, owner: string): Promise<void> {
    this.cancelled.push(owner);
    return Promise.resolve();
  }

  release(_key: string, owner: string): Promise<boolean> {
    this.released.push(owner);
    if (this.holder !== owner) return Promise.resolve(false);
    this.holder = undefined;
    for (const w of this.watches) w.changed();
    return Promise.resolve(true);
  }

  get openWatches(): number {
    return this.watches.size;
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    return Promise.resolve(items.map((i) => i.owner === this.holder));
  }

  list(): Promise<KeyPage> {
    return Promise.resolve({ keys: [] });
  }
  forceRelease(): Promise<ForceReleased> {
    return Promise.resolve({ released: 0, fence: 0n });
  }
  inspect(): Promise<LockState | null> {
    return Promise.resolve(this.holder ? { owner: this.holder, token: this.token, remainingMs: 1000 } : null);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const req = (owner: string): AcquireRequest => ({ key: 'k', owner, ttlMs: 10_000 });

/** A scripted engine set up as given, and a wait loop over it. */
function setUp(set: Partial<Pick<ScriptedEngine, 'eager' | 'holder' | 'manual' | 'failures'>>): { engine: ScriptedEngine; loop: WaitLoop } {
  const engine = Object.assign(new ScriptedEngine(), set);
  return { engine, loop: new WaitLoop(engine) };
}
const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });


describe('core wait loop (try-set engines, injected clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('an abort during the first try ends the wait at once; the grant that lands later is given back', async () => {
    const engine = new ScriptedEngine();
    engine.manual = true;
    const loop = new WaitLoop(engine);
    const ac = new AbortController();
    const t = track(loop.acquire(req('a'), performance.now() + 5000, ac.signal));
    await vi.advanceTimersByTimeAsync(10);
    expect(engine.pending).toHaveLength(1);
    ac.abort(new Error('caller gave up'));
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('rejected');
    expect((t.error as Error).message).toBe('caller gave up');
    engine.pending[0]?.resolve({ ok: true, grant: { token: 1n, sentAt: performance.now() } });
    await vi.advanceTimersByTimeAsync(0);
    expect(engine.released).toEqual(['a']);
    expect(loop.size).toBe(0);
  });

  it('a try that never answers: the deadline ends the wait with UnavailableError (no answer), not a timeout', async () => {
    const engine = new ScriptedEngine();
    engine.manual = true;
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 1500));
    await vi.advanceTimersByTimeAsync(1499);
    expect(t.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(2);
    expect(t.state).toBe('rejected');
    expect(t.error).toBeInstanceOf(UnavailableError);
    expect((t.error as Error).message).toMatch(/No answer from the engine/);
  });

  it('first tries in flight share one deadline timer: each ends at its own deadline, whatever the order they started in', async () => {
    const engine = new ScriptedEngine();
    engine.manual = true;
    const loop = new WaitLoop(engine);
    const t0 = performance.now();
    // A long deadline first, then a shorter one (the timer is re-armed for it), then one that
    // answers (its entry goes; the timer stays armed for the short one).
    const long = track(loop.acquire({ ...req('a'), key: 'k1' }, t0 + 3000));
    const short = track(loop.acquire({ ...req('b'), key: 'k2' }, t0 + 1000));
    const answered = track(loop.acquire({ ...req('c'), key: 'k3' }, t0 + 500));
    await vi.advanceTimersByTimeAsync(10);
    expect(engine.pending).toHaveLength(3);
    engine.pending[2]?.resolve({ ok: true, grant: { token: 1n, sentAt: performance.now() } });
    await vi.advanceTimersByTimeAsync(600);
    expect(answered.state).toBe('resolved');
    expect(short.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(391);
    // The engine answered 'c' a moment before: slow, not gone, so a timeout.
    expect(short.state).toBe('resolved');
    expect(short.value).toBeNull();
    expect(long.state).toBe('pending');
    // A try that starts now, with a deadline before the long one's: its own deadline counts.
    const later = track(loop.acquire({ ...req('d'), key: 'k4' }, performance.now() + 200));
    await vi.advanceTimersByTimeAsync(199);
    expect(later.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(2);
    expect(later.state).not.toBe('pending');
    expect(long.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(3000 - (performance.now() - t0) + 1);
    // Silent since 'c' answered, for longer than SILENT_ENGINE_MS: no answer.
    expect(long.state).toBe('rejected');
    expect(long.error).toBeInstanceOf(UnavailableError);
  });

  it('a slow first try of an engine that answered a moment ago: a timeout (null), and its late grant is given back', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    // The engine answers a wait (busy until its deadline), then the next wait's first try is slow.
    expect(await loop.acquire(req('a'), performance.now())).toBeNull();
    engine.manual = true;
    await vi.advanceTimersByTimeAsync(300);
    const t = track(loop.acquire(req('b'), performance.now() + 150));
    await vi.advanceTimersByTimeAsync(151);
    expect(t.state).toBe('resolved');
    expect(t.value).toBeNull();
    engine.holder = undefined;
    engine.pending[0]?.resolve({ ok: true, grant: { token: 9n, sentAt: performance.now() } });
    await vi.advanceTimersByTimeAsync(0);
    expect(engine.released).toEqual(['b']);
    // Silent for longer than SILENT_ENGINE_MS before a deadline: "no answer" again.
    const u = track(loop.acquire(req('c'), performance.now() + SILENT_ENGINE_MS + 10));
    await vi.advanceTimersByTimeAsync(SILENT_ENGINE_MS + 11);
    expect(u.state).toBe('rejected');
    expect(u.error).toBeInstanceOf(UnavailableError);
  });

  it('a single try that answered (heard()) counts as the engine answering', async () => {
    const engine = new ScriptedEngine();
    engine.manual = true;
    const loop = new WaitLoop(engine);
    loop.heard();
    const t = track(loop.acquire(req('a'), performance.now() + 200));
    await vi.advanceTimersByTimeAsync(201);
    expect(t.state).toBe('resolved');
    expect(t.value).toBeNull();
  });

  it('engine errors until the deadline: UnavailableError whose cause is the engine error, at the deadline', async () => {
    const engine = new ScriptedEngine();
    engine.failures = Array.from({ length: 1000 }, () => refused);
    const errors: unknown[] = [];
    const loop = new WaitLoop(engine, { engineError: (_r, e) => errors.push(e) });
    const start = performance.now();
    const t = track(loop.acquire(req('a'), start + 5000));
    await vi.advanceTimersByTimeAsync(4990);
    expect(t.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(20);
    expect(t.state).toBe('rejected');
    expect(t.error).toBeInstanceOf(UnavailableError);
    expect((t.error as UnavailableError).cause).toBe(refused);
    // Jittered exponential backoff: a handful of retries, not a busy loop.
    expect(engine.tries).toBeGreaterThan(3);
    expect(engine.tries).toBeLessThan(40);
    expect(errors.length).toBe(engine.tries);
  });

  it('an engine error that is already an UnavailableError (a quorum error) is retried until the deadline, then surfaces as it is', async () => {
    const engine = new ScriptedEngine();
    const quorum = new UnavailableError('Redlock acquire needs 2 of 3 nodes and got 0');
    engine.failures = Array.from({ length: 1000 }, () => quorum);
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 2000));
    await vi.advanceTimersByTimeAsync(1990);
    expect(t.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(20);
    expect(t.state).toBe('rejected');
    expect(t.error).toBe(quorum);
    expect(engine.tries).toBeGreaterThan(3);
  });

  it('a watch that opens at once makes the first try the decisive one: one try less per wait', async () => {
    for (const eager of [false, true]) {
      const { engine, loop } = setUp({ eager, holder: 'other' });
      const t = track(loop.acquire(req('a'), performance.now() + 5000));
      await vi.advanceTimersByTimeAsync(10);
      expect(t.state).toBe('pending');
      // Without it: an unqueued try, then (watch open) the queued decisive one; with it: one, queued.
      expect(engine.queues).toEqual(eager ? [true] : [false, true]);
      expect(engine.openWatches).toBe(1);
      await engine.release('k', 'other');
      await vi.advanceTimersByTimeAsync(0);
      expect(t.state).toBe('resolved');
      expect(engine.holder).toBe('a');
      expect(engine.queues).toEqual(eager ? [true, true] : [false, true, true]);
      expect(engine.openWatches).toBe(0);
      expect(engine.cancelled).toEqual([]);
    }
  });

  it('many waits starting at once on one key: only the first opens an early watch and queues; the rest park at the gate', async () => {
    const { engine, loop } = setUp({ eager: true, holder: 'other' });
    const waits = Array.from({ length: 50 }, (_, i) => track(loop.acquire(req(`w${i}`), performance.now() + 5000)));
    await vi.advanceTimersByTimeAsync(10);
    expect(engine.queues.filter((q) => q)).toHaveLength(1);
    expect(engine.cancelled).toEqual([]);
    expect(engine.openWatches).toBe(1);
    await engine.release('k', 'other');
    await vi.advanceTimersByTimeAsync(0);
    expect(waits.filter((w) => w.state === 'resolved')).toHaveLength(1);
    expect(engine.holder).toBe('w0');
  });

  it('a free key with a watch that opens at once: granted by the first try, the watch closed', async () => {
    const { engine, loop } = setUp({ eager: true });
    const t = track(loop.acquire(req('a'), performance.now() + 5000));
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('resolved');
    expect(engine.tries).toBe(1);
    expect(engine.openWatches).toBe(0);
    expect(engine.cancelled).toEqual([]);
  });

  it('close() while an early (queued) first try is in flight: the watch closes and the queue entry is left', async () => {
    const { engine, loop } = setUp({ eager: true, manual: true });
    const t = track(loop.acquire(req('a'), performance.now() + 5000));
    await vi.advanceTimersByTimeAsync(1);
    expect(engine.pending).toHaveLength(1);
    loop.abortAll(new Error('closed'));
    engine.pending[0]?.resolve({ ok: false, retryAfterMs: -1 });
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('rejected');
    expect((t.error as Error).message).toBe('closed');
    expect(engine.cancelled).toEqual(['a']);
    expect(engine.openWatches).toBe(0);
  });

  it('an early first try that never answers: UnavailableError at the deadline, the watch closed, the entry left', async () => {
    const { engine, loop } = setUp({ eager: true, manual: true });
    const t = track(loop.acquire(req('a'), performance.now() + 1500));
    await vi.advanceTimersByTimeAsync(1501);
    expect(t.state).toBe('rejected');
    expect(t.error).toBeInstanceOf(UnavailableError);
    expect(engine.cancelled).toEqual(['a']);
    expect(engine.openWatches).toBe(0);
  });

  it('a wait that began with an early watch and times out leaves the queue once and keeps no watch', async () => {
    const { engine, loop } = setUp({ eager: true, holder: 'other' });
    const t = track(loop.acquire(req('a'), performance.now() + 1000));
    await vi.advanceTimersByTimeAsync(1001);
    expect(t.state).toBe('resolved');
    expect(t.value).toBeNull();
    expect(engine.cancelled).toEqual(['a']);
    expect(engine.openWatches).toBe(0);
    expect(loop.size).toBe(0);
  });

  it('an early first try that fails: the wait retries queued on the same watch and is granted', async () => {
    const { engine, loop } = setUp({ eager: true, failures: [refused] });
    const t = track(loop.acquire(req('a'), performance.now() + 5000));
    await vi.advanceTimersByTimeAsync(200);
    expect(t.state).toBe('resolved');
    expect(engine.holder).toBe('a');
    expect(engine.queues).toEqual([true, true]);
    expect(engine.openWatches).toBe(0);
  });

  it('an engine error, then recovery: the wait goes on and is granted', async () => {
    const engine = new ScriptedEngine();
    engine.failures = [refused, refused];
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 5000));
    await vi.advanceTimersByTimeAsync(200);
    expect(t.state).toBe('resolved');
    expect(engine.holder).toBe('a');
  });

  it('busy, then errors, then busy until the deadline: a plain timeout (null), since the engine answered last', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 1000));
    await vi.advanceTimersByTimeAsync(1001);
    expect(t.state).toBe('resolved');
    expect(t.value).toBeNull();
    expect(engine.openWatches).toBe(0);
    expect(engine.cancelled).toEqual(['a']);
  });

  it('a holder the watch cannot see (unseen): the core backs off (jittered, capped), the driver keeps no timer', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    engine.unseen = true;
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 60_000));
    await vi.advanceTimersByTimeAsync(10_000);
    // Backoff up to 1 s: a try every second or so, not a busy loop, and not one wait of 60 s.
    expect(engine.tries).toBeGreaterThan(5);
    expect(engine.tries).toBeLessThan(40);
    // The holder goes without a wake-up: the next backoff round finds the key free.
    engine.holder = undefined;
    await vi.advanceTimersByTimeAsync(1100);
    expect(t.state).toBe('resolved');
    expect(engine.holder).toBe('a');
  });

  it('a release wakes the waiter through its watch, with no polling in between', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 60_000));
    await vi.advanceTimersByTimeAsync(10);
    const triesWhileHeld = engine.tries;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(engine.tries).toBe(triesWhileHeld);
    await engine.release('k', 'other');
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('resolved');
    expect(engine.holder).toBe('a');
    expect(engine.openWatches).toBe(0);
  });

  it('an abort while watching ends the wait at once and leaves the engine queue', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const ac = new AbortController();
    const t = track(loop.acquire(req('a'), performance.now() + 60_000, ac.signal));
    await vi.advanceTimersByTimeAsync(10);
    ac.abort(new Error('stop'));
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('rejected');
    expect(engine.openWatches).toBe(0);
    expect(engine.cancelled).toEqual(['a']);
  });

  it('abortAll (close) ends every wait, including those queued at the local gate', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const ts = ['a', 'b', 'c'].map((o) => track(loop.acquire(req(o), performance.now() + 60_000)));
    await vi.advanceTimersByTimeAsync(10);
    expect(loop.gatedKeys).toBe(1);
    loop.abortAll(new Error('closed'));
    await vi.advanceTimersByTimeAsync(0);
    for (const t of ts) expect(t.state).toBe('rejected');
    await loop.drain(1000);
    expect(loop.size).toBe(0);
    expect(loop.gatedKeys).toBe(0);
  });

  it('abortAll (close) while the first try is in flight: the wait ends with the reason once the try answers busy', async () => {
    // Found in CI on PostgreSQL's table mode at load average ~12: the first try (a new pooled
    // connection) was still in flight when close() came, so no wait existed yet for abortAll to
    // end; the try then answered busy and an ordinary wait began on a closed client.
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    engine.manual = true;
    const loop = new WaitLoop(engine);
    const t = track(loop.acquire(req('a'), performance.now() + 60_000));
    await vi.advanceTimersByTimeAsync(1);
    expect(engine.pending).toHaveLength(1);
    const closed = new Error('closed');
    loop.abortAll(closed);
    engine.pending.shift()?.resolve({ ok: false, retryAfterMs: -1 });
    await vi.advanceTimersByTimeAsync(0);
    expect(t.state).toBe('rejected');
    expect(t.error).toBe(closed);
    expect(engine.tries).toBe(1);
    expect(engine.openWatches).toBe(0);
    expect(loop.size).toBe(0);
  });

  it('a wait that runs out at the local gate is a timeout; after an engine error, that error', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const head = track(loop.acquire(req('a'), performance.now() + 60_000));
    await vi.advanceTimersByTimeAsync(10);
    const behind = track(loop.acquire(req('b'), performance.now() + 300));
    await vi.advanceTimersByTimeAsync(400);
    expect(behind.state).toBe('resolved');
    expect(behind.value).toBeNull();
    // The engine fails while the head waits: a wait that runs out behind it says so.
    engine.failures.push(...Array.from({ length: 100 }, () => refused));
    await engine.release('k', 'other');
    await vi.advanceTimersByTimeAsync(10);
    const failing = track(loop.acquire(req('c'), performance.now() + 300));
    await vi.advanceTimersByTimeAsync(400);
    expect(failing.state).toBe('rejected');
    expect(failing.error).toBeInstanceOf(UnavailableError);
    expect((failing.error as UnavailableError).cause).toBe(refused);
    loop.abortAll(new Error('closed'));
    await vi.advanceTimersByTimeAsync(0);
    expect(head.state).not.toBe('pending');
    await loop.drain(1000);
    expect(loop.gatedKeys).toBe(0);
  });

  it('local waiters of one key are served in arrival order, one engine waiter at a time', async () => {
    const engine = new ScriptedEngine();
    engine.holder = 'other';
    const loop = new WaitLoop(engine);
    const order: string[] = [];
    const waits = ['a', 'b', 'c', 'd'].map((o) =>
      loop.acquire(req(o), performance.now() + 60_000).then((g) => {
        order.push(o);
        return g;
      }),
    );
    await vi.advanceTimersByTimeAsync(10);
    expect(engine.openWatches).toBe(1);
    await engine.release('k', 'other');
    for (const o of ['a', 'b', 'c']) {
      await vi.advanceTimersByTimeAsync(1);
      await engine.release('k', o);
    }
    await vi.advanceTimersByTimeAsync(1);
    await Promise.all(waits);
    expect(order).toEqual(['a', 'b', 'c', 'd']);
  });
});
