import { Command, CommanderError } from 'commander';
import { doctorCommand } from './commands/doctor.js';
import { flashSaleCommand } from './commands/flash-sale.js';
import { defaultIdsUrl, idsCommand } from './commands/ids.js';
import { inspectCommand } from './commands/inspect.js';
import { lsCommand } from './commands/ls.js';
import { releaseCommand } from './commands/release.js';
import { DemoError } from './flash-sale/store.js';
import { CliError, URL_RULE, describeError, packageVersion, type CliIo } from './output.js';

/** The `dlock` command tree. Actions report their exit code through `setExitCode`. */
export function buildProgram(io: CliIo, setExitCode: (code: number) => void): Command {
  const program = new Command('dlock')
    .description('Distributed locks and ids on real engines: inspect locks, generate and decode ids, run demonstrations.')
    .version(packageVersion(), '-V, --version')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `\n${URL_RULE}\n  demo flash-sale: a new temporary SQLite file; ids next: ${defaultIdsUrl()}; inspect, ls, release, doctor: none (--url or DLOCK_URL is required).`,
    );

  program
    .command('demo')
    .description('Demonstrations against a real engine.')
    .addCommand(flashSaleCommand(io, setExitCode));
  program.addCommand(inspectCommand(io, setExitCode));
  program.addCommand(lsCommand(io, setExitCode));
  program.addCommand(releaseCommand(io, setExitCode));
  program.addCommand(idsCommand(io, setExitCode));
  program.addCommand(doctorCommand(io, setExitCode));
  // Subcommands added with addCommand() do not inherit the settings above.
  for (const cmd of [...program.commands, ...program.commands.flatMap((c) => c.commands)]) {
    cmd.exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
    cmd.showHelpAfterError('(run with --help for usage)');
  }
  return program;
}

/** Run the CLI; resolves the process exit code. Never throws. */
export async function run(argv: readonly string[], io: CliIo = process): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => {
    code = c;
  });
  try {
    await program.parseAsync([...argv]);
    return code;
  } catch (e) {
    // Commander already printed its own usage errors (and --help/--version exit with code 0).
    if (e instanceof CommanderError) return e.exitCode;
    const exitCode = e instanceof CliError ? e.exitCode : 1;
    const known = e instanceof CliError || e instanceof DemoError || isDlock(e);
    io.stderr.write(`dlock: error: ${describeError(e)}\n`);
    if (!known && !process.env.DLOCK_DEBUG) io.stderr.write('(set DLOCK_DEBUG=1 for a stack trace)\n');
    return exitCode;
  }
}

function isDlock(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('DLOCK_');
}
