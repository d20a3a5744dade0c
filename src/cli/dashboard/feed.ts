/**
 * What the dashboard infers from successive `client.list()` snapshots. A dashboard process hears
 * only its own client's events, never those of the processes that hold the locks: so the feed of
 * events and the histograms are derived from what changed between two snapshots, at the polling
 * period's resolution (a hold shorter than one period can be missed entirely).
 */
import type { KeyInfo } from '../../core/client.js';

/** One holder of a key as the page gets it (JSON: the token is a string). */
export interface HolderView {
  readonly owner: string;
  readonly host: string | null;
  readonly pid: number | null;
  readonly mode: string;
  readonly permits: number;
  readonly token: string;
  /** Remaining TTL when the snapshot was taken; -1 for a session-bound hold. */
  readonly remainingMs: number;
}

/** One held key as the page gets it. */
export interface KeyView {
  readonly key: string;
  readonly mode: string;
  readonly holders: readonly HolderView[];
  readonly waiters: number;
  readonly limit: number | null;
}

/** One line of the feed. `inferred`: read off two snapshots, not heard from the holder. */
export interface FeedEvent {
  readonly at: number;
  readonly kind: 'acquired' | 'handed-over' | 'released' | 'expired' | 'waiting' | 'gave-up' | 'force-released';
  readonly key: string;
  readonly text: string;
  readonly inferred: boolean;
}

/** Upper bounds of the histogram buckets, in ms (the last bucket is everything above). */
export const BUCKETS_MS: readonly number[] = [500, 1000, 2000, 5000, 10_000, 30_000, 60_000];

/** Per-key wait and hold histograms (counts per bucket of {@link BUCKETS_MS}, plus one overflow). */
export interface KeyHistograms {
  readonly wait: number[];
  readonly hold: number[];
}

function bucketOf(ms: number): number {
  const i = BUCKETS_MS.findIndex((b) => ms < b);
  return i < 0 ? BUCKETS_MS.length : i;
}

function who(h: HolderView): string {
  return h.pid === null ? h.owner : `${h.host ?? '?'} pid ${h.pid}`;
}

/** `KeyInfo` (bigint tokens) to its JSON-safe view. */
export function viewOf(info: KeyInfo): KeyView {
  return {
    key: info.key,
    mode: info.mode,
    holders: info.holders.map((h) => ({
      owner: h.owner,
      host: h.holder?.host ?? null,
      pid: h.holder?.pid ?? null,
      mode: h.mode,
      permits: h.permits,
      token: h.token.toString(),
      remainingMs: h.remainingMs,
    })),
    waiters: info.waiters,
    limit: info.limit ?? null,
  };
}

interface Seen {
  readonly holder: HolderView;
  readonly since: number;
}

/**
 * Diffs snapshots into a feed and histograms. Holders are told apart by owner and token (a
 * re-acquisition by the same owner gets a new token). Waits assume a FIFO queue: when a key's
 * waiter count grows, each new waiter's arrival is noted; when a holder appears while waiters
 * queued, the oldest arrival is taken as its start of wait.
 */
export class Feed {
  private readonly holders = new Map<string, Map<string, Seen>>();
  private readonly arrivals = new Map<string, number[]>();
  private readonly waiters = new Map<string, number>();
  private readonly events: FeedEvent[] = [];
  private readonly hist = new Map<string, KeyHistograms>();
  private first = true;

  constructor(
    private readonly periodMs: number,
    private readonly keep = 200,
  ) {}

  /** Fold in a snapshot taken at `now`; returns the new events. */
  update(keys: readonly KeyView[], now: number): FeedEvent[] {
    const fresh: FeedEvent[] = [];
    const add = (e: Omit<FeedEvent, 'at' | 'inferred'>): void => {
      fresh.push({ ...e, at: now, inferred: true });
    };
    const byKey = new Map(keys.map((k) => [k.key, k]));
    const names = new Set([...this.holders.keys(), ...byKey.keys()]);
    for (const key of names) {
      const before = this.holders.get(key) ?? new Map<string, Seen>();
      const info = byKey.get(key);
      const after = new Map<string, Seen>();
      for (const h of info?.holders ?? []) {
        const id = `${h.owner}#${h.token}`;
        after.set(id, before.get(id) ?? { holder: h, since: now });
      }
      const gone = [...before].filter(([id]) => !after.has(id)).map(([, s]) => s);
      const came = [...after].filter(([id]) => !before.has(id)).map(([, s]) => s);
      const queue = this.arrivals.get(key) ?? [];
      for (const s of gone) {
        this.count(key, 'hold', now - s.since);
        // A lease whose last seen TTL ran out before this snapshot most likely expired.
        const lastTtl = s.holder.remainingMs;
        const expired = lastTtl >= 0 && lastTtl <= this.periodMs;
        if (came.length === 0 || expired) {
          add({ kind: expired ? 'expired' : 'released', key, text: `${who(s.holder)} ${expired ? 'let it expire (TTL ran out)' : 'released it'} (token ${s.holder.token}, held ~${now - s.since} ms)` });
        }
      }
      const was = this.waiters.get(key) ?? 0;
      const nowWaiting = info?.waiters ?? 0;
      // New holders came from the queue when there was one (FIFO: the oldest arrivals first).
      const fromQueue = this.first ? 0 : Math.min(came.length, was);
      came.forEach((s, i) => {
        if (this.first) return;
        if (i < fromQueue) {
          const waited = queue.shift();
          if (waited !== undefined) this.count(key, 'wait', now - waited);
        }
        const from = gone[i];
        if (from) add({ kind: 'handed-over', key, text: `${who(from.holder)} → ${who(s.holder)} (token ${from.holder.token} → ${s.holder.token})` });
        else add({ kind: 'acquired', key, text: `${who(s.holder)} acquired it (${s.holder.mode}, token ${s.holder.token})` });
      });
      const base = was - fromQueue;
      if (nowWaiting > base) {
        for (let i = base; i < nowWaiting; i += 1) queue.push(now);
        if (!this.first) add({ kind: 'waiting', key, text: `${nowWaiting - base} more waiting (${nowWaiting} in the queue)` });
      } else if (nowWaiting < base) {
        queue.splice(0, base - nowWaiting);
        // Served between two snapshots (granted and released within one period) looks the same:
        // a fast lock's queue drains unseen, so the text does not claim that they gave up.
        add({ kind: 'gave-up', key, text: `${base - nowWaiting} waiter(s) left the queue unseen: timed out or gave up, or were served and done within one polling period` });
      }
      if (after.size > 0) this.holders.set(key, after);
      else this.holders.delete(key);
      if (nowWaiting > 0) this.waiters.set(key, nowWaiting);
      else this.waiters.delete(key);
      if (queue.length > 0) this.arrivals.set(key, queue);
      else this.arrivals.delete(key);
    }
    this.first = false;
    this.push(fresh);
    return fresh;
  }

  /** Record an event the dashboard itself caused (a force release from the page). */
  note(e: Omit<FeedEvent, 'at' | 'inferred'>, now: number): FeedEvent {
    const event = { ...e, at: now, inferred: false };
    this.push([event]);
    return event;
  }

  /** The latest events, newest last. */
  recent(): FeedEvent[] {
    return [...this.events];
  }

  /** The histograms of every key seen so far. */
  histograms(): Record<string, KeyHistograms> {
    return Object.fromEntries([...this.hist].sort(([a], [b]) => (a < b ? -1 : 1)));
  }

  private count(key: string, which: keyof KeyHistograms, ms: number): void {
    let h = this.hist.get(key);
    if (!h) {
      h = { wait: new Array<number>(BUCKETS_MS.length + 1).fill(0), hold: new Array<number>(BUCKETS_MS.length + 1).fill(0) };
      this.hist.set(key, h);
    }
    const i = bucketOf(ms);
    h[which][i] = (h[which][i] ?? 0) + 1;
  }

  private push(events: readonly FeedEvent[]): void {
    this.events.push(...events);
    if (this.events.length > this.keep) this.events.splice(0, this.events.length - this.keep);
  }
}
