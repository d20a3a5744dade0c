/**
 * Redlock's pure parts, no servers: vote counting (a round settles as soon as the answers decide
 * it; late answers are handed over), the majority's remaining TTL, URL parsing, and the
 * construction errors.
 */
import { describe, expect, it } from 'vitest';
import { parseRedlockUrl, RedlockDriver } from '../../src/drivers/redlock/index.js';
import { classify, majorityFreeInMs, quorumOf, round, type Replies } from '../../src/drivers/redlock/quorum.js';

/** A promise resolved by hand. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const yesNo = (rs: Replies<boolean>, n: number, final: boolean): boolean | 'unknown' | undefined => {
  const q = quorumOf(n);
  const yes = rs.filter((r) => r?.ok && r.value).length;
  const no = rs.filter((r) => r?.ok && !r.value).length;
  if (yes >= q) return true;
  if (no > n - q) return false;
  return final ? 'unknown' : undefined;
};

describe('redlock quorum', () => {
  it('quorum is floor(N/2) + 1', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(quorumOf)).toEqual([1, 2, 2, 3, 3, 4, 4]);
  });

  it('settles on a majority for without waiting for the rest, and hands late answers over', async () => {
    const ds = [0, 1, 2, 3, 4].map(() => deferred<boolean>());
    const late: Array<[number, unknown]> = [];
    const p = round<boolean, boolean | 'unknown'>({
      n: 5,
      send: (i) => ds[i]!.promise,
      decide: (rs, final) => yesNo(rs, 5, final),
      timeoutMs: 60_000,
      late: (i, r) => late.push([i, r.ok ? r.value : r.kind]),
    });
    ds[0]!.resolve(true);
    ds[3]!.resolve(true);
    ds[4]!.resolve(true);
    const r = await p;
    expect(r.outcome).toBe(true);
    expect(r.replies.map((x) => (x?.ok ? x.value : x))).toEqual([true, undefined, undefined, true, true]);
    ds[1]!.reject(new Error('connect ECONNREFUSED'));
    ds[2]!.resolve(false);
    await new Promise((res) => setImmediate(res));
    expect(late).toEqual([
      [1, 'unreachable'],
      [2, false],
    ]);
    expect((await r.complete()).every((x) => x !== undefined)).toBe(true);
  });

  it('settles against as soon as a majority is out of reach', async () => {
    const ds = [0, 1, 2].map(() => deferred<boolean>());
    const p = round<boolean, boolean | 'unknown'>({ n: 3, send: (i) => ds[i]!.promise, decide: (rs, f) => yesNo(rs, 3, f), timeoutMs: 60_000 });
    ds[1]!.resolve(false);
    ds[2]!.resolve(false);
    expect((await p).outcome).toBe(false);
  });

  it('at the deadline, decides with what it has; pending nodes stay undefined', async () => {
    const never = new Promise<boolean>(() => undefined);
    const start = performance.now();
    const r = await round<boolean, boolean | 'unknown'>({
      n: 3,
      send: (i) => (i === 0 ? Promise.resolve(true) : never),
      decide: (rs, f) => yesNo(rs, 3, f),
      timeoutMs: 50,
    });
    expect(performance.now() - start).toBeGreaterThanOrEqual(45);
    expect(r.outcome).toBe('unknown');
    expect(r.replies[1]).toBeUndefined();
    // complete() cannot wait past the deadline.
    const t = performance.now();
    expect((await r.complete())[1]).toBeUndefined();
    expect(performance.now() - t).toBeLessThan(30);
  });

  it('a send that throws synchronously counts as a failed node, not a crash', async () => {
    const r = await round<boolean, boolean | 'unknown'>({
      n: 3,
      send: (i) => {
        if (i === 2) throw new Error('boom');
        return Promise.resolve(true);
      },
      decide: (rs, f) => yesNo(rs, 3, f),
      timeoutMs: 1000,
    });
    expect(r.outcome).toBe(true);
  });

  it('classifies Redis reply errors as answers and the rest as unreachable', () => {
    class ReplyError extends Error {}
    expect(classify(new ReplyError('ERR Error running script'))).toMatchObject({ ok: false, kind: 'error' });
    expect(classify(new Error("Stream isn't writeable"))).toMatchObject({ ok: false, kind: 'unreachable' });
  });

  it('the majority frees the lock at the (N - quorum + 1)-th longest remaining TTL', () => {
    expect(majorityFreeInMs([9000, 9100, 9200], 2)).toBe(9100);
    expect(majorityFreeInMs([0, 9100, 9200], 2)).toBe(9100);
    expect(majorityFreeInMs([0, 0, 9200], 2)).toBe(0);
    expect(majorityFreeInMs([undefined, 500, 700], 2)).toBe(700);
    expect(majorityFreeInMs([undefined, undefined, 700], 2)).toBe(-1);
    expect(majorityFreeInMs([100, 200, 300, 400, 500], 3)).toBe(300);
    expect(majorityFreeInMs([100, -1, 300], 2)).toBe(300);
  });
});

describe('redlock URL and construction', () => {
  it('parses redlock:// into one redis:// URL per node with the shared parts', () => {
    expect(parseRedlockUrl('redlock://a:1,b:2,c:3')).toEqual({ nodes: ['redis://a:1', 'redis://b:2', 'redis://c:3'] });
    expect(parseRedlockUrl('redlock://u:p@a:1,b:2/3?nodeTimeoutMs=500&retryJitterMs=20&prefix=x&tls=true')).toEqual({
      nodes: ['rediss://u:p@a:1/3', 'rediss://u:p@b:2/3'],
      prefix: 'x',
      nodeTimeoutMs: 500,
      retryJitterMs: 20,
    });
  });

  it('refuses empty, duplicate and malformed node lists, and unknown options', () => {
    const bad: Array<[() => unknown, RegExp]> = [
      [() => new RedlockDriver({ nodes: [] }), /at least one node/],
      [() => new RedlockDriver({ url: 'redlock://' }), /empty host/],
      [() => new RedlockDriver({ url: 'redlock://a:1,,b:2' }), /empty host/],
      [() => new RedlockDriver({ url: 'redlock://a:1,a:1' }), /listed twice/],
      [() => new RedlockDriver({ nodes: ['redis://localhost:7000', 'redis://127.0.0.1:7000'] }), /listed twice/],
      [() => new RedlockDriver({ url: 'redlock://a:1?bogus=1' }), /Unknown Redlock URL option "bogus"/],
      [() => new RedlockDriver({ url: 'redlock://a:1?nodeTimeoutMs=0' }), /nodeTimeoutMs/],
      [() => new RedlockDriver({ nodes: ['mongodb://a:1'] }), /redis:\/\//],
      [() => new RedlockDriver({ nodes: ['redis://a:1'], url: 'redlock://a:1' }), /exactly one/],
      [() => new RedlockDriver({ nodes: [{} as never] }), /must be a redis:\/\/ URL/],
    ];
    for (const [make, message] of bad) expect(make).toThrow(message);
  });
});
