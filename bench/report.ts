/**
 * Benchmark pictures: the rows a scenario prints with `--json` (median [min–max] of the
 * repetitions per figure and library) drawn as an SVG, or an HTML page holding the SVG and the
 * figures as a table. Hand-written SVG, no dependency: the charts are horizontal bars (median, with
 * a whisker from the fastest to the slowest repetition and a dot per repetition) and latency
 * ladders (p50 → p90 → p99 per library on a log scale), one panel per figure, dlock highlighted.
 *
 *   npm run bench -- handoff --report docs/bench-handoff.svg     (or .html; with --json the rows still print)
 *   npx tsx bench/report.ts rows.jsonl --report chart.svg          (redraw from saved --json output)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

/** median / min / max over the repetitions (bench/support.ts `Spread`); `reps` optional here. */
export interface SpreadLike {
  median: number;
  min: number;
  max: number;
  reps?: number[];
}

/** One `--json` row of any scenario. */
export interface ReportRow {
  scenario: string;
  library: string;
  id: string;
  figures: Record<string, SpreadLike>;
}

/** One panel: a figure (bar) or several percentiles of one latency (ladder). */
interface Panel {
  title: string;
  kind: 'bar' | 'ladder';
  figures: string[];
  unit: string;
  log: boolean;
  /** Divide values by this for display (ids/s → M ids/s). */
  scale?: number;
}

const LATENCY = ['p50', 'p90', 'p99'];

/** What to draw per scenario; figures missing from the rows are skipped. */
const PANELS: Record<string, Panel[]> = {
  handoff: [
    { title: 'handoff: release → the waiter holds it (p50, p90, p99; log scale, less is better)', kind: 'ladder', figures: LATENCY, unit: 'ms', log: true },
    { title: 'an idle waiter costs the server (commands/s while the lock is held; less is better)', kind: 'bar', figures: ['idleWaiterCommandsPerSecond'], unit: 'cmd/s', log: false },
  ],
  uncontended: [{ title: 'uncontended: acquire + release cycles/s, 64 loops (more is better)', kind: 'bar', figures: ['cyclesPerSecond'], unit: 'cycles/s', log: false }],
  contended: [
    { title: 'contended, one key: cycles/s (more is better)', kind: 'bar', figures: ['cyclesPerSecond'], unit: 'cycles/s', log: false },
    { title: 'contended: longest wait for the lock (log scale, less is better)', kind: 'bar', figures: ['maxWaitMs'], unit: 'ms', log: true },
    { title: 'contended: releases re-taken by the releaser (fairness; less is fairer)', kind: 'bar', figures: ['retakenPct'], unit: '%', log: false },
  ],
  ids: [{ title: 'ids: one thread (more is better)', kind: 'bar', figures: ['idsPerSecond'], unit: 'M ids/s', log: false, scale: 1e6 }],
  engines: [
    { title: 'handoff per engine (p50, p90; log scale, less is better)', kind: 'ladder', figures: ['handoffP50', 'handoffP90'], unit: 'ms', log: true },
    { title: 'contended cycles/s per engine, 8 processes, one key (more is better)', kind: 'bar', figures: ['cyclesPerSecond'], unit: 'cycles/s', log: false },
    { title: 'contended: longest wait per engine (log scale, less is better)', kind: 'bar', figures: ['maxWaitMs'], unit: 'ms', log: true },
  ],
  'redlock-uncontended': [{ title: 'Redlock, 3 nodes: uncontended cycles/s (more is better)', kind: 'bar', figures: ['cyclesPerSecond'], unit: 'cycles/s', log: false }],
  'redlock-handoff': [{ title: 'Redlock, 3 nodes: handoff (log scale, less is better)', kind: 'ladder', figures: LATENCY, unit: 'ms', log: true }],
};

const W = 860;
const LABEL_W = 250;
const VALUE_W = 130;
const PLOT_W = W - LABEL_W - VALUE_W - 20;
const ROW_H = 24;
const DLOCK = '#1f6feb';
const PEER = '#8c959f';
const LADDER_COLORS = ['#1f6feb', '#bf8700', '#cf222e'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Short human number: 45,531 / 0.87 / 7.67. */
export function fmtValue(v: number): string {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1 || a === 0) return v.toFixed(2).replace(/\.?0+$/, '') || '0';
  return v.toPrecision(2);
}

interface Axis {
  x(v: number): number;
  ticks: number[];
}

function axis(values: number[], log: boolean): Axis {
  const finite = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  const hi = Math.max(...finite, log ? 1 : 0);
  if (log) {
    const lo = Math.min(...finite, hi);
    const a = Math.floor(Math.log10(lo));
    const b = Math.max(a + 1, Math.ceil(Math.log10(hi)));
    const ticks: number[] = [];
    for (let e = a; e <= b; e++) ticks.push(10 ** e);
    return { x: (v) => (v <= 0 ? 0 : ((Math.log10(v) - a) / (b - a)) * PLOT_W), ticks };
  }
  const raw = hi / 4 || 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const top = Math.ceil(hi / step) * step || step;
  const ticks: number[] = [];
  for (let t = 0; t <= top + step / 2; t += step) ticks.push(t);
  return { x: (v) => (Math.max(0, v) / top) * PLOT_W, ticks };
}

const isDlock = (r: ReportRow): boolean => r.id === 'dlock' || r.id.startsWith('dlock') || r.library.startsWith('dlock');

/** SVG fragment of one panel at vertical offset `y`; returns its height too. */
function panelSvg(panel: Panel, rows: ReportRow[], y: number): { svg: string; height: number } {
  const scale = panel.scale ?? 1;
  const figs = panel.figures.filter((f) => rows.some((r) => r.figures[f]));
  const rs = rows.filter((r) => figs.some((f) => r.figures[f] && Number.isFinite(r.figures[f].median)));
  if (figs.length === 0 || rs.length === 0) return { svg: '', height: 0 };
  const all = rs.flatMap((r) => figs.flatMap((f) => (r.figures[f] ? [r.figures[f].min, r.figures[f].max, r.figures[f].median] : []))).map((v) => v / scale);
  const ax = axis(all, panel.log);
  const top = y + 28;
  const plotH = rs.length * ROW_H;
  const x0 = LABEL_W;
  const out: string[] = [`<text x="10" y="${y + 16}" class="title">${esc(panel.title)}</text>`];
  for (const t of ax.ticks) {
    const tx = x0 + ax.x(t);
    out.push(`<line x1="${tx.toFixed(1)}" y1="${top}" x2="${tx.toFixed(1)}" y2="${top + plotH}" class="grid"/>`);
    out.push(`<text x="${tx.toFixed(1)}" y="${top + plotH + 14}" class="tick">${esc(fmtValue(t))}</text>`);
  }
  rs.forEach((r, i) => {
    const cy = top + i * ROW_H + ROW_H / 2;
    const color = isDlock(r) ? DLOCK : PEER;
    out.push(`<text x="${x0 - 8}" y="${cy + 4}" class="label${isDlock(r) ? ' dlock' : ''}">${esc(r.library)}</text>`);
    if (panel.kind === 'bar') {
      const s = r.figures[figs[0]!];
      if (!s) return;
      const [m, lo, hi] = [s.median / scale, s.min / scale, s.max / scale];
      const w = Math.max(1, ax.x(m));
      out.push(`<rect x="${x0}" y="${cy - 7}" width="${w.toFixed(1)}" height="14" fill="${color}" rx="2"><title>${esc(`${r.library}: ${fmtValue(m)} ${panel.unit} [${fmtValue(lo)}–${fmtValue(hi)}]`)}</title></rect>`);
      out.push(`<line x1="${(x0 + ax.x(lo)).toFixed(1)}" y1="${cy}" x2="${(x0 + ax.x(hi)).toFixed(1)}" y2="${cy}" class="whisker"/>`);
      for (const v of s.reps ?? []) out.push(`<circle cx="${(x0 + ax.x(v / scale)).toFixed(1)}" cy="${cy}" r="2" class="rep"/>`);
      out.push(`<text x="${x0 + PLOT_W + 10}" y="${cy + 4}" class="value">${esc(`${fmtValue(m)} [${fmtValue(lo)}–${fmtValue(hi)}]`)}</text>`);
    } else {
      const pts = figs.map((f, k) => ({ f, k, s: r.figures[f] })).filter((p) => p.s && Number.isFinite(p.s.median));
      if (pts.length > 1) {
        const a = x0 + ax.x(pts[0]!.s!.median);
        const b = x0 + ax.x(pts[pts.length - 1]!.s!.median);
        out.push(`<line x1="${a.toFixed(1)}" y1="${cy}" x2="${b.toFixed(1)}" y2="${cy}" stroke="${color}" stroke-width="3" opacity="0.5"/>`);
      }
      for (const p of pts) {
        const s = p.s!;
        out.push(`<line x1="${(x0 + ax.x(s.min)).toFixed(1)}" y1="${cy - 5}" x2="${(x0 + ax.x(s.max)).toFixed(1)}" y2="${cy - 5}" stroke="${LADDER_COLORS[p.k % 3]}" stroke-width="1"/>`);
        out.push(`<circle cx="${(x0 + ax.x(s.median)).toFixed(1)}" cy="${cy}" r="4.5" fill="${LADDER_COLORS[p.k % 3]}"><title>${esc(`${r.library} ${p.f}: ${fmtValue(s.median)} ${panel.unit} [${fmtValue(s.min)}–${fmtValue(s.max)}]`)}</title></circle>`);
      }
      const text = pts.map((p) => fmtValue(p.s!.median)).join(' / ');
      out.push(`<text x="${x0 + PLOT_W + 10}" y="${cy + 4}" class="value">${esc(text)}</text>`);
    }
  });
  if (panel.kind === 'ladder') {
    const legend = figs.map((f, k) => `<tspan fill="${LADDER_COLORS[k % 3]}">● ${esc(f)}</tspan>`).join('  ');
    out.push(`<text x="${x0 + PLOT_W + 10}" y="${top - 6}" class="tick" text-anchor="start">${legend} (${esc(panel.unit)})</text>`);
  } else {
    out.push(`<text x="${x0 + PLOT_W + 10}" y="${top - 6}" class="tick" text-anchor="start">${esc(panel.unit)}, median [min–max]</text>`);
  }
  return { svg: out.join('\n'), height: 28 + plotH + 30 };
}

/** The panels of `rows` (every scenario they contain, in order) as one standalone SVG. */
export function renderSvg(rows: readonly ReportRow[], caption = ''): string {
  const parts: string[] = [];
  let y = 10;
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  for (const s of scenarios) {
    const rs = rows.filter((r) => r.scenario === s && r.figures);
    const panels = PANELS[s] ?? [{ title: s, kind: 'bar' as const, figures: [Object.keys(rs[0]?.figures ?? {})[0] ?? ''], unit: '', log: false }];
    for (const p of panels) {
      const { svg, height } = panelSvg(p, rs, y);
      parts.push(svg);
      y += height;
    }
  }
  if (caption) {
    parts.push(`<text x="10" y="${y + 6}" class="caption">${esc(caption)}</text>`);
    y += 16;
  }
  const style = `
    text { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 12px; fill: #24292f; }
    .title { font-size: 13px; font-weight: 600; }
    .label { text-anchor: end; } .label.dlock { font-weight: 600; fill: ${DLOCK}; }
    .value { font-size: 11px; fill: #57606a; } .tick { font-size: 10px; fill: #57606a; text-anchor: middle; }
    .caption { font-size: 10px; fill: #57606a; }
    .grid { stroke: #d0d7de; stroke-width: 1; } .whisker { stroke: #24292f; stroke-width: 1.5; } .rep { fill: #24292f; opacity: 0.6; }`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" viewBox="0 0 ${W} ${y + 10}" role="img">`,
    `<style>${style}\n</style>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

/** An HTML page: the SVG, then every figure of every row as a table. */
export function renderHtml(rows: readonly ReportRow[], caption = ''): string {
  const tables = [...new Set(rows.map((r) => r.scenario))].map((s) => {
    const rs = rows.filter((r) => r.scenario === s);
    const figs = [...new Set(rs.flatMap((r) => Object.keys(r.figures)))];
    const head = `<tr><th>library</th>${figs.map((f) => `<th>${esc(f)}</th>`).join('')}</tr>`;
    const body = rs
      .map((r) => `<tr><td>${esc(r.library)}</td>${figs.map((f) => {
        const v = r.figures[f];
        return `<td>${v ? esc(`${fmtValue(v.median)} [${fmtValue(v.min)}–${fmtValue(v.max)}]`) : '–'}</td>`;
      }).join('')}</tr>`)
      .join('\n');
    return `<h2>${esc(s)}</h2>\n<table>\n${head}\n${body}\n</table>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dlock benchmarks</title>
<style>body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em;color:#24292f}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #d0d7de;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}</style></head>
<body><h1>dlock benchmarks</h1>
<p>${esc(caption)}</p>
${renderSvg(rows, '')}
${tables.join('\n')}
</body></html>
`;
}

/** Rows from `--json` output (one JSON object a line; other lines ignored). */
export function parseRows(text: string): ReportRow[] {
  const rows: ReportRow[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const o = JSON.parse(t) as Partial<ReportRow>;
      if (typeof o.scenario === 'string' && typeof o.library === 'string' && o.figures && typeof o.figures === 'object') {
        rows.push({ scenario: o.scenario, library: o.library, id: String(o.id ?? o.library), figures: o.figures });
      }
    } catch {
      // not a row
    }
  }
  return rows;
}

/** Write `rows` to `file`: `.html` → the page, anything else → the SVG. */
export function writeReport(file: string, rows: readonly ReportRow[], caption = ''): void {
  if (rows.length === 0) throw new Error(`--report ${file}: the scenario produced no rows to draw`);
  writeFileSync(file, file.endsWith('.html') ? renderHtml(rows, caption) : renderSvg(rows, caption));
}

/**
 * For bench/main.ts: the scenarios print their rows as JSON lines when `json` is on; this collects
 * them from console.log (and passes them through only if `echo`), so `--report` needs no change in
 * the scenarios. `finish(caption)` restores console.log and writes the file.
 */
export function captureReport(file: string, echo: boolean): { finish(caption?: string): void } {
  const rows: ReportRow[] = [];
  const original = console.log;
  console.log = (...args: unknown[]): void => {
    const found = args.length === 1 && typeof args[0] === 'string' ? parseRows(args[0]) : [];
    rows.push(...found);
    if (echo || found.length === 0) original(...args);
  };
  return {
    finish(caption = '') {
      console.log = original;
      writeReport(file, rows, caption);
      process.stderr.write(`report: ${rows.length} rows drawn to ${file}\n`);
    },
  };
}

// Standalone: npx tsx bench/report.ts ROWS.jsonl --report FILE.svg|FILE.html [--caption TEXT]
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { report: { type: 'string' }, caption: { type: 'string', default: '' } } });
  if (positionals.length !== 1 || !values.report) {
    process.stderr.write('usage: npx tsx bench/report.ts ROWS.jsonl --report FILE.svg|FILE.html [--caption TEXT]\n');
    process.exit(2);
  }
  writeReport(values.report, parseRows(readFileSync(positionals[0]!, 'utf8')), values.caption);
}
