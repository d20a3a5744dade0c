/**
 * Options of the MySQL/MariaDB drivers, the URL form, and how keys become MySQL names.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../core/renewal.js';
import { validateMs } from '../../core/validate.js';
import { InvalidArgumentError, OutOfRangeError } from '../../errors.js';
import type { ConnectionOptions } from './connection.js';

/** How a MySQL driver keeps a lock alive. */
export type MysqlMode = 'session' | 'table';

/** Options of {@link MysqlSessionDriver} and {@link MysqlTableDriver}. Give `url` or `connection`. */
export interface MysqlDriverOptions {
  /**
   * `mysql://user:pass@host:port/database` (or `mariadb://...`). Query options: `mode`
   * (`session` | `table`, used by `createMysqlDriver`), `tablePrefix`, `connections`, `maxWaits`,
   * `connectTimeoutMs`; any other query option is passed to mysql2 (`?ssl=...` as JSON).
   */
  url?: string;
  /** mysql2 connection options (host, port, user, password, database, ssl...), instead of `url`. */
  connection?: ConnectionOptions;
  /** Prefix of the tables (`<prefix>locks`, `<prefix>sequences`): letters, digits, `_`. Default `dlock_`. */
  tablePrefix?: string;
  /**
   * How many connections serve non-blocking statements (tries, renewals, releases, inspect),
   * chosen by key so that a key's statements always use the same connection. Default 2.
   */
  connections?: number;
  /**
   * At most this many server-side waits at once (each blocks one connection of its own); more
   * waits queue locally, in order, without polling. Default 16.
   */
  maxWaits?: number;
  /** Connect timeout in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Diagnostics; silent when omitted. */
  logger?: Logger;
  /**
   * Default true: create the tables when missing. `false` (read-only tools: `dlock inspect`,
   * `dlock ls`): create nothing; missing tables read as no locks (writes then fail).
   */
  create?: boolean;
}

export interface ResolvedOptions {
  readonly connection: ConnectionOptions;
  readonly database: string;
  readonly prefix: string;
  readonly connections: number;
  readonly maxWaits: number;
  readonly mode: MysqlMode | undefined;
  /** Whether the tables may be created. */
  readonly create: boolean;
  readonly logger: Logger | undefined;
  /** host:port/database for messages (no password). */
  readonly display: string;
}

const DLOCK_PARAMS = new Set(['mode', 'tablePrefix', 'connections', 'maxWaits', 'connectTimeoutMs']);

/** Validate options (and parse the URL); every problem is an {@link InvalidArgumentError}. */
export function resolveOptions(options: MysqlDriverOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('MySQL driver options must be an object such as { url: "mysql://user@host:3306/app" }.');
  }
  if ((options.url === undefined) === (options.connection === undefined)) {
    throw new InvalidArgumentError('MySQL driver needs exactly one of `url` (mysql://...) or `connection` (mysql2 options).');
  }
  let connection: ConnectionOptions;
  let params = new URLSearchParams();
  if (options.url !== undefined) {
    const parsed = parseUrl(options.url);
    connection = parsed.connection;
    params = parsed.params;
  } else {
    if (typeof options.connection !== 'object' || options.connection === null) {
      throw new InvalidArgumentError('`connection` must be an object of mysql2 connection options.');
    }
    connection = { ...options.connection };
  }
  const fromUrl = (name: string): string | undefined => params.get(name) ?? undefined;
  const num = (name: string, value: unknown): number | undefined => {
    if (value === undefined) return undefined;
    const n = typeof value === 'string' ? Number(value) : value;
    return validateMs(name, n, 1, 0);
  };
  const database = connection.database;
  if (typeof database !== 'string' || database.length === 0) {
    throw new InvalidArgumentError('Name the database that holds the lock tables: mysql://user@host:3306/<database>.');
  }
  const prefix = options.tablePrefix ?? fromUrl('tablePrefix') ?? 'dlock_';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_]{0,40}$/.test(prefix)) {
    throw new InvalidArgumentError(`tablePrefix must be at most 40 letters, digits or underscores, got ${JSON.stringify(prefix)}.`);
  }
  const connections = num('connections', options.connections ?? fromUrl('connections')) ?? 2;
  if (connections > 64) throw new OutOfRangeError('connections', `connections must be between 1 and 64, got ${connections}.`);
  const maxWaits = num('maxWaits', options.maxWaits ?? fromUrl('maxWaits')) ?? 16;
  const connectTimeout = num('connectTimeoutMs', options.connectTimeoutMs ?? fromUrl('connectTimeoutMs')) ?? 5000;
  const mode = fromUrl('mode');
  if (mode !== undefined && mode !== 'session' && mode !== 'table') {
    throw new InvalidArgumentError(`mode must be "session" or "table", got ${JSON.stringify(mode)}.`);
  }
  if (options.create !== undefined && typeof options.create !== 'boolean') throw new InvalidArgumentError(`create must be a boolean, got ${typeof options.create}.`);
  return {
    create: options.create ?? true,
    connection: { ...connection, connectTimeout },
    database,
    prefix,
    connections,
    maxWaits,
    mode,
    logger: options.logger,
    display: `${connection.host ?? 'localhost'}:${connection.port ?? 3306}/${database}`,
  };
}

function parseUrl(url: string): { connection: ConnectionOptions; params: URLSearchParams } {
  if (typeof url !== 'string' || !/^(mysql|mariadb):\/\//i.test(url)) {
    throw new InvalidArgumentError(`url must look like mysql://user:pass@host:3306/database, got ${JSON.stringify(url)}.`);
  }
  let u: URL;
  try {
    u = new URL(url.replace(/^[a-z]+:/i, 'mysql:'));
  } catch (e) {
    throw new InvalidArgumentError(`Cannot parse the MySQL URL ${JSON.stringify(url)}: ${(e as Error).message}.`);
  }
  const connection: Record<string, unknown> = {
    host: u.hostname.replace(/^\[|\]$/g, '') || 'localhost',
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username) || undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || undefined,
  };
  for (const [name, value] of u.searchParams) {
    if (DLOCK_PARAMS.has(name)) continue;
    // Passed to mysql2 as its URL parser would: JSON when it parses, else the string.
    try {
      connection[name] = JSON.parse(value) as unknown;
    } catch {
      connection[name] = value;
    }
  }
  return { connection, params: u.searchParams };
}

/** Lower-case RFC 4648 base32 without padding: case-insensitive safe, like MySQL lock names. */
function base32(bytes: Buffer): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** The MySQL names of one key. */
export interface KeyNames {
  /** Primary key of the key's row: SHA-256 of the key text (UTF-8). */
  readonly id: Buffer;
  /**
   * Session lock name: `dl:` + base32(SHA-256(database, table prefix, key)) = 55 characters,
   * within MySQL's 64-character limit, and case-insensitive safe (base32 has one case), so
   * distinct keys never share a lock (MySQL compares lock names case-insensitively).
   */
  readonly lock: string;
}

/** Names for `key` in `database` with table prefix `prefix` (lock names are server-wide). */
export function keyNames(database: string, prefix: string, key: string): KeyNames {
  const id = createHash('sha256').update(key, 'utf8').digest();
  const scoped = base32(createHash('sha256').update(`${database}\u0000${prefix}\u0000${key}`, 'utf8').digest());
  return { id, lock: `dl:${scoped}` };
}

/** Which of `n` connections serves a key (stable per key). */
export function slotOf(id: Buffer, n: number): number {
  return id.readUInt32BE(0) % n;
}
