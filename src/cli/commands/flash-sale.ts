import { Command, Option } from 'commander';
import { runSaleDashboard } from '../dashboard/sale.js';
import { createProgressView } from '../flash-sale/progress.js';
import { summaryJson, summaryTable } from '../flash-sale/report.js';
import { runFlashSale } from '../flash-sale/run.js';
import { supportedSchemesText } from '../flash-sale/store.js';
import { intArg } from '../options.js';
import { CliError, URL_RULE, type CliIo } from '../output.js';
import { checkExposure, serveOptions } from './dashboard.js';

interface Flags {
  url?: string;
  workers: number;
  stock: number;
  buyers?: number;
  lock: boolean;
  json: boolean;
  ttlMs: number;
  waitMs: number;
  dashboard: boolean;
  host: string;
  port: number;
  authToken?: string;
}

const MAX_MS = 2 ** 31 - 1;

export function flashSaleCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  const cmd = new Command('flash-sale')
    .description(
      'One item, many buyers at the same instant: forks worker processes that all try to buy it, ' +
        'with a distributed lock (exact) or without (--no-lock: oversells).',
    )
    .addOption(
      new Option('--url <url>', `lock engine: ${supportedSchemesText()} (default: a temporary SQLite file)`).env(
        'DLOCK_URL',
      ),
    )
    .addOption(new Option('--workers <n>', 'worker processes').argParser(intArg(1, 1024)).default(16))
    .addOption(new Option('--stock <n>', 'items for sale').argParser(intArg(1, 1_000_000_000)).default(1))
    .addOption(new Option('--buyers <n>', 'buyers in total, split across the workers (default: workers x 50)').argParser(intArg(1, 10_000_000)))
    .option('--no-lock', 'run without the lock, to watch it oversell')
    .addOption(new Option('--ttl-ms <ms>', 'lock TTL in ms').argParser(intArg(30, MAX_MS)).default(10_000))
    .addOption(new Option('--wait-ms <ms>', 'how long a buyer waits for the lock, in ms').argParser(intArg(0, MAX_MS)).default(120_000))
    .option('--json', 'print one JSON object (last line) instead of the table and progress', false)
    .option('--dashboard', 'serve a live page of the race (--host, --port): both phases, without then with the lock, once the page is open', false);
  return serveOptions(cmd)
    .addHelpText('after', `\n${URL_RULE} demo flash-sale: a new temporary SQLite file, removed at the end.`)
    .action(async (flags: Flags) => {
      if (flags.dashboard) {
        await dashboardAction(flags, io);
        setExitCode(0);
        return;
      }
      const ac = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        ac.abort(new CliError(`Interrupted by ${sig}: workers stopped and temporary data removed.`, 130));
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const mode = flags.json ? 'none' : io.stderr.isTTY ? 'tty' : 'lines';
        const result = await runFlashSale(
          {
            url: flags.url,
            workers: flags.workers,
            stock: flags.stock,
            buyers: flags.buyers,
            lock: flags.lock,
            ttlMs: flags.ttlMs,
            waitMs: flags.waitMs,
          },
          {
            status: flags.json ? undefined : (line) => io.stderr.write(`${line}\n`),
            progress: createProgressView(mode, io.stderr),
            signal: ac.signal,
          },
        );
        io.stdout.write(`${flags.json ? summaryJson(result) : summaryTable(result)}\n`);
        if (!result.correct) throw new CliError('The lock did not keep the sale exact (see above).');
        setExitCode(0);
      } catch (e) {
        // An interrupt surfaces as whatever the run was waiting on; report the interrupt itself.
        if (ac.signal.aborted) throw ac.signal.reason;
        throw e;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

/** `--dashboard`: both phases on a page, until Ctrl-C. */
async function dashboardAction(flags: Flags, io: CliIo): Promise<void> {
  if (flags.json || !flags.lock) {
    throw new CliError('--dashboard runs both phases (without, then with the lock) and shows them on the page: drop --json and --no-lock.', 2);
  }
  checkExposure(flags.host, flags.authToken, 'demo flash-sale --dashboard');
  const ac = new AbortController();
  const onSignal = (): void => ac.abort(new CliError('Interrupted: workers stopped and temporary data removed.', 130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const sale = { workers: flags.workers, stock: flags.stock, buyers: flags.buyers, ttlMs: flags.ttlMs, waitMs: flags.waitMs, ...(flags.url === undefined ? {} : { url: flags.url }) };
    await runSaleDashboard(sale, { host: flags.host, port: flags.port, ...(flags.authToken === undefined ? {} : { authToken: flags.authToken }), signal: ac.signal }, io);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
