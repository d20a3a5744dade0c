import { Command } from 'commander';
import { connect } from '../../connect.js';
import { CliError, URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';
import { requireUrl, urlOption } from './inspect.js';

interface Flags {
  url?: string;
  json: boolean;
  force: boolean;
}

export function releaseCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('release')
    .description('Evict whoever holds a lock (--force): every holder goes, waiters are woken, the fencing counter moves on.')
    .argument('<key>', 'the lock key')
    .addOption(urlOption())
    .option('--force', 'evict the holders (required: the CLI does not own the lock)', false)
    .option('--json', 'print one JSON object: { key, released, fence }', false)
    .addHelpText(
      'after',
      `\n${URL_RULE} release has no default. The evicted holder's lease is told at its next renewal (its signal aborts); ` +
        'the next holder gets a greater fencing token, so a fenced resource rejects the evicted holder\'s writes.',
    )
    .action(async (key: string, flags: Flags) => {
      if (!flags.force) {
        throw new CliError(
          `dlock release does not own "${key}": only the holder's own lease can release it. To evict whoever holds it ` +
            '(an operator\'s way out of a stuck holder), pass --force: dlock release --force <key> --url URL.',
          2,
        );
      }
      const url = requireUrl('release', flags.url);
      // Nothing to evict on an engine that has no locks yet: create nothing there either.
      const client = await connect(url, { create: false });
      try {
        const { released, fence } = await reaching(url, client.forceRelease(key), 15_000);
        if (flags.json) io.stdout.write(`${JSON.stringify({ key, released, fence: fence.toString() })}\n`);
        else if (released === 0) io.stdout.write(`lock "${key}" was free: nothing released (fence ${fence})\n`);
        else io.stdout.write(`released ${released} hold(s) of "${key}"; fence is now ${fence} (the next holder's token is greater)\n`);
        setExitCode(0);
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    });
}
