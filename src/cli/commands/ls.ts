import { Command } from 'commander';
import { connect } from '../../connect.js';
import type { KeyInfo } from '../../core/client.js';
import { URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';
import { intArg } from '../options.js';
import { jsonOf, remaining, requireUrl, urlOption } from './inspect.js';

interface Flags {
  url?: string;
  json: boolean;
  limit: number;
}

const DEFAULT_LIMIT = 1000;

/** One row per holder: key, mode, owner, host, pid, permits, token, remaining TTL, waiters. */
function tableOf(prefix: string, locks: readonly KeyInfo[], limit: number): string {
  if (locks.length === 0) return `no locks held${prefix === '' ? '' : ` under "${prefix}"`}\n`;
  const head = ['KEY', 'MODE', 'OWNER', 'HOST', 'PID', 'PERMITS', 'TOKEN', 'TTL', 'WAITERS'];
  const rows = locks.flatMap((info) =>
    info.holders.map((h) => [
      info.key,
      info.mode === 'permits' ? `permits/${info.limit ?? '?'}` : info.mode,
      h.owner,
      h.holder?.host ?? '?',
      h.holder ? String(h.holder.pid) : '?',
      String(h.permits),
      h.token.toString(),
      h.remainingMs < 0 ? 'session' : remaining(h),
      String(info.waiters),
    ]),
  );
  const widths = head.map((_, i) => Math.max(...[head, ...rows].map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ');
  const more = locks.length >= limit ? ` (stopped at --limit ${limit}: there may be more)` : '';
  return `${[head, ...rows].map(line).join('\n')}\n${locks.length} lock(s) held${more}\n`;
}

export function lsCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('ls')
    .description('List every held lock (under a key prefix): mode, each holder (owner, host, pid, permits, fencing token, remaining TTL) and how many wait.')
    .argument('[prefix]', 'only keys starting with this (default: every key)', '')
    .addOption(urlOption())
    .option('--json', 'print one JSON object: { prefix, locks: [as `dlock inspect --json`], truncated }', false)
    .option('--limit <n>', `stop after this many keys (default ${DEFAULT_LIMIT})`, intArg(1, 1_000_000), DEFAULT_LIMIT)
    .addHelpText('after', `\n${URL_RULE} ls has no default; it creates nothing on the engine and reads it in bounded pages (Redis SCAN, SQL ranges).`)
    .action(async (prefix: string, flags: Flags) => {
      const url = requireUrl('ls', flags.url);
      const client = await connect(url, { create: false });
      try {
        const locks = await reaching(url, client.list(prefix, { limit: flags.limit }), 30_000);
        if (flags.json) {
          const out = { prefix, locks: locks.map((l) => jsonOf(l.key, l)), truncated: locks.length >= flags.limit };
          io.stdout.write(`${JSON.stringify(out)}\n`);
        } else io.stdout.write(tableOf(prefix, locks, flags.limit));
        setExitCode(0);
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    });
}
