/**
 * The dashboard's feed, from snapshots of the memory driver's list(): a grant, a handover, a
 * release, an expiry (the last TTL seen ran out), waiters arriving and leaving, and the histograms.
 */
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { Feed, viewOf, type KeyView } from '../../src/cli/dashboard/feed.js';

const hold = (token: string, owner: string, remainingMs = 5000): KeyView['holders'][number] => ({ owner, host: 'h', pid: 1, mode: 'exclusive', permits: 1, token, remainingMs });
const key = (holders: KeyView['holders'], waiters = 0): KeyView => ({ key: 'k', mode: 'exclusive', holders, waiters, limit: null });

describe('dashboard feed', () => {
  it('turns list() snapshots of real holds into acquired, handed-over and released events', async () => {
    const client = await connect('memory:');
    const feed = new Feed(500);
    const snap = async (): Promise<KeyView[]> => (await client.list('')).map(viewOf);
    feed.update(await snap(), 0);
    const a = await client.acquire('orders', { ttlMs: 10_000 });
    expect(feed.update(await snap(), 100).map((e) => e.kind)).toEqual(['acquired']);
    await a.release();
    const b = await client.acquire('orders', { ttlMs: 10_000 });
    const handed = feed.update(await snap(), 1200);
    expect(handed.map((e) => e.kind)).toEqual(['handed-over']);
    expect(handed[0]?.text).toContain(`token ${a.token} → `);
    await b.release();
    expect(feed.update(await snap(), 1700).map((e) => e.kind)).toEqual(['released']);
    const h = feed.histograms().orders;
    // Two holds ended: ~1100 ms (1000-2000 bucket) and ~500 ms (500-1000 bucket).
    expect(h?.hold.slice(0, 3)).toEqual([0, 1, 1]);
    await client.close();
  });

  it('an expiry, a queue that grows, a waiter served after its wait, and one that gave up', () => {
    const feed = new Feed(500);
    feed.update([key([hold('1', 'a', 400)])], 0);
    expect(feed.update([], 500).map((e) => e.kind)).toEqual(['expired']);
    feed.update([key([hold('2', 'b')])], 1000);
    expect(feed.update([key([hold('2', 'b')], 2)], 1500).map((e) => e.kind)).toEqual(['waiting']);
    // One waiter got it (waited 3000 ms), the other left.
    const events = feed.update([key([hold('3', 'c')])], 4500);
    expect(events.map((e) => e.kind)).toEqual(['handed-over', 'gave-up']);
    // Two listings cannot tell a waiter that gave up from one served and done between them.
    expect(events[1]?.text).toBe('1 waiter(s) left the queue unseen: timed out or gave up, or were served and done within one polling period');
    expect(feed.histograms().k?.wait).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
    expect(feed.recent().every((e) => e.inferred)).toBe(true);
    expect(feed.note({ kind: 'force-released', key: 'k', text: 'x' }, 5000).inferred).toBe(false);
  });
});
