import { Command, Option } from 'commander';
import { connect } from '../../connect.js';
import { LockSource } from '../dashboard/locks.js';
import { isLoopback, startDashboardServer } from '../dashboard/server.js';
import { intArg } from '../options.js';
import { CliError, URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';
import { requireUrl, urlOption } from './inspect.js';

interface Flags {
  url?: string;
  host: string;
  port: number;
  interval: number;
  prefix: string;
  limit: number;
  authToken?: string;
  allowAdmin: boolean;
}

/** The `--host`/`--port`/`--auth-token` rule: anything but loopback needs a token. */
export function checkExposure(host: string, token: string | undefined, command: string): void {
  if (!isLoopback(host) && token === undefined) {
    throw new CliError(
      `dlock ${command} --host ${host} would show the locks to the network: pass --auth-token TOKEN too (every request must then carry it), or keep the default --host 127.0.0.1.`,
      2,
    );
  }
  if (token !== undefined && token.length < 8) throw new CliError('--auth-token must be at least 8 characters long.', 2);
}

/** Options shared by `dlock dashboard` and `dlock demo flash-sale --dashboard`. */
export function serveOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--host <address>', 'address to listen on (anything but loopback needs --auth-token)').default('127.0.0.1'))
    .addOption(new Option('--port <n>', 'port to listen on (0: a free port; the URL is printed)').argParser(intArg(0, 65_535)).default(0))
    .addOption(new Option('--auth-token <token>', 'require this token on every request (header or ?token=)').env('DLOCK_DASHBOARD_TOKEN'));
}

/** Wait for SIGINT/SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export function dashboardCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return serveOptions(
    new Command('dashboard').description(
      'A live web page of every held lock (holder host and pid, token, TTL counting down, mode, permits, queue), a feed of recent events and per-key wait/hold histograms.',
    ),
  )
    .addOption(urlOption())
    .addOption(new Option('--interval <ms>', 'how often the engine is listed, while a page is open').argParser(intArg(50, 60_000)).default(500))
    .addOption(new Option('--prefix <prefix>', 'only keys starting with this').default(''))
    .addOption(new Option('--limit <n>', 'list at most this many keys').argParser(intArg(1, 100_000)).default(1000))
    .option('--allow-admin', 'let the page force-release a lock (evicts its holder)', false)
    .addHelpText(
      'after',
      `\n${URL_RULE} dashboard has no default. One poller serves every open page and stops when none is open. ` +
        'Events of other processes are inferred from successive listings (at --interval resolution).',
    )
    .action(async (flags: Flags) => {
      checkExposure(flags.host, flags.authToken, 'dashboard');
      const url = requireUrl('dashboard', flags.url);
      const client = await connect(url, { create: false });
      try {
        // An engine that does not answer is one line now, before anything listens.
        await reaching(url, client.list(flags.prefix, { limit: 1 }), 15_000);
        const source = new LockSource(client, { url, prefix: flags.prefix, limit: flags.limit, intervalMs: flags.interval });
        const server = await startDashboardServer(source, {
          host: flags.host,
          port: flags.port,
          ...(flags.authToken === undefined ? {} : { token: flags.authToken }),
          allowAdmin: flags.allowAdmin,
          intervalMs: flags.interval,
          title: 'dlock dashboard',
        }).catch((e: unknown) => {
          throw new CliError(`Cannot listen on ${flags.host}:${flags.port}: ${(e as Error).message}.`, 1);
        });
        io.stdout.write(`dlock dashboard on ${server.url} (${flags.allowAdmin ? 'admin: force release allowed' : 'read-only'}; Ctrl-C to stop)\n`);
        await untilSignal();
        await server.close();
        setExitCode(0);
      } finally {
        await withTimeout(client.close(), 5000, 'Closing the lock client').catch(() => undefined);
      }
    });
}
