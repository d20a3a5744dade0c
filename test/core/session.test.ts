/**
 * Unit tests of the core session state machine (src/core/session.ts) with an injected clock
 * (vitest's fake timers drive `setTimeout` and `performance.now()`; nothing sleeps for real).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { driftFor } from '../../src/core/clock.js';
import { EngineSession, type SessionEnd } from '../../src/core/session.js';
import type { SessionState } from '../../src/drivers/driver.js';
import { LockLostError } from '../../src/errors.js';

describe('core EngineSession (injected clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('without contact, the session is lost at its local deadline (timeout - drift), with every grant told', async () => {
    const states: SessionState[] = [];
    const ended: SessionEnd[] = [];
    const s = new EngineSession('test session', 3000, performance.now(), {
      onState: (_s, st) => states.push(st),
      ended: (how) => {
        ended.push(how);
        return Promise.resolve();
      },
    });
    const grant = s.grantSignal('orders', 'owner-1');
    expect(s.validUntil()).toBe(3000 - driftFor(3000));
    await vi.advanceTimersByTimeAsync(3000 - driftFor(3000) - 1);
    expect(s.state).toBe('connected');
    expect(grant.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(2);
    expect(s.state).toBe('lost');
    expect(states).toEqual(['lost']);
    expect(ended).toEqual(['expired']);
    expect(grant.reason).toBeInstanceOf(LockLostError);
    expect((grant.reason as LockLostError).reason).toBe('expired');
    expect((grant.reason as LockLostError).key).toBe('orders');
    // A grant asked of an ended session is born aborted.
    expect(s.grantSignal('later', 'owner-2').aborted).toBe(true);
  });

  it('each confirmation moves the deadline to its send time + timeout; a stale confirmation never moves it back', async () => {
    const s = new EngineSession('test', 1000, performance.now());
    await vi.advanceTimersByTimeAsync(600);
    s.confirmed(500);
    expect(s.validUntil()).toBe(500 + 1000 - driftFor(1000));
    s.confirmed(100);
    expect(s.validUntil()).toBe(500 + 1000 - driftFor(1000));
    await vi.advanceTimersByTimeAsync(800);
    expect(s.state).toBe('connected');
    await vi.advanceTimersByTimeAsync(200);
    expect(s.state).toBe('lost');
  });

  it('suspended while disconnected, connected again on contact, lost if contact comes too late', async () => {
    const states: SessionState[] = [];
    const s = new EngineSession('test', 1000, performance.now(), { onState: (_s, st) => states.push(st) });
    await vi.advanceTimersByTimeAsync(100);
    s.suspend();
    expect(s.state).toBe('suspended');
    s.confirmed(performance.now());
    expect(s.state).toBe('connected');
    s.suspend();
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.state).toBe('lost');
    // Contact after the end changes nothing.
    s.confirmed(performance.now());
    expect(s.state).toBe('lost');
    expect(states).toEqual(['suspended', 'connected', 'suspended', 'lost']);
  });

  it('drives keep-alives every timeout/3; unanswered for two intervals it is suspended, then lost at the deadline', async () => {
    const sent: number[] = [];
    let answer = true;
    const s: EngineSession = new EngineSession('test', 3000, performance.now(), {
      keepAlive: (sentAt) => {
        sent.push(sentAt);
        if (answer) queueMicrotask(() => s.confirmed(sentAt));
      },
    });
    await vi.advanceTimersByTimeAsync(3500);
    expect(sent.length).toBe(3); // at 1000, 2000, 3000
    expect(s.state).toBe('connected');
    answer = false;
    await vi.advanceTimersByTimeAsync(2100);
    expect(s.state).toBe('suspended');
    // Retries come faster while suspended, but not in a loop.
    const whileSuspended = sent.length;
    await vi.advanceTimersByTimeAsync(500);
    expect(sent.length - whileSuspended).toBeGreaterThanOrEqual(3);
    expect(sent.length - whileSuspended).toBeLessThanOrEqual(6);
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.state).toBe('lost');
    const atEnd = sent.length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent.length).toBe(atEnd);
  });

  it("end('lost') before the deadline is 'session-lost'; end() is idempotent and its hook is bounded", async () => {
    let hookCalls = 0;
    const s = new EngineSession('test', 10_000, performance.now(), {
      ended: () => {
        hookCalls += 1;
        return new Promise<void>(() => undefined); // never settles
      },
    });
    const g = s.grantSignal('k', 'o');
    let done = false;
    void s.end('lost', new Error('server expired it')).then(() => (done = true));
    void s.end('closed');
    expect(hookCalls).toBe(1);
    expect((g.reason as LockLostError).reason).toBe('session-lost');
    await vi.advanceTimersByTimeAsync(1999);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(2);
    expect(done).toBe(true);
  });

  it('loseGrant aborts one grant; forget stops tracking a released one', () => {
    const s = new EngineSession('test', 10_000, performance.now());
    const a = s.grantSignal('a', 'oa');
    const b = s.grantSignal('b', 'ob');
    s.loseGrant('oa', new LockLostError('a', 'not-held'));
    expect(a.aborted).toBe(true);
    s.forget('ob');
    void s.end('closed');
    expect(b.aborted).toBe(false);
  });
});
