/**
 * The bookkeeping behind the ZooKeeper session's local deadline (src/drivers/zookeeper/session.ts,
 * `LeaderTouches`): a write's reply proves the session alive on the leader only as of the send
 * time of an earlier write answered at least the ping spacing before it was sent. Pure logic, so
 * the times are given; the behaviour on a real ensemble (a follower cut off from the leader) is
 * checked by test/chaos/partition-zookeeper.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { LeaderTouches } from '../../src/drivers/zookeeper/session.js';

describe('ZooKeeper LeaderTouches', () => {
  it('a write proves nothing by itself, nor with an earlier write answered less than the spacing before it', () => {
    const t = new LeaderTouches(() => 100);
    expect(t.answered(0, 10)).toBeUndefined();
    // Sent 99 ms after the first reply: a follower ping answer between the two is not sure.
    expect(t.answered(109, 115)).toBeUndefined();
  });

  it("proves the send time of the latest earlier write answered at least the spacing before this one's send", () => {
    const t = new LeaderTouches(() => 100);
    t.answered(0, 10);
    t.answered(50, 60);
    // Sent at 160: the write answered at 60 (sent at 50) is the latest answered by 60.
    expect(t.answered(160, 170)).toBe(50);
    // Sent at 200: the latest write answered by 100 is still the one sent at 50.
    expect(t.answered(200, 205)).toBe(50);
    expect(t.answered(275, 280)).toBe(160);
  });

  it('a reset (new connection) forgets the writes of the old one', () => {
    const t = new LeaderTouches(() => 100);
    t.answered(0, 10);
    t.reset();
    expect(t.answered(500, 510)).toBeUndefined();
    expect(t.answered(610, 620)).toBe(500);
  });

  it('keeps a bounded list under many writes, and its proofs stay within a sliver of the exact one', () => {
    const spacing = 160;
    const t = new LeaderTouches(() => spacing);
    let worst = 0;
    for (let sent = 0; sent < 100_000; sent += 1) {
      const proven = t.answered(sent, sent + 2);
      if (proven === undefined) continue;
      // Exact: the write sent at (sent - spacing - 2), answered 2 ms later.
      worst = Math.max(worst, sent - spacing - 2 - proven);
      expect(proven).toBeLessThanOrEqual(sent - spacing - 2);
    }
    expect(worst).toBeLessThanOrEqual(spacing / 16);
    expect((t as unknown as { writes: unknown[] }).writes.length).toBeLessThanOrEqual(20);
  });
});
