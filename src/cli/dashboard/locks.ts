/**
 * The dashboard's view of one engine: `client.list()` every period, diffed into a feed and
 * histograms (./feed.ts), plus what the dashboard's own client did (force releases).
 */
import type { LockClient } from '../../core/client.js';
import { redactUrl } from '../../drivers/redis/url.js';
import { describeError, engineOf, reaching, unreachableLine } from '../output.js';
import { BUCKETS_MS, Feed, viewOf } from './feed.js';
import type { DashboardSource } from './server.js';

/** What to list. */
export interface LockSourceOptions {
  readonly url: string;
  readonly prefix: string;
  readonly limit: number;
  readonly intervalMs: number;
}

/** The one line a failed request becomes: the unreachable-engine line, or the error's message. */
export function failureLine(url: string, e: unknown): string {
  const text = describeError(e).split('\n')[0] ?? '';
  if (text.startsWith('Cannot reach')) return text;
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'DLOCK_UNAVAILABLE' ? unreachableLine(engineOf(url), redactUrl(url), text) : text;
}

/** {@link DashboardSource} of the held locks of one engine under a prefix. */
export class LockSource implements DashboardSource {
  private readonly feed: Feed;
  constructor(
    private readonly client: LockClient,
    private readonly opts: LockSourceOptions,
  ) {
    this.feed = new Feed(opts.intervalMs);
  }

  async poll(): Promise<Record<string, unknown>> {
    const infos = await reaching(this.opts.url, this.client.list(this.opts.prefix, { limit: this.opts.limit }), Math.max(5000, this.opts.intervalMs * 4));
    const locks = infos.map(viewOf);
    this.feed.update(locks, Date.now());
    return {
      engine: redactUrl(this.opts.url),
      prefix: this.opts.prefix,
      locks,
      truncated: infos.length >= this.opts.limit,
      events: this.feed.recent(),
      histograms: this.feed.histograms(),
      buckets: BUCKETS_MS,
    };
  }

  async forceRelease(key: string): Promise<{ released: number; fence: string }> {
    const { released, fence } = await reaching(this.opts.url, this.client.forceRelease(key), 15_000);
    this.feed.note({ kind: 'force-released', key, text: `force-released from the dashboard: ${released} hold(s) evicted, fence now ${fence}` }, Date.now());
    return { released, fence: fence.toString() };
  }

  describeFailure(e: unknown): string {
    return failureLine(this.opts.url, e);
  }
}
