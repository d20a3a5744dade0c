import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { redactUrl } from '../drivers/redis/url.js';

/** Where the CLI writes; injectable for tests. */
export interface CliIo {
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
}

/** A user-facing failure with its exit code: printed as one message, no stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/** "message (cause: ...)" down the cause chain, without repeating what the message already says. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  let text = e.message;
  let cause: unknown = e.cause;
  for (let depth = 0; cause instanceof Error && depth < 3; depth += 1) {
    if (cause.message && !text.includes(cause.message)) text += `\n  cause: ${cause.message}`;
    cause = cause.cause;
  }
  if (process.env.DLOCK_DEBUG && e.stack) text += `\n${e.stack}`;
  return text;
}

/** The package version, from the nearest package.json named dlock above this module. */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i += 1) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'dlock' && pkg.version) return pkg.version;
      } catch {
        // keep looking
      }
    }
    dir = dirname(dir);
  }
  return '0.0.0';
}

/** Resolve `p`, or reject after `ms` with a message saying what did not answer. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CliError(`${what}: no answer within ${ms} ms.`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The one rule for which engine a command talks to, stated in `--help`: `--url`, else the
 * `DLOCK_URL` environment variable, else the command's embedded default (when it has one).
 */
export const URL_RULE = 'Engine URL: --url, else the DLOCK_URL environment variable, else the command\'s default.';

/** The engine a URL names, for messages. */
export function engineOf(url: string): string {
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  if (scheme === 'sqlite') return 'SQLite';
  if (scheme.startsWith('redis') || scheme === 'rediss' || scheme === 'redlock') return 'Redis';
  if (scheme === 'etcd') return 'etcd';
  if (scheme === 'postgres' || scheme === 'postgresql') return 'PostgreSQL';
  if (scheme === 'mysql' || scheme === 'mariadb') return 'MySQL';
  if (scheme === 'zookeeper') return 'ZooKeeper';
  return 'the lock engine';
}

/** The same line on every command when an engine does not answer. */
export function unreachableLine(engine: string, where: string, reason: string): string {
  return `Cannot reach ${engine} at ${where}: ${reason.replace(/\.$/, '')}. Check that it is running there and that --url (or DLOCK_URL) names it.`;
}

/** The deepest message down a cause chain (what the engine's client said). */
function rootReason(e: unknown): string {
  let cur: unknown = e;
  for (let depth = 0; depth < 5 && cur instanceof Error && cur.cause instanceof Error; depth += 1) cur = cur.cause;
  const text = cur instanceof Error ? cur.message : String(cur);
  // ioredis's words for "no connection" say nothing about the connection.
  return /max retries per request|Connection is closed/i.test(text) ? 'no connection' : text;
}

/**
 * `p`, with an unreachable engine (UnavailableError, or no answer within `ms`) reported as
 * {@link unreachableLine}; other errors (a bad URL, a missing package) pass through.
 */
export async function reaching<T>(url: string, p: Promise<T>, ms: number): Promise<T> {
  try {
    return await withTimeout(p, ms, 'no answer');
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    const timedOut = e instanceof CliError && e.message.startsWith('no answer');
    if (code === 'DLOCK_UNAVAILABLE' || timedOut) {
      // One line: the reason is in it (DLOCK_DEBUG=1 still prints the stack).
      throw new CliError(unreachableLine(engineOf(url), redactUrl(url), timedOut ? `no answer within ${ms} ms` : rootReason(e)), 1);
    }
    throw e;
  }
}
