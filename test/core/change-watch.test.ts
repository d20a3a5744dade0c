/**
 * LatchWatch, the change watch the try-set drivers share: a change wakes the sleeping `next()`
 * at once, or is remembered for the next one; `changed(withinMs)` (a queue head told when its
 * turn is due) asks for a try no later than `withinMs`, not at once. Fake timers: no real sleeps.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LatchWatch } from '../../src/core/change-watch.js';

/** What `next()` resolved with, and after how many (fake) ms; undefined while it sleeps. */
function watchNext(w: LatchWatch, maxMs: number, signal = new AbortController().signal): { result: () => { value: unknown; afterMs: number } | undefined } {
  const start = performance.now();
  let out: { value: unknown; afterMs: number } | undefined;
  void w.next(maxMs, signal).then(
    (value) => (out = { value, afterMs: performance.now() - start }),
    (e: unknown) => (out = { value: e, afterMs: performance.now() - start }),
  );
  return { result: () => out };
}

describe('LatchWatch', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('changed() wakes a sleeping next() at once; without a change it sleeps its full maxMs', async () => {
    const w = new LatchWatch(() => undefined);
    const woken = watchNext(w, 10_000);
    await vi.advanceTimersByTimeAsync(3);
    w.changed();
    await vi.advanceTimersByTimeAsync(0);
    expect(woken.result()).toEqual({ value: true, afterMs: 3 });

    const idle = watchNext(w, 200);
    await vi.advanceTimersByTimeAsync(199);
    expect(idle.result()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(idle.result()).toEqual({ value: false, afterMs: 200 });
  });

  it('changed(withinMs) during a long sleep ends it withinMs later, not at once', async () => {
    const w = new LatchWatch(() => undefined);
    const r = watchNext(w, 10_000);
    await vi.advanceTimersByTimeAsync(2);
    w.changed(6);
    await vi.advanceTimersByTimeAsync(5);
    expect(r.result()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(r.result()).toEqual({ value: true, afterMs: 8 });
  });

  it('changed(withinMs) never postpones a sleep that ends sooner, and a plain change still wakes at once', async () => {
    const w = new LatchWatch(() => undefined);
    const sooner = watchNext(w, 4);
    w.changed(50);
    await vi.advanceTimersByTimeAsync(4);
    expect(sooner.result()).toEqual({ value: false, afterMs: 4 });

    const r = watchNext(w, 10_000);
    w.changed(50);
    await vi.advanceTimersByTimeAsync(10);
    w.changed();
    await vi.advanceTimersByTimeAsync(0);
    expect(r.result()).toEqual({ value: true, afterMs: 10 });
  });

  it('changed(withinMs) while nobody sleeps bounds the next sleep from when it came', async () => {
    const w = new LatchWatch(() => undefined);
    w.changed(6);
    await vi.advanceTimersByTimeAsync(2);
    const r = watchNext(w, 10_000);
    await vi.advanceTimersByTimeAsync(3);
    expect(r.result()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(r.result()).toEqual({ value: false, afterMs: 4 });
    // Used once: the sleep after it is a full one again.
    const full = watchNext(w, 1_000);
    await vi.advanceTimersByTimeAsync(999);
    expect(full.result()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(full.result()?.afterMs).toBe(1_000);
  });

  it('a remembered plain change or grant is delivered at once and clears a pending withinMs', async () => {
    const w = new LatchWatch(() => undefined);
    w.changed(6);
    w.granted(7n);
    const r = watchNext(w, 10_000);
    await vi.advanceTimersByTimeAsync(0);
    expect(r.result()).toEqual({ value: { token: 7n }, afterMs: 0 });
    const next = watchNext(w, 100);
    await vi.advanceTimersByTimeAsync(99);
    expect(next.result()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(next.result()).toEqual({ value: false, afterMs: 100 });
  });

  it('an abort ends a sleep that changed(withinMs) shortened, and nothing fires after it', async () => {
    const w = new LatchWatch(() => undefined);
    const ac = new AbortController();
    const r = watchNext(w, 10_000, ac.signal);
    w.changed(6);
    await vi.advanceTimersByTimeAsync(1);
    ac.abort(new Error('stop'));
    await vi.advanceTimersByTimeAsync(0);
    expect((r.result()?.value as Error).message).toBe('stop');
    expect(vi.getTimerCount()).toBe(0);
  });
});
