/**
 * Turn the chaos suite's results (chaos-results.jsonl, written by `npm run chaos`) into the
 * results table of docs/reliability.md, between its `chaos-results` markers: one row per
 * scenario × engine, one column per primitive, each cell "runs / violations" and the cell's
 * figures, "skip" with the reason as a footnote, or "FAIL" with the failure's first line.
 * Usage: node scripts/chaos-table.mjs [results.jsonl] [docs/reliability.md] [marker] [command]
 * `marker` (default `chaos-results`) names the `<!-- marker:start -->` ... `<!-- marker:end -->`
 * pair to fill, so that a part of the matrix run alone can have a table of its own; `command`
 * (default `npm run chaos`) is what the table says it was measured by.
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const [resultsFile = 'chaos-results.jsonl', docFile = 'docs/reliability.md', marker = 'chaos-results', command = 'npm run chaos'] = process.argv.slice(2);
if (!existsSync(resultsFile)) {
  process.stderr.write(`${resultsFile} not found: run npm run chaos first.\n`);
  process.exit(1);
}
const rows = readFileSync(resultsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const PRIMITIVES = ['mutex', 'read', 'write', 'semaphore', 'multi', 'election', 'snowflake'];
const scenarios = [...new Set(rows.map((r) => r.scenario))].sort((a, b) => parseInt(a, 10) - parseInt(b, 10));
const notes = [];
const noteOf = (text) => {
  let i = notes.indexOf(text);
  if (i < 0) i = notes.push(text) - 1;
  return `[${i + 1}]`;
};
const fmt = (figures) =>
  Object.entries(figures)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
const out = [];
let runs = 0;
let violations = 0;
let failed = 0;
for (const s of scenarios) {
  out.push(`\n**${s}**\n`, `| engine | ${PRIMITIVES.join(' | ')} |`, `|---|${PRIMITIVES.map(() => '---').join('|')}|`);
  const engines = [...new Set(rows.filter((r) => r.scenario === s).map((r) => r.engine))];
  for (const e of engines) {
    const cells = PRIMITIVES.map((p) => {
      const r = rows.filter((x) => x.scenario === s && x.engine === e && x.primitive === p).at(-1);
      if (!r) return '—';
      if (r.skipped) return `skip ${noteOf(r.skipped)}`;
      runs += r.runs;
      if (r.failed) {
        failed += 1;
        return `**FAIL** ${noteOf(r.failed)}`;
      }
      violations += r.violations;
      return `${r.runs} / ${r.violations}${Object.keys(r.figures).length ? `<br>${fmt(r.figures)}` : ''}`;
    });
    out.push(`| ${e} | ${cells.join(' | ')} |`);
  }
}
const when = rows.map((r) => r.at).sort();
const table = [
  `Measured by \`${command}\` on ${when[0]?.slice(0, 10)} (${when[0]?.slice(11, 16)}-${when.at(-1)?.slice(11, 16)} UTC), one 2-core machine shared with other work.`,
  `Each cell: runs / violations found, then the figures measured (ms unless named). In total: ${runs} runs, ${violations} violations, ${failed} failed cells.`,
  ...out,
  '',
  ...notes.map((n, i) => `[${i + 1}] ${n.replace(/\|/g, '\\|')}`),
].join('\n');
const doc = readFileSync(docFile, 'utf8');
const start = `<!-- ${marker}:start -->`;
const end = `<!-- ${marker}:end -->`;
const a = doc.indexOf(start);
const b = doc.indexOf(end);
if (a < 0 || b < a) {
  process.stderr.write(`${docFile} has no ${start} ... ${end} markers.\n`);
  process.exit(1);
}
writeFileSync(docFile, `${doc.slice(0, a + start.length)}\n${table}\n${doc.slice(b)}`);
process.stdout.write(`chaos table: ${runs} runs, ${violations} violations, ${failed} failed cells -> ${docFile}\n`);
