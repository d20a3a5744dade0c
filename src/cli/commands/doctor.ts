import { Command, Option } from 'commander';
import { doctor, type DoctorReport } from '../../doctor/index.js';
import { CliError, URL_RULE, reaching, type CliIo } from '../output.js';
import { intArg } from '../options.js';

interface Flags {
  url?: string;
  json: boolean;
  ttlMs?: number;
  timeoutMs?: number;
}

const MARK = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const;

/** The text answer: one block per finding, then a summary line. */
function textOf(report: DoctorReport): string {
  const lines = [`dlock doctor: ${report.engine} at ${report.url}`];
  for (const f of report.findings) {
    lines.push(`  ${MARK[f.status]}  ${f.check}: ${f.evidence}`);
    if (f.fix) lines.push(`        fix: ${f.fix}`);
  }
  const count = (s: string): number => report.findings.filter((f) => f.status === s).length;
  lines.push(`${count('fail')} fail, ${count('warn')} warn, ${count('ok')} ok`);
  return `${lines.join('\n')}\n`;
}

export function doctorCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('doctor')
    .description('Check the engine for settings that break locks (eviction, persistence, replicas, poolers, timeouts, clock, round trip) and say what to change. Read-only.')
    .addOption(new Option('--url <url>', 'lock engine URL (sqlite:PATH, redis://HOST:PORT, ...); no default: required here').env('DLOCK_URL'))
    .option('--json', 'print one JSON object', false)
    .option('--ttl-ms <ms>', "the application's lock TTL: the round trip check fails at a tenth of it (default 30000)", intArg(1, 2 ** 31 - 1))
    .option('--timeout-ms <ms>', 'how long connecting and each read may take (default 5000)', intArg(1, 600_000))
    .addHelpText('after', `\n${URL_RULE} doctor has no default.\nExit code: 0 when no check fails (warnings included), 1 when one fails or the engine is unreachable, 2 on bad usage.`)
    .action(async (flags: Flags) => {
      const url = flags.url;
      if (url === undefined) {
        throw new CliError('dlock doctor needs the engine to check: pass --url URL or set DLOCK_URL (e.g. redis://127.0.0.1:6379, sqlite:/var/tmp/myapp-locks.db).', 2);
      }
      const timeoutMs = flags.timeoutMs ?? 5000;
      const report = await reaching(url, doctor(url, { ...(flags.ttlMs !== undefined ? { ttlMs: flags.ttlMs } : {}), timeoutMs }), timeoutMs * 6 + 30_000);
      io.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : textOf(report));
      setExitCode(report.findings.some((f) => f.status === 'fail') ? 1 : 0);
    });
}
