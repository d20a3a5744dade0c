/**
 * The server-blocking path of the core's wait loop (src/core/wait-loop.ts), on a small in-memory
 * BlockingDriver (pure JS: one lock table with a FIFO queue of blocked attempts, as a server's
 * lock manager keeps it) and vitest's fake timers: no real sleeps. Abort at each await point
 * (fast try, local gate, server wait, slot queue), the deadline during a server wait, engine
 * errors then recovery (backoff, then the grant), and a grant that lands after the wait gave up
 * (given back, before the wait returns).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { track } from './track.js';
import { monotonicNow } from '../../src/core/clock.js';
import { WaitLoop } from '../../src/core/wait-loop.js';
import type { AcquireRequest, BlockingDriver, DriverInfo, ExtendItem, LockState, TryResult, ForceReleased, KeyPage } from '../../src/drivers/driver.js';
import { UnavailableError } from '../../src/errors.js';

interface Blocked {
  readonly req: AcquireRequest;
  readonly resolve: (r: TryResult) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** A server-blocking engine in memory: one holder per key, blocked attempts served FIFO. */
class FakeBlockingDriver implements BlockingDriver {
  readonly kind = 'server-blocking' as const;
  readonly info: DriverInfo = { name: 'fake-blocking', liveness: 'lease', fair: true, scope: 'process' };
  readonly holders = new Map<string, string>();
  readonly blocked: Blocked[] = [];
  private token = 0n;
  /** Calls seen, in order. */
  readonly calls: string[] = [];
  released: string[] = [];
  /** The next `failBlocks` block() calls reject with an engine error. */
  failBlocks = 0;
  /** When set, tryAcquire() answers only when the test resolves it. */
  hangTry: ((r: TryResult) => void) | undefined;
  holdTry = false;
  /** When set, an aborted block() lets the lock land before the cancel (then resolves the grant). */
  grantOnCancel = false;
  maxBlocking: number | undefined;

  constructor(opts: { maxBlocking?: number } = {}) {
    this.maxBlocking = opts.maxBlocking;
  }

  private grant(req: AcquireRequest): TryResult {
    this.holders.set(req.key, req.owner);
    this.token += 1n;
    return { ok: true, grant: { token: this.token, sentAt: monotonicNow() } };
  }

  tryAcquire(req: AcquireRequest): Promise<TryResult> {
    this.calls.push(`try ${req.owner}`);
    if (this.holdTry) return new Promise((resolve) => (this.hangTry = (r) => resolve(r)));
    return Promise.resolve(this.holders.has(req.key) ? { ok: false, retryAfterMs: -1 } : this.grant(req));
  }

  block(req: AcquireRequest, maxMs: number, signal: AbortSignal): Promise<TryResult> {
    this.calls.push(`block ${req.owner}`);
    if (this.failBlocks > 0) {
      this.failBlocks -= 1;
      return Promise.reject(new Error('ECONNREFUSED (fake)'));
    }
    if (!this.holders.has(req.key)) return Promise.resolve(this.grant(req));
    return new Promise<TryResult>((resolve, reject) => {
      const leave = (): void => {
        const i = this.blocked.indexOf(entry);
        if (i >= 0) this.blocked.splice(i, 1);
        clearTimeout(entry.timer);
        signal.removeEventListener('abort', onAbort);
      };
      const entry: Blocked = {
        req,
        resolve: (r) => {
          leave();
          resolve(r);
        },
        reject: (e) => {
          leave();
          reject(e);
        },
        // The server's own timeout of this attempt.
        timer: setTimeout(() => entry.resolve({ ok: false, retryAfterMs: -1 }), maxMs),
      };
      const onAbort = (): void => {
        // The cancel takes one "round trip" (5 ms); a release may hand the lock over before it lands.
        setTimeout(() => {
          if (this.grantOnCancel) {
            this.holders.delete(req.key);
            entry.resolve(this.grant(req));
          } else entry.reject(signal.reason as Error);
        }, 5);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.blocked.push(entry);
    });
  }

  extend(items: readonly ExtendItem[]): Promise<boolean[]> {
    return Promise.resolve(items.map((i) => this.holders.get(i.key) === i.owner));
  }

  release(key: string, owner: string): Promise<boolean> {
    this.calls.push(`release ${owner}`);
    if (this.holders.get(key) !== owner) return Promise.resolve(false);
    this.released.push(owner);
    this.holders.delete(key);
    const next = this.blocked.find((b) => b.req.key === key);
    if (next) next.resolve(this.grant(next.req));
    return Promise.resolve(true);
  }

  list(): Promise<KeyPage> {
    return Promise.resolve({ keys: [] });
  }
  forceRelease(): Promise<ForceReleased> {
    return Promise.resolve({ released: 0, fence: 0n });
  }
  inspect(key: string): Promise<LockState | null> {
    const owner = this.holders.get(key);
    return Promise.resolve(owner === undefined ? null : { owner, token: this.token, remainingMs: -1 });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const req = (owner: string, key = 'k'): AcquireRequest => ({ key, owner, ttlMs: 10_000 });


beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('core wait loop: server-blocking engines', () => {
  it('a waiter blocks on the server and is granted on release (one block, no polling)', async () => {
    const d = new FakeBlockingDriver();
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    const w = track(loop.acquire(req('a'), monotonicNow() + 60_000));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(w.state).toBe('pending');
    expect(d.calls).toEqual(['try a', 'block a']);
    await d.release('k', 'holder');
    await vi.advanceTimersByTimeAsync(0);
    expect(w.state).toBe('resolved');
    expect(d.holders.get('k')).toBe('a');
    expect(loop.gatedKeys).toBe(0);
  });

  it('abort during the fast try: rejects with the reason at once; the late grant is given back', async () => {
    const d = new FakeBlockingDriver();
    d.holdTry = true;
    const loop = new WaitLoop(d);
    const ac = new AbortController();
    const w = track(loop.acquire(req('a'), monotonicNow() + 60_000, ac.signal));
    await vi.advanceTimersByTimeAsync(10);
    const reason = new Error('stop');
    ac.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(w.state).toBe('rejected');
    expect(w.error).toBe(reason);
    // The try answers "granted" after the wait gave up: the core releases it.
    d.holders.set('k', 'a');
    d.hangTry?.({ ok: true, grant: { token: 1n, sentAt: monotonicNow() } });
    await vi.advanceTimersByTimeAsync(0);
    expect(d.released).toEqual(['a']);
    expect(d.calls).not.toContain('block a');
  });

  it('abort while queued at the local gate: rejects at once, the head keeps waiting, the gate empties', async () => {
    const d = new FakeBlockingDriver();
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    const head = track(loop.acquire(req('a'), monotonicNow() + 60_000));
    await vi.advanceTimersByTimeAsync(1);
    const ac = new AbortController();
    const second = track(loop.acquire(req('b'), monotonicNow() + 60_000, ac.signal));
    await vi.advanceTimersByTimeAsync(1);
    // Only the head talks to the engine; the second waits locally (not even a try: no barging).
    expect(d.calls).toEqual(['try a', 'block a']);
    const reason = new Error('stop b');
    ac.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(second.state).toBe('rejected');
    expect(second.error).toBe(reason);
    expect(head.state).toBe('pending');
    await d.release('k', 'holder');
    await vi.advanceTimersByTimeAsync(0);
    expect(head.state).toBe('resolved');
    expect(loop.gatedKeys).toBe(0);
    expect(d.calls).not.toContain('block b');
  });

  it('abort during the server wait: the driver cancels, the wait rejects with the reason, nothing is left queued', async () => {
    const d = new FakeBlockingDriver();
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    const ac = new AbortController();
    const w = track(loop.acquire(req('a'), monotonicNow() + 60_000, ac.signal));
    await vi.advanceTimersByTimeAsync(100);
    expect(d.blocked).toHaveLength(1);
    const reason = new Error('stop');
    ac.abort(reason);
    // Settles once the driver's cancel has landed (one "round trip"), not at the deadline.
    await vi.advanceTimersByTimeAsync(5);
    expect(w.state).toBe('rejected');
    expect(w.error).toBe(reason);
    expect(d.blocked).toHaveLength(0);
    expect(loop.size).toBe(0);
  });

  it('the deadline during the server wait: resolves null (busy) at the deadline, nothing left queued', async () => {
    const d = new FakeBlockingDriver();
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    const w = track(loop.acquire(req('a'), monotonicNow() + 1000));
    await vi.advanceTimersByTimeAsync(990);
    expect(w.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(20);
    expect(w.state).toBe('resolved');
    expect(w.value).toBeNull();
    expect(d.blocked).toHaveLength(0);
    // One server wait for the whole budget (the server's timeout was the wait's remaining time).
    expect(d.calls.filter((c) => c.startsWith('block'))).toHaveLength(1);
  });

  it('engine errors, then recovery: backs off, blocks again, and gets the grant', async () => {
    const d = new FakeBlockingDriver();
    const errors: unknown[] = [];
    const loop = new WaitLoop(d, { engineError: (_r, e) => errors.push(e) });
    d.holders.set('k', 'holder');
    d.failBlocks = 2;
    const w = track(loop.acquire(req('a'), monotonicNow() + 60_000));
    await vi.advanceTimersByTimeAsync(0);
    expect(d.calls).toEqual(['try a', 'block a']);
    // Jittered backoff between attempts (10 ms base): not a tight loop.
    await vi.advanceTimersByTimeAsync(5);
    expect(d.calls.filter((c) => c.startsWith('block'))).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2000);
    expect(d.calls.filter((c) => c.startsWith('block'))).toHaveLength(3);
    expect(errors).toHaveLength(2);
    expect(w.state).toBe('pending');
    await d.release('k', 'holder');
    await vi.advanceTimersByTimeAsync(0);
    expect(w.state).toBe('resolved');
    expect(d.holders.get('k')).toBe('a');
  });

  it('an engine that keeps failing: UnavailableError with the engine error as cause, at the deadline', async () => {
    const d = new FakeBlockingDriver();
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    d.failBlocks = Number.POSITIVE_INFINITY;
    const w = track(loop.acquire(req('a'), monotonicNow() + 3000));
    await vi.advanceTimersByTimeAsync(2900);
    expect(w.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(200);
    expect(w.state).toBe('rejected');
    expect(w.error).toBeInstanceOf(UnavailableError);
    expect(((w.error as Error).cause as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('a grant that lands after the wait gave up is given back before the wait returns', async () => {
    const d = new FakeBlockingDriver();
    d.grantOnCancel = true;
    const loop = new WaitLoop(d);
    d.holders.set('k', 'holder');
    const ac = new AbortController();
    const w = track(loop.acquire(req('a'), monotonicNow() + 60_000, ac.signal));
    await vi.advanceTimersByTimeAsync(100);
    const reason = new Error('stop');
    ac.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(w.state).toBe('pending'); // waiting (bounded) for the driver's cancel
    await vi.advanceTimersByTimeAsync(5);
    expect(w.state).toBe('rejected');
    expect(w.error).toBe(reason);
    expect(d.released).toEqual(['a']);
    expect(d.holders.has('k')).toBe(false);
  });

  it('maxBlocking: at most N server waits at once; the others queue in order, abortably', async () => {
    const d = new FakeBlockingDriver({ maxBlocking: 1 });
    const loop = new WaitLoop(d);
    d.holders.set('k1', 'h1');
    d.holders.set('k2', 'h2');
    d.holders.set('k3', 'h3');
    const a = track(loop.acquire(req('a', 'k1'), monotonicNow() + 60_000));
    const ac = new AbortController();
    const b = track(loop.acquire(req('b', 'k2'), monotonicNow() + 60_000, ac.signal));
    const c = track(loop.acquire(req('c', 'k3'), monotonicNow() + 60_000));
    await vi.advanceTimersByTimeAsync(10);
    expect(d.blocked.map((x) => x.req.owner)).toEqual(['a']);
    ac.abort(new Error('stop b'));
    await vi.advanceTimersByTimeAsync(0);
    expect(b.state).toBe('rejected');
    await d.release('k1', 'h1');
    await vi.advanceTimersByTimeAsync(0);
    expect(a.state).toBe('resolved');
    // The slot passes to c (b left the queue), and c now blocks on the server.
    expect(d.blocked.map((x) => x.req.owner)).toEqual(['c']);
    await d.release('k3', 'h3');
    await vi.advanceTimersByTimeAsync(0);
    expect(c.state).toBe('resolved');
    expect(d.calls).not.toContain('block b');
  });
});
