import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { IdGenerator } from '../../ids/generator.js';
import { IdLayout, type LayoutOptions } from '../../ids/layout.js';
import { intArg } from '../options.js';
import { URL_RULE, reaching, withTimeout, type CliIo } from '../output.js';

/** Where `dlock ids next` leases worker ids when no URL is given: one SQLite file per host. */
export function defaultIdsUrl(): string {
  return `sqlite:${join(tmpdir(), 'dlock-ids.db')}`;
}

interface LayoutFlags {
  layout?: LayoutOptions;
  epoch?: number;
  unitMs?: number;
}

interface NextFlags extends LayoutFlags {
  url?: string;
  name: string;
  count: number;
  json: boolean;
}

interface DecodeFlags extends LayoutFlags {
  json: boolean;
}

/** "41/10/12" -> bits. */
function layoutArg(value: string): LayoutOptions {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(value);
  if (!m) throw new InvalidArgumentError('expected TIME/WORKER/SEQUENCE bits, e.g. 41/10/12.');
  return { timeBits: Number(m[1]), workerBits: Number(m[2]), sequenceBits: Number(m[3]) };
}

/** An ISO date or ms since 1970. */
function epochArg(value: string): number {
  const ms = /^\d+$/.test(value.trim()) ? Number(value) : Date.parse(value);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new InvalidArgumentError('expected an ISO date (2026-01-01T00:00:00Z) or ms since 1970.');
  return ms;
}

function layoutOf(flags: LayoutFlags): IdLayout {
  return new IdLayout({ ...flags.layout, epochMs: flags.epoch, unitMs: flags.unitMs });
}

function layoutOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--layout <bits>', 'bits of time/worker/sequence (default 41/10/12)').argParser(layoutArg))
    .addOption(new Option('--epoch <date>', 'epoch of the layout: ISO date or ms (default 2026-01-01T00:00:00Z)').argParser(epochArg))
    .addOption(new Option('--unit-ms <ms>', 'ms per time unit (default 1)').argParser(intArg(1, 86_400_000)));
}

const CHUNK = 50_000;

export function idsCommand(io: CliIo, setExitCode: (code: number) => void): Command {
  const ids = new Command('ids').description('Snowflake ids: generate them with a leased worker id, or decode one.');

  ids.addCommand(
    layoutOptions(
      new Command('next')
        .description('Print new ids, one per line. The worker id is leased through the engine --url names (by default a SQLite file in the temp dir, shared by every process on this host).')
        .addOption(new Option('--count <n>', 'how many ids').argParser(intArg(1, 10_000_000)).default(1))
        .addOption(new Option('--url <url>', `engine that leases the worker id (default: ${defaultIdsUrl()})`).env('DLOCK_URL'))
        .addOption(new Option('--name <name>', 'the id space: generators with the same name share worker ids').default('default'))
        .option('--json', 'print one JSON object: {"name", "workerId", "ids": [decimal strings]}', false)
        .addHelpText('after', `\n${URL_RULE} ids next: ${defaultIdsUrl()}.`),
    ).action(async (flags: NextFlags) => {
      const url = flags.url ?? defaultIdsUrl();
      const gen = await reaching(url, IdGenerator.start({ url, name: flags.name, layout: layoutOf(flags) }), 15_000);
      try {
        const out: string[] = [];
        for (let left = flags.count; left > 0; ) {
          const n = Math.min(CHUNK, left);
          const batch = gen.nextBatch(n);
          left -= n;
          if (flags.json) for (const id of batch) out.push(id.toString());
          else io.stdout.write(`${batch.join('\n')}\n`);
          // Let the mark timer run between chunks (a long synchronous batch would reach the ceiling).
          if (left > 0) await yieldToLoop();
        }
        if (flags.json) io.stdout.write(`${JSON.stringify({ name: flags.name, workerId: gen.workerId, ids: out })}\n`);
        setExitCode(0);
      } finally {
        await withTimeout(gen.close(), 5000, 'Releasing the worker id').catch(() => undefined);
      }
    }),
  );

  ids.addCommand(
    layoutOptions(
      new Command('decode')
        .description('Show the time, worker id and sequence inside an id.')
        .argument('<id>', 'the id, in decimal')
        .option('--json', 'print one JSON object', false),
    ).action((id: string, flags: DecodeFlags) => {
      const layout = layoutOf(flags);
      const d = layout.decode(id);
      if (flags.json) {
        io.stdout.write(
          `${JSON.stringify({ id: d.id.toString(), time: d.date.toISOString(), timestampMs: d.timestampMs, worker: d.worker, sequence: d.sequence, layout: layout.toJSON() })}\n`,
        );
      } else {
        const rows: [string, string][] = [
          ['id', d.id.toString()],
          ['time', `${d.date.toISOString()} (${d.timestampMs} ms)`],
          ['worker', String(d.worker)],
          ['sequence', String(d.sequence)],
          ['layout', layout.toString()],
        ];
        const w = Math.max(...rows.map(([k]) => k.length));
        io.stdout.write(`${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
      }
      setExitCode(0);
    }),
  );
  return ids;
}
