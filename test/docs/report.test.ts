/**
 * Benchmark pictures (bench/report.ts): the SVG draws what the rows say (bar length proportional to
 * the median, whisker from min to max, log scale for latencies), and `npm run bench -- <scenario>
 * --report FILE` writes it from a real run.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRows, renderHtml, renderSvg, type ReportRow } from '../../bench/report.js';
import { repoRoot } from './project.js';

const dir = mkdtempSync(join(tmpdir(), 'dlock-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const s = (median: number, min: number, max: number): { median: number; min: number; max: number; reps: number[] } => ({ median, min, max, reps: [min, median, max] });

/** The rect of the bar whose tooltip starts with `library`. */
function bar(svg: string, library: string): { x: number; width: number } {
  const m = new RegExp(`<rect x="([\\d.]+)" y="[\\d.]+" width="([\\d.]+)"[^>]*><title>${library}:`).exec(svg);
  if (!m) throw new Error(`no bar for ${library}`);
  return { x: Number(m[1]), width: Number(m[2]) };
}

describe('bench report', () => {
  const rows: ReportRow[] = [
    { scenario: 'uncontended', library: 'dlock', id: 'dlock', figures: { cyclesPerSecond: s(40_000, 36_000, 44_000) } },
    { scenario: 'uncontended', library: 'hand-rolled', id: 'hand-rolled', figures: { cyclesPerSecond: s(20_000, 18_000, 22_000) } },
    { scenario: 'handoff', library: 'dlock', id: 'dlock', figures: { p50: s(1, 0.9, 1.1), p90: s(2, 2, 2), p99: s(3, 3, 3) } },
    { scenario: 'handoff', library: 'redlock@4.2.0', id: 'redlock4', figures: { p50: s(100, 90, 110), p90: s(200, 200, 200), p99: s(300, 300, 300) } },
  ];
  const svg = renderSvg(rows, 'caption <&>');

  it('is one standalone SVG with every library and escaped text', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('caption &lt;&amp;&gt;');
    for (const l of ['dlock', 'hand-rolled', 'redlock@4.2.0']) expect(svg).toContain(`>${l}</text>`);
    // every opened element is closed
    const opened = (svg.match(/<(rect|line|circle|text|tspan|title|svg|style)\b/g) ?? []).length;
    const closed = (svg.match(/<\/(rect|line|circle|text|tspan|title|svg|style)>|\/>/g) ?? []).length;
    expect(closed).toBe(opened);
  });

  it('bars are proportional to the median, with a min-max whisker', () => {
    const d = bar(svg, 'dlock');
    const h = bar(svg, 'hand-rolled');
    expect(d.width / h.width).toBeCloseTo(2, 1);
    expect(svg).toContain('40,000 [36,000–44,000]');
    // the whisker of dlock spans 36,000..44,000 on the same axis as the bar
    const perUnit = d.width / 40_000;
    const whiskers = [...svg.matchAll(/<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)" y2="[\d.]+" class="whisker"\/>/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(whiskers.some(([a, b]) => Math.abs(a! - (d.x + 36_000 * perUnit)) < 1 && Math.abs(b! - (d.x + 44_000 * perUnit)) < 1)).toBe(true);
  });

  it('latency ladders are on a log scale: 100× slower is two decades further right', () => {
    const dots = [...svg.matchAll(/<circle cx="([\d.]+)" cy="[\d.]+" r="4.5"[^>]*><title>([^:]+) p50:/g)].map((m) => ({ x: Number(m[1]), lib: m[2] }));
    const d = dots.find((p) => p.lib === 'dlock')!;
    const r = dots.find((p) => p.lib === 'redlock@4.2.0')!;
    const p99 = [...svg.matchAll(/<circle cx="([\d.]+)" cy="[\d.]+" r="4.5"[^>]*><title>dlock p99:/g)].map((m) => Number(m[1]))[0]!;
    const decade = (p99 - d.x) / Math.log10(3);
    expect((r.x - d.x) / decade).toBeCloseTo(2, 1);
  });

  it('HTML holds the SVG and a table of every figure; --json output parses back to rows', () => {
    const html = renderHtml(rows);
    expect(html).toContain('<svg');
    expect(html).toContain('<th>cyclesPerSecond</th>');
    const text = ['node v20, header line', ...rows.map((r) => JSON.stringify({ ...r, params: { reps: 3 } })), '{"scenario":"ids","missing":"x"}'].join('\n');
    expect(parseRows(text)).toEqual(rows);
  });

  it('npm run bench -- uncontended --report FILE.svg draws a real run', async () => {
    const file = join(dir, 'uncontended.svg');
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const tsx = join(repoRoot, 'node_modules', 'tsx', 'dist', 'cli.mjs');
      const args = [tsx, 'bench/main.ts', 'uncontended', '--reps', '1', '--seconds', '0.5', '--loops', '8', '--only', 'dlock,hand-rolled', '--report', file];
      execFile(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).not.toContain('"figures"'); // rows go to the picture, not to stdout, without --json
    expect(out.stderr).toContain(`report: 2 rows drawn to ${file}`);
    const drawn = readFileSync(file, 'utf8');
    expect(drawn).toContain('uncontended: acquire + release cycles/s');
    expect(bar(drawn, 'dlock').width).toBeGreaterThan(0);
    expect(drawn.match(/<rect [^>]*><title>/g)).toHaveLength(2); // dlock and the hand-rolled loop
  }, 150_000);
});
