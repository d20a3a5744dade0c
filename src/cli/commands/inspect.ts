import { Command, Option } from 'commander';
import { connect } from '../../connect.js';
import type { LockInfo } from '../../core/client.js';
import { CliError, URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';

interface Flags {
  url?: string;
  json: boolean;
}

function remaining(info: LockInfo): string {
  return info.remainingMs < 0 ? 'none (held for the session)' : `${info.remainingMs} ms`;
}

export function inspectCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('inspect')
    .description('Show who holds a lock (owner, host, pid, fencing token, remaining TTL), or that it is free.')
    .argument('<key>', 'the lock key')
    .addOption(new Option('--url <url>', 'lock engine URL (sqlite:PATH, redis://HOST:PORT, ...); no default: required here').env('DLOCK_URL'))
    .option('--json', 'print one JSON object', false)
    .addHelpText('after', `\n${URL_RULE} inspect has no default (a new database would hold no locks).`)
    .action(async (key: string, flags: Flags) => {
      const url = flags.url;
      if (url === undefined) {
        throw new CliError('dlock inspect needs the engine to look at: pass --url URL or set DLOCK_URL (e.g. sqlite:/var/tmp/myapp-locks.db, redis://127.0.0.1:6379).', 2);
      }
      const client = await connect(url);
      try {
        const info = await reaching(url, client.inspect(key), 15_000);
        if (flags.json) {
          const body = info
            ? {
                key,
                free: false,
                owner: info.owner,
                host: info.holder?.host ?? null,
                pid: info.holder?.pid ?? null,
                token: info.token.toString(),
                remainingMs: info.remainingMs,
              }
            : { key, free: true };
          io.stdout.write(`${JSON.stringify(body)}\n`);
        } else if (!info) {
          io.stdout.write(`lock "${key}" is free\n`);
        } else {
          const rows: [string, string][] = [
            ['owner', info.owner],
            ['host', info.holder?.host ?? '(unknown: not a dlock owner id)'],
            ['pid', info.holder ? String(info.holder.pid) : '(unknown)'],
            ['token', info.token.toString()],
            ['remaining TTL', remaining(info)],
          ];
          const w = Math.max(...rows.map(([k]) => k.length));
          io.stdout.write(`lock "${key}" is held\n${rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n')}\n`);
        }
        setExitCode(0);
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    });
}
