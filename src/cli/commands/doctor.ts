import { Command, Option } from 'commander';
import { doctor, type DoctorReport } from '../../doctor/index.js';
import { CliError, URL_RULE, reaching, type CliIo } from '../output.js';

interface Flags {
  url?: string;
  json: boolean;
  ttlMs?: string;
  timeoutMs?: string;
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

/** A whole number option in [1, max], or a usage error (exit code 2). */
function whole(flag: string, value: string | undefined, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max) throw new CliError(`${flag} must be a whole number of milliseconds from 1 to ${max}, got "${value}".`, 2);
  return n;
}

export function doctorCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  return new Command('doctor')
    .description('Check the engine for settings that break locks (eviction, persistence, replicas, poolers, timeouts, clock, round trip) and say what to change. Read-only.')
    .addOption(new Option('--url <url>', 'lock engine URL (sqlite:PATH, redis://HOST:PORT, ...); no default: required here').env('DLOCK_URL'))
    .option('--json', 'print one JSON object', false)
    .option('--ttl-ms <ms>', "the application's lock TTL: the round trip check fails at a tenth of it (default 30000)")
    .option('--timeout-ms <ms>', 'how long connecting and each read may take (default 5000)')
    .addHelpText('after', `\n${URL_RULE} doctor has no default.\nExit code: 0 when no check fails (warnings included), 1 when one fails or the engine is unreachable, 2 when --url is missing or an option value is invalid.`)
    .action(async (flags: Flags) => {
      const url = flags.url;
      if (url === undefined) {
        throw new CliError('dlock doctor needs the engine to check: pass --url URL or set DLOCK_URL (e.g. redis://127.0.0.1:6379, sqlite:/var/tmp/myapp-locks.db).', 2);
      }
      const ttlMs = whole('--ttl-ms', flags.ttlMs, 2 ** 31 - 1);
      const timeoutMs = whole('--timeout-ms', flags.timeoutMs, 600_000) ?? 5000;
      const report = await reaching(url, doctor(url, { ...(ttlMs !== undefined ? { ttlMs } : {}), timeoutMs }), timeoutMs * 6 + 30_000);
      io.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : textOf(report));
      setExitCode(report.findings.some((f) => f.status === 'fail') ? 1 : 0);
    });
}
