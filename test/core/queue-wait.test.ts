/**
 * The core's queue algorithm (src/core/wait-loop.ts) over an in-memory queue engine: a pure
 * JavaScript queue per key with sessions, entries, watches and withdrawals (the semantics of
 * ZooKeeper's sequential znodes and etcd's create revisions, without either), whose steps can be
 * held at will so that a test can abort, time out or lose the session at every await point.
 * Fake timers and a fake monotonic clock: no real sleeps.
 */
import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WaitLoop } from '../../src/core/wait-loop.js';
import type {
  AcquireRequest,
  DriverInfo,
  ExtendItem,
  GoneResult,
  Grant,
  LockState,
  QueueDriver,
  QueueEntry,
  QueueView,
  TryResult,
  ForceReleased,
  KeyPage,
} from '../../src/drivers/driver.js';
import { UnavailableError } from '../../src/errors.js';

type Step = 'enqueue' | 'look' | 'waitGone';

interface FakeEntry extends QueueEntry {
  readonly key: string;
  readonly owner: string;
  readonly session: number;
}

/** A step held by a test: it completes (with the engine's state then) once released. */
interface Hold {
  readonly reached: Promise<void>;
  release(): void;
}

/** See the file header. */
class FakeQueueEngine implements QueueDriver<FakeEntry> {
  readonly kind = 'queue' as const;
  readonly info: DriverInfo = { name: 'fake-queue', liveness: 'session', fair: true, scope: 'process' };
  /** The engine's entries, in creation order (ascending seq). */
  readonly entries: FakeEntry[] = [];
  /** Steps called, in order. */
  readonly calls: Step[] = [];
  /** The driver's current session; entries of an ended session are gone. */
  session = 1;
  private seq = 0n;
  private readonly watchers = new Set<{ ids: Set<string>; fire(id: string): void }>();
  private readonly holds = new Map<Step, { reached: () => void; released: Promise<void> }>();
  private readonly failures = new Map<Step, Error>();

  // ---------------------------------------------------------------- test controls

  /** Hold the next call of `step` until the returned hold is released. */
  hold(step: Step): Hold {
    let reached = (): void => undefined;
    let release = (): void => undefined;
    const r = new Promise<void>((resolve) => (reached = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.holds.set(step, { reached, released });
    return { reached: r, release };
  }

  /** The next call of `step` fails with an engine error. */
  failNext(step: Step, error = new Error(`${step} failed`)): void {
    this.failures.set(step, error);
  }

  /** Someone else deletes an entry (an operator, a raw client), or its holder releases it. */
  remove(id: string): void {
    const i = this.entries.findIndex((e) => e.id === id);
    if (i < 0) return;
    this.entries.splice(i, 1);
    for (const w of [...this.watchers]) if (w.ids.has(id)) w.fire(id);
  }

  /** The session ends (expired on the engine): its entries go; the next enqueue opens a new one. */
  loseSession(): void {
    const ended = this.session;
    this.session += 1;
    for (const e of this.entries.filter((x) => x.session === ended)) this.remove(e.id);
  }

  /** Put a contender of another process in the queue. */
  add(key: string, owner: string): FakeEntry {
    const e: FakeEntry = { id: `${key}/${owner}`, seq: ++this.seq, key, owner, session: -1 };
    this.entries.push(e);
    return e;
  }

  queueOf(key: string): string[] {
    return this.entries.filter((e) => e.key === key).map((e) => e.owner);
  }

  get watching(): number {
    return this.watchers.size;
  }

  // ---------------------------------------------------------------- QueueDriver

  async enqueue(req: AcquireRequest): Promise<{ entry: FakeEntry; view: QueueView }> {
    await this.step('enqueue');
    const mine = this.entries.find((e) => e.owner === req.owner && e.key === req.key && e.session === this.session);
    const entry = mine ?? { id: `${req.key}/${req.owner}/${this.seq + 1n}`, seq: ++this.seq, key: req.key, owner: req.owner, session: this.session };
    if (!mine) this.entries.push(entry);
    return { entry, view: this.view(entry) };
  }

  async look(_req: AcquireRequest, entry: FakeEntry): Promise<QueueView> {
    await this.step('look');
    return this.view(entry);
  }

  async waitGone(_req: AcquireRequest, watched: QueueEntry, mine: FakeEntry, signal: AbortSignal): Promise<GoneResult> {
    await this.step('waitGone');
    if (!this.has(mine.id)) return 'mine-gone';
    if (!this.has(watched.id)) return 'gone';
    return new Promise<GoneResult>((resolve, reject) => {
      const w = {
        ids: new Set([watched.id, mine.id]),
        fire: (id: string): void => {
          done();
          resolve(id === mine.id ? 'mine-gone' : 'gone');
        },
      };
      const onAbort = (): void => {
        done();
        reject(signal.reason as Error);
      };
      const done = (): void => {
        this.watchers.delete(w);
        signal.removeEventListener('abort', onAbort);
      };
      this.watchers.add(w);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  grant(req: AcquireRequest, entry: FakeEntry, sentAt: number): Grant | null {
    if (entry.session !== this.session || !this.has(entry.id)) return null;
    return { token: entry.seq, sentAt };
  }

  withdraw(req: AcquireRequest, entry: FakeEntry | undefined): Promise<void> {
    if (entry) this.remove(entry.id);
    else for (const e of this.entries.filter((x) => x.owner === req.owner && x.key === req.key)) this.remove(e.id);
    return Promise.resolve();
  }

  tryAcquire(): Promise<TryResult> {
    return Promise.resolve({ ok: false, retryAfterMs: -1 });
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    return Promise.resolve(items.map(() => true));
  }

  release(key: string, owner: string): Promise<boolean> {
    const e = this.entries.find((x) => x.key === key && x.owner === owner);
    if (e) this.remove(e.id);
    return Promise.resolve(e !== undefined);
  }

  list(): Promise<KeyPage> {
    return Promise.resolve({ keys: [] });
  }
  forceRelease(): Promise<ForceReleased> {
    return Promise.resolve({ released: 0, fence: 0n });
  }
  inspect(): Promise<LockState | null> {
    return Promise.resolve(null);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private has(id: string): boolean {
    return this.entries.some((e) => e.id === id);
  }

  private view(entry: FakeEntry): QueueView {
    const queue = this.entries.filter((e) => e.key === entry.key);
    const index = queue.findIndex((e) => e.id === entry.id);
    const before = queue[index - 1];
    return {
      mine: index >= 0 && entry.session === this.session,
      ahead: Math.max(0, index),
      predecessor: before ? { id: before.id, seq: before.seq } : undefined,
      sentAt: performance.now(),
    };
  }

  private async step(step: Step): Promise<void> {
    this.calls.push(step);
    const hold = this.holds.get(step);
    if (hold) {
      this.holds.delete(step);
      hold.reached();
      await hold.released;
    }
    const failure = this.failures.get(step);
    if (failure) {
      this.failures.delete(step);
      throw failure;
    }
  }
}

let engine: FakeQueueEngine;
let loop: WaitLoop;
let owners = 0;
const waiting: string[] = [];

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  // The core's monotonic clock (performance.now from node:perf_hooks) follows the fake time.
  vi.spyOn(performance, 'now').mockImplementation(() => Date.now());
  engine = new FakeQueueEngine();
  waiting.length = 0;
  loop = new WaitLoop(engine, { waiting: (req) => waiting.push(req.owner) });
});

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

function request(key = 'k'): AcquireRequest {
  return { key, owner: `me-${++owners}`, ttlMs: 10_000 };
}

/** Start a wait of `waitMs`; its outcome, never an unhandled rejection. */
function wait(req: AcquireRequest, waitMs: number, signal?: AbortSignal): Promise<{ grant: Grant | null } | { error: unknown }> {
  return loop.acquire(req, performance.now() + waitMs, signal).then(
    (grant) => ({ grant }),
    (error: unknown) => ({ error }),
  );
}

/** Let promise chains and due timers run. */
async function settle(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

describe('queue algorithm: the turn', () => {
  it('nobody ahead: granted on the enqueue alone', async () => {
    const req = request();
    const r = await wait(req, 1000);
    expect('grant' in r && r.grant?.token).toBe(1n);
    expect(engine.calls).toEqual(['enqueue']);
    expect(waiting).toEqual([]);
  });

  it('behind the holder: when it goes, the turn is ours without a second look', async () => {
    const holder = engine.add('k', 'holder');
    const req = request();
    const pending = wait(req, 5000);
    await settle();
    expect(waiting).toEqual([req.owner]);
    expect(engine.watching).toBe(1);
    engine.remove(holder.id);
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBe(2n);
    expect(engine.calls).toEqual(['enqueue', 'waitGone']);
    expect(engine.watching).toBe(0);
  });

  it('behind two: when the one ahead withdraws, it looks again and watches the holder', async () => {
    const holder = engine.add('k', 'holder');
    const other = engine.add('k', 'other');
    const req = request();
    const pending = wait(req, 5000);
    await settle();
    engine.remove(other.id); // a waiter ahead gives up: the holder still holds
    await settle();
    expect(engine.calls).toEqual(['enqueue', 'waitGone', 'look', 'waitGone']);
    expect(engine.queueOf('k')).toEqual(['holder', req.owner]);
    engine.remove(holder.id);
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBe(3n);
    expect(engine.calls).toEqual(['enqueue', 'waitGone', 'look', 'waitGone']);
  });

  it("'look' from the engine (its watch can no longer tell) makes it look again, even behind the holder", async () => {
    engine.add('k', 'holder');
    const original = engine.waitGone.bind(engine);
    let first = true;
    engine.waitGone = (req, watched, mine, signal) => {
      if (!first) return original(req, watched, mine, signal);
      first = false;
      engine.calls.push('waitGone');
      return Promise.resolve('look');
    };
    const pending = wait(request(), 1000);
    await settle();
    // Looked again and watches the holder, which still holds: no grant.
    expect(engine.calls).toEqual(['enqueue', 'waitGone', 'look', 'waitGone']);
    await settle(1000);
    expect(await pending).toEqual({ grant: null });
    expect(engine.queueOf('k')).toEqual(['holder']);
  });

  it('the wait runs out while the holder holds: null (a plain timeout), entry withdrawn, no watch left', async () => {
    engine.add('k', 'holder');
    const pending = wait(request(), 2000);
    await settle(1999);
    expect(engine.queueOf('k')).toHaveLength(2);
    await settle(1);
    expect(await pending).toEqual({ grant: null });
    expect(engine.queueOf('k')).toEqual(['holder']);
    expect(engine.watching).toBe(0);
    expect(loop.size).toBe(0);
  });
});

describe('queue algorithm: abort at every await point', () => {
  it('during the enqueue: rejects at once with the reason; the entry the enqueue makes later is withdrawn', async () => {
    engine.add('k', 'holder');
    const hold = engine.hold('enqueue');
    const ac = new AbortController();
    const req = request();
    const pending = wait(req, 5000, ac.signal);
    await hold.reached;
    const reason = new Error('caller gave up');
    ac.abort(reason);
    expect(await pending).toEqual({ error: reason });
    hold.release();
    await settle();
    expect(engine.queueOf('k')).toEqual(['holder']);
    await loop.drain(100);
  });

  it('during the wait for the predecessor: rejects at once; entry withdrawn, watch gone', async () => {
    engine.add('k', 'holder');
    const ac = new AbortController();
    const pending = wait(request(), 5000, ac.signal);
    await settle();
    expect(engine.watching).toBe(1);
    ac.abort('stop');
    expect(await pending).toEqual({ error: 'stop' });
    expect(engine.queueOf('k')).toEqual(['holder']);
    expect(engine.watching).toBe(0);
  });

  it('while the watch is being set (waitGone held): rejects at once; entry withdrawn', async () => {
    engine.add('k', 'holder');
    const hold = engine.hold('waitGone');
    const ac = new AbortController();
    const pending = wait(request(), 5000, ac.signal);
    await hold.reached;
    ac.abort('stop');
    expect(await pending).toEqual({ error: 'stop' });
    expect(engine.queueOf('k')).toEqual(['holder']);
    hold.release();
    await settle();
    expect(engine.watching).toBe(0);
  });

  it('during a look: rejects at once; entry withdrawn, even if the look would have granted', async () => {
    const holder = engine.add('k', 'holder');
    const other = engine.add('k', 'other');
    const ac = new AbortController();
    const req = request();
    const pending = wait(req, 5000, ac.signal);
    await settle();
    const hold = engine.hold('look');
    engine.remove(other.id);
    await hold.reached;
    engine.remove(holder.id); // the look will find us first
    ac.abort('stop');
    expect(await pending).toEqual({ error: 'stop' });
    hold.release();
    await settle();
    expect(engine.queueOf('k')).toEqual([]);
  });

  it('by close() (abortAll): every wait ends with the reason and leaves the queue', async () => {
    engine.add('k', 'holder');
    const a = wait(request(), 5000);
    const b = wait(request(), 5000);
    await settle();
    expect(engine.queueOf('k')).toHaveLength(3);
    loop.abortAll('closed');
    expect(await a).toEqual({ error: 'closed' });
    expect(await b).toEqual({ error: 'closed' });
    await loop.drain(100);
    expect(engine.queueOf('k')).toEqual(['holder']);
  });
});

describe('queue algorithm: the entry goes', () => {
  it('session lost while queued: it queues again on the new session and gets the lock', async () => {
    const holder = engine.add('k', 'holder');
    const req = request();
    const pending = wait(req, 5000);
    await settle();
    engine.loseSession();
    await settle();
    // Queued again at once, behind the holder, on session 2.
    expect(engine.calls).toEqual(['enqueue', 'waitGone', 'enqueue', 'waitGone']);
    expect(engine.entries.map((e) => [e.owner, e.session])).toEqual([
      ['holder', -1],
      [req.owner, 2],
    ]);
    engine.remove(holder.id);
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBe(3n);
  });

  it('own entry deleted by someone else: it queues again and gets the lock within its wait', async () => {
    const holder = engine.add('k', 'holder');
    const req = request();
    const pending = wait(req, 5000);
    await settle();
    const mine = engine.entries.find((e) => e.owner === req.owner);
    engine.remove(mine!.id);
    await settle();
    expect(engine.queueOf('k')).toEqual(['holder', req.owner]);
    engine.remove(holder.id);
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBeGreaterThan(mine!.seq);
  });

  it('a session that cannot carry the grant (grant() null): withdrawn, queued again, granted on the new one', async () => {
    const holder = engine.add('k', 'holder');
    const req = request();
    const pending = wait(req, 5000);
    await settle();
    // The session ends locally but the engine has not removed the entry yet (e.g. its local
    // deadline passed): grant() refuses it.
    engine.session += 1;
    engine.remove(holder.id);
    await settle();
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBe(3n);
    expect(engine.entries.map((e) => [e.owner, e.session])).toEqual([[req.owner, 2]]);
  });
});

describe('queue algorithm: engine errors and late grants', () => {
  it('an error in a look keeps the entry: it backs off and looks again (its place is kept)', async () => {
    const holder = engine.add('k', 'holder');
    const other = engine.add('k', 'other');
    const req = request();
    const errors: unknown[] = [];
    loop = new WaitLoop(engine, { engineError: (_, e) => errors.push(e) });
    const pending = wait(req, 5000);
    await settle();
    engine.failNext('look');
    engine.remove(other.id);
    await settle(1000); // past the backoff
    expect(errors).toHaveLength(1);
    expect(engine.calls.filter((c) => c === 'enqueue')).toHaveLength(1);
    expect(engine.queueOf('k')).toEqual(['holder', req.owner]);
    engine.remove(holder.id);
    const r = await pending;
    expect('grant' in r && r.grant?.token).toBe(3n);
  });

  it('an engine that fails until the wait runs out: UnavailableError with its error as the cause, nothing left', async () => {
    engine.add('k', 'holder');
    const failure = new Error('ECONNREFUSED');
    const original = engine.enqueue.bind(engine);
    engine.enqueue = () => {
      engine.calls.push('enqueue');
      return Promise.reject(failure);
    };
    const pending = wait(request(), 2000);
    await settle(2000);
    const r = await pending;
    expect('error' in r && r.error).toBeInstanceOf(UnavailableError);
    expect('error' in r && (r.error as UnavailableError).cause).toBe(failure);
    expect(engine.calls.length).toBeGreaterThan(2); // retried with backoff
    engine.enqueue = original;
    expect(engine.queueOf('k')).toEqual(['holder']);
  });

  it('grant after give-up: an enqueue that answers "first" after the deadline is withdrawn, never granted', async () => {
    const holder = engine.add('k', 'holder');
    const hold = engine.hold('enqueue');
    const req = request();
    const pending = wait(req, 1000);
    await hold.reached;
    await settle(1000);
    const r = await pending;
    // The engine never answered this wait: unavailable, not a plain timeout.
    expect('error' in r && r.error).toBeInstanceOf(UnavailableError);
    engine.remove(holder.id);
    hold.release(); // the enqueue lands now, first in the queue
    await settle();
    expect(engine.queueOf('k')).toEqual([]);
    await loop.drain(100);
    expect(loop.size).toBe(0);
  });

  it('grant after give-up: the wait ends while the holder leaves; the handed turn is withdrawn for the next one', async () => {
    const holder = engine.add('k', 'holder');
    const ac = new AbortController();
    const req = request();
    const pending = wait(req, 5000, ac.signal);
    await settle();
    const next = request();
    const second = wait(next, 5000);
    await settle();
    expect(engine.queueOf('k')).toEqual(['holder', req.owner, next.owner]);
    ac.abort('stop');
    engine.remove(holder.id);
    expect(await pending).toEqual({ error: 'stop' });
    const r = await second;
    expect('grant' in r && r.grant).toBeTruthy();
    expect(engine.queueOf('k')).toEqual([next.owner]);
  });
});
