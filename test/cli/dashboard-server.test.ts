/**
 * The dashboard server's poller: one poll per period whatever the number of open pages, none
 * before the first page and none after the last one left; the Host check of a loopback server.
 */
import { request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { startDashboardServer, type DashboardSource } from '../../src/cli/dashboard/server.js';

function counting(): DashboardSource & { polls: number } {
  const s = {
    polls: 0,
    poll: () => Promise.resolve({ n: ++s.polls }),
    forceRelease: () => Promise.reject(new Error('read-only')),
    describeFailure: (e: unknown) => String(e),
  };
  return s;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('dashboard server', () => {
  it('shares one poller between pages and stops it when none is open', async () => {
    const source = counting();
    const server = await startDashboardServer(source, { host: '127.0.0.1', port: 0, allowAdmin: false, intervalMs: 100, title: 't' });
    try {
      await sleep(300);
      expect(source.polls).toBe(0);
      const pages = [new AbortController(), new AbortController(), new AbortController()];
      const streams = await Promise.all(pages.map((ac) => fetch(new URL('events', server.url), { signal: ac.signal })));
      const first = await streams[0]!.body!.getReader().read();
      expect(new TextDecoder().decode(first.value)).toContain('retry:');
      expect(server.viewers()).toBe(3);
      const before = source.polls;
      await sleep(1000);
      const during = source.polls - before;
      // At most ~10 polls in 1 s at 100 ms for three pages (30 if each page had its own poller).
      expect(during).toBeGreaterThanOrEqual(1);
      expect(during).toBeLessThanOrEqual(12);
      for (const ac of pages) ac.abort();
      await sleep(300);
      expect(server.viewers()).toBe(0);
      const stopped = source.polls;
      await sleep(400);
      expect(source.polls).toBe(stopped);
    } finally {
      await server.close();
    }
  });

  it('a loopback server refuses a Host that is not loopback (DNS rebinding)', async () => {
    const server = await startDashboardServer(counting(), { host: '127.0.0.1', port: 0, allowAdmin: false, intervalMs: 100, title: 't' });
    try {
      const status = (host: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port: server.port, path: '/', headers: { Host: host } }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.end();
        });
      expect(await status('evil.example:80')).toBe(421);
      expect(await status(`localhost:${server.port}`)).toBe(200);
      expect(await status(`127.0.0.1:${server.port}`)).toBe(200);
    } finally {
      await server.close();
    }
  });
});
