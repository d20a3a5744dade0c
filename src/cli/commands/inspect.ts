import { Command, Option } from 'commander';
import { connect } from '../../connect.js';
import type { KeyInfo, LockClient, LockInfo } from '../../core/client.js';
import { CliError, URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';

interface Flags {
  url?: string;
  json: boolean;
}

export function remaining(info: LockInfo): string {
  return info.remainingMs < 0 ? 'none (held for the session)' : `${info.remainingMs} ms`;
}

/** One holder as JSON. */
function holderJson(h: LockInfo): Record<string, unknown> {
  return { owner: h.owner, host: h.holder?.host ?? null, pid: h.holder?.pid ?? null, mode: h.mode, permits: h.permits, token: h.token.toString(), remainingMs: h.remainingMs };
}

/** The JSON answer (also one element of `dlock ls --json`): the first holder's fields at the top (as before), then every holder. */
export function jsonOf(key: string, state: KeyInfo): Record<string, unknown> {
  const first = state.holders[0];
  if (!first) return { key, free: true, ...(state.waiters > 0 ? { waiters: state.waiters } : {}) };
  const { mode: _m, permits: _p, ...top } = holderJson(first);
  return {
    key,
    free: false,
    ...top,
    mode: state.mode,
    holders: state.holders.map(holderJson),
    waiters: state.waiters,
    ...(state.limit !== undefined ? { limit: state.limit, permitsHeld: state.holders.reduce((n, h) => n + h.permits, 0) } : {}),
  };
}

const MODE_TEXT = { exclusive: 'held', shared: 'held by readers', permits: 'a semaphore' } as const;

/** The text answer: what the key is, then a block per holder. */
function textOf(key: string, state: KeyInfo): string {
  if (state.mode === 'free') return `lock "${key}" is free${state.waiters > 0 ? ` (${state.waiters} waiting)` : ''}\n`;
  const head =
    state.mode === 'permits'
      ? `lock "${key}" is a semaphore: ${state.holders.reduce((n, h) => n + h.permits, 0)} of ${state.limit ?? '?'} permits held by ${state.holders.length}${state.limit === undefined ? ' (one lock per permit on this driver: the limit is not stored)' : ''}`
      : `lock "${key}" is ${MODE_TEXT[state.mode]}${state.mode === 'shared' ? ` (${state.holders.length})` : ''}`;
  const blocks = state.holders.map((h) => {
    const rows: [string, string][] = [
      ['owner', h.owner],
      ['host', h.holder?.host ?? '(unknown: not a dlock owner id)'],
      ['pid', h.holder ? String(h.holder.pid) : '(unknown)'],
      ...(state.mode === 'permits' ? ([['permits', String(h.permits)]] as [string, string][]) : []),
      ['token', h.token.toString()],
      ['remaining TTL', remaining(h)],
    ];
    const w = Math.max(...rows.map(([k]) => k.length));
    return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n');
  });
  return `${head}; ${state.waiters} waiting\n${blocks.join('\n\n')}\n`;
}

/** The URL an operator command was given, or the usage error that says how to give one. */
export function requireUrl(command: string, url: string | undefined): string {
  if (url !== undefined) return url;
  throw new CliError(`dlock ${command} needs the engine to look at: pass --url URL or set DLOCK_URL (e.g. sqlite:/var/tmp/myapp-locks.db, redis://127.0.0.1:6379).`, 2);
}

/** The `--url` option of the operator commands (no default). */
export function urlOption(): Option {
  return new Option('--url <url>', 'lock engine URL (sqlite:PATH, redis://HOST:PORT, ...); no default: required here').env('DLOCK_URL');
}

/**
 * `inspectAll(key)`, and when the key itself is free, the permits of a semaphore built the older
 * way (one lock per permit, `<key>:permit:<i>`, on drivers without the permits mode), so that a
 * held permit never reads "free" under its semaphore's name.
 */
async function inspectWithPermits(client: LockClient, key: string): Promise<KeyInfo> {
  const state = await client.inspectAll(key);
  if (state.mode !== 'free') return state;
  const prefix = `${key}:permit:`;
  const permits = (await client.list(prefix)).filter((i) => /^\d+$/.test(i.key.slice(prefix.length)));
  if (permits.length === 0) return state;
  const holders = permits.flatMap((i) => i.holders.map((h) => ({ ...h, mode: 'permits' as const, permits: 1 })));
  return { key, mode: 'permits', holders, waiters: state.waiters };
}

export function inspectCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('inspect')
    .description('Show who holds a lock: its mode (exclusive, readers, semaphore), every holder (owner, host, pid, permits, fencing token, remaining TTL) and how many wait; or that it is free.')
    .argument('<key>', 'the lock key')
    .addOption(urlOption())
    .option('--json', 'print one JSON object', false)
    .addHelpText('after', `\n${URL_RULE} inspect has no default (a new database would hold no locks); it creates nothing on the engine.`)
    .action(async (key: string, flags: Flags) => {
      const url = requireUrl('inspect', flags.url);
      // Reading creates nothing: a mistyped SQLite path is an error, not a new empty database.
      const client = await connect(url, { create: false });
      try {
        const state = await reaching(url, inspectWithPermits(client, key), 15_000);
        if (flags.json) io.stdout.write(`${JSON.stringify(jsonOf(key, state))}\n`);
        else io.stdout.write(textOf(key, state));
        setExitCode(0);
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    });
}
