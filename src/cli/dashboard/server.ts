/**
 * The dashboard's web server (node:http): the page, a server-sent event stream of snapshots, and
 * (with `allowAdmin`) a force-release endpoint. One poller feeds every connected page: it runs
 * while at least one page is connected and stops when the last one leaves.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from './page.js';

/** What the server shows: one snapshot per poll, and what the page's admin button does. */
export interface DashboardSource {
  /** A JSON-serialisable snapshot; a thrown error is shown on the page as its message (one line). */
  poll(): Promise<Record<string, unknown>>;
  /** Evict the holders of `key` (only called when the server was started with `allowAdmin`). */
  forceRelease(key: string): Promise<{ released: number; fence: string }>;
  /** The one line to show for a failed poll. */
  describeFailure(e: unknown): string;
}

/** How to serve. */
export interface DashboardServerOptions {
  readonly host: string;
  /** 0: a free port. */
  readonly port: number;
  /** Required on every request when set (header `Authorization: Bearer`, `X-Dlock-Token`, or `?token=`). */
  readonly token?: string;
  readonly allowAdmin: boolean;
  /** Poll period, ms. */
  readonly intervalMs: number;
  /** The page's title. */
  readonly title: string;
}

/** A running dashboard. */
export interface DashboardServer {
  /** The page's address (with `?token=` when a token is required). */
  readonly url: string;
  readonly port: number;
  /** Pages connected now. */
  viewers(): number;
  /** Resolves when at least one page is connected. */
  firstViewer(): Promise<void>;
  /** Stop the poller and the server (open event streams are ended). */
  close(): Promise<void>;
}

/** Whether `host` is a loopback address (or `localhost`). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time comparison of a presented token with the expected one. */
function tokenMatches(presented: string | undefined, expected: string): boolean {
  return presented !== undefined && timingSafeEqual(digest(presented), digest(expected));
}

function presentedToken(req: IncomingMessage, url: URL): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && /^Bearer /i.test(auth)) return auth.slice(7).trim();
  const header = req.headers['x-dlock-token'];
  if (typeof header === 'string') return header;
  return url.searchParams.get('token') ?? undefined;
}

function send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    ...extra,
  });
  res.end(body);
}

const JSON_TYPE = 'application/json; charset=utf-8';

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      body += d;
      if (body.length > max) {
        reject(new Error('body too large'));
        req.destroy();
      }
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

/** Start serving; rejects when the address cannot be bound (in use, not local...). */
export async function startDashboardServer(source: DashboardSource, opts: DashboardServerOptions): Promise<DashboardServer> {
  const streams = new Set<ServerResponse>();
  const viewerWaiters = new Set<() => void>();
  let last: string | undefined;
  let polling = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  // encodeURIComponent leaves no character that could end a double-quoted attribute.
  const query = opts.token === undefined ? '' : `?token=${encodeURIComponent(opts.token)}`;
  const html = PAGE_HTML.replaceAll('{{TITLE}}', opts.title.replace(/[<>&"']/g, '')).replaceAll('{{QUERY}}', query);

  const broadcast = (data: string): void => {
    last = data;
    for (const s of streams) s.write(`data: ${data}\n\n`);
  };
  const pollOnce = async (): Promise<void> => {
    let snapshot: Record<string, unknown>;
    try {
      snapshot = await source.poll();
    } catch (e) {
      snapshot = { error: source.describeFailure(e) };
    }
    broadcast(JSON.stringify({ ...snapshot, now: Date.now(), intervalMs: opts.intervalMs, admin: opts.allowAdmin }));
  };
  const loop = async (): Promise<void> => {
    timer = undefined;
    if (closed || streams.size === 0) {
      polling = false;
      return;
    }
    await pollOnce();
    if (closed || streams.size === 0) polling = false;
    else timer = setTimeout(() => void loop(), opts.intervalMs);
  };
  const startPolling = (): void => {
    if (polling) return;
    polling = true;
    void loop();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid');
    // A page of another site, or a DNS-rebound name, must not read a loopback dashboard.
    const hostHeader = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (isLoopback(opts.host) && !isLoopback(hostHeader)) {
      send(res, 421, 'text/plain; charset=utf-8', 'This dashboard answers on a loopback address only (Host header refused).\n');
      return;
    }
    if (opts.token !== undefined && !tokenMatches(presentedToken(req, url), opts.token)) {
      send(res, 401, 'text/plain; charset=utf-8', 'This dashboard needs its token: open the URL it printed (…/?token=…), or send Authorization: Bearer <token>.\n', {
        'WWW-Authenticate': 'Bearer realm="dlock dashboard"',
      });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/') {
      send(res, 200, 'text/html; charset=utf-8', html, {
        'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      });
    } else if (req.method === 'GET' && url.pathname === '/app.js') {
      send(res, 200, 'text/javascript; charset=utf-8', PAGE_JS);
    } else if (req.method === 'GET' && url.pathname === '/app.css') {
      send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
    } else if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Content-Type-Options': 'nosniff' });
      res.write('retry: 2000\n\n');
      if (last !== undefined) res.write(`data: ${last}\n\n`);
      streams.add(res);
      for (const w of [...viewerWaiters]) w();
      req.on('close', () => streams.delete(res));
      startPolling();
    } else if (req.method === 'POST' && url.pathname === '/api/release') {
      if (!opts.allowAdmin) {
        send(res, 403, JSON_TYPE, JSON.stringify({ error: 'read-only dashboard: start it with --allow-admin to force releases from the page' }));
        return;
      }
      // CSRF: a custom header cannot be sent cross-origin without a preflight, which is never granted.
      if (req.headers['x-dlock-admin'] !== '1') {
        send(res, 403, JSON_TYPE, JSON.stringify({ error: 'missing X-Dlock-Admin: 1 header' }));
        return;
      }
      let key: unknown;
      try {
        key = (JSON.parse(await readBody(req, 64 * 1024)) as { key?: unknown }).key;
      } catch {
        key = undefined;
      }
      if (typeof key !== 'string' || key === '') {
        send(res, 400, JSON_TYPE, JSON.stringify({ error: 'expected a JSON body { "key": "<lock key>" }' }));
        return;
      }
      try {
        const result = await source.forceRelease(key);
        send(res, 200, JSON_TYPE, JSON.stringify({ key, ...result }));
        if (streams.size > 0) void pollOnce();
      } catch (e) {
        send(res, 502, JSON_TYPE, JSON.stringify({ error: source.describeFailure(e) }));
      }
    } else {
      send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `http://${shownHost}:${port}/${query}`;
  return {
    url,
    port,
    viewers: () => streams.size,
    firstViewer: () =>
      new Promise<void>((resolve) => {
        if (streams.size > 0) return resolve();
        const w = (): void => {
          viewerWaiters.delete(w);
          resolve();
        };
        viewerWaiters.add(w);
      }),
    close: async () => {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const s of streams) s.end();
      streams.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
