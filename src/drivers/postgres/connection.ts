/**
 * Connections for the PostgreSQL driver: one `pg.Client` per dedicated connection (never a
 * pooled connection for session locks), every 'error' event handled, int8 as exact bigints.
 */
import type pg from 'pg';
import { lazyPeer } from '../../core/peer.js';
import { InvalidArgumentError } from '../../errors.js';

/** The `pg` module, loaded at the first driver construction (MissingPeerError when absent). */
export const pgModule = lazyPeer<typeof pg>('pg');

/** How to reach the server: a URL, or a `pg` client configuration (host, port, user, ssl...). */
export type ConnectionSettings = string | pg.ClientConfig;

/** The `pg` configuration of one connection the driver opens. */
export function clientConfig(settings: ConnectionSettings, extra: pg.ClientConfig = {}): pg.ClientConfig {
  const base: pg.ClientConfig = typeof settings === 'string' ? { connectionString: settings } : { ...settings };
  const options = [extra.options, base.options].filter((o): o is string => typeof o === 'string' && o.length > 0).join(' ');
  return { connectionTimeoutMillis: 5000, ...base, ...extra, ...(options ? { options } : {}) };
}

/** A connected client whose failures are reported through `onDeath` (never as an 'error' event). */
export async function openClient(config: pg.ClientConfig, onDeath: (cause: unknown) => void): Promise<pg.Client> {
  const client = new (pgModule().Client)(config);
  let connected = false;
  client.on('error', (e: unknown) => {
    if (connected) onDeath(e);
  });
  client.on('end', () => {
    if (connected) onDeath(new Error('the PostgreSQL connection ended'));
  });
  // Warnings (e.g. "you don't own a lock") are expected on best-effort unlocks: ignore them.
  client.on('notice', () => undefined);
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => undefined);
    throw e;
  }
  connected = true;
  return client;
}

/** A statement that fails after `timeoutMs` without an answer (pg's `query_timeout`, untyped). */
export function timed(text: string, values: readonly unknown[] | undefined, timeoutMs: number): pg.QueryConfig {
  return { text, values: values as unknown[], query_timeout: timeoutMs } as pg.QueryConfig;
}

/** The server process id of a connected client (from its BackendKeyData; untyped in @types/pg). */
export function backendPid(client: pg.Client): number {
  const pid = (client as unknown as { processID?: unknown }).processID;
  return typeof pid === 'number' ? pid : -1;
}

/** An int8 column (pg returns it as a decimal string) as an exact bigint. */
export function int8(v: unknown): bigint {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint') return BigInt(v);
  throw new TypeError(`expected an int8 value from PostgreSQL, got ${typeof v}`);
}

/** SQLSTATE of a server error, if any. */
export function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Options taken from a `postgres://` URL's query string (see `connect.ts`), the rest is for `pg`. */
export interface UrlOptions {
  /** The URL for `pg`, without dlock's parameters. */
  readonly connection: string;
  /** From `mode=` (default `session`). */
  readonly mode: 'session' | 'table';
  /** From `tablePrefix=`. */
  readonly tablePrefix: string | undefined;
  /** From `maxConnections=N`. */
  readonly maxConnections: number | undefined;
}

const OUR_PARAMS = ['mode', 'tablePrefix', 'maxConnections'];

/** Split a `postgres://...?mode=...` URL into dlock's options and the URL `pg` connects with. */
export function parsePostgresUrl(url: string): UrlOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch (e) {
    throw new InvalidArgumentError(`"${url}" is not a valid PostgreSQL URL: use postgres://user:password@host:5432/database.`, { cause: e });
  }
  const mode = u.searchParams.get('mode') ?? 'session';
  if (mode !== 'session' && mode !== 'table') {
    throw new InvalidArgumentError(`mode must be "session" (advisory locks) or "table" (lease rows), got ${JSON.stringify(mode)}.`);
  }
  const prefix = u.searchParams.get('tablePrefix') ?? undefined;
  const maxRaw = u.searchParams.get('maxConnections');
  const maxConnections = maxRaw === null ? undefined : Number(maxRaw);
  if (maxConnections !== undefined && (!Number.isInteger(maxConnections) || maxConnections < 2)) {
    throw new InvalidArgumentError(`maxConnections must be a whole number of at least 2, got ${JSON.stringify(maxRaw)}.`);
  }
  for (const p of OUR_PARAMS) u.searchParams.delete(p);
  return { connection: u.toString(), mode, tablePrefix: prefix, maxConnections };
}
