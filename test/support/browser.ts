/**
 * Helpers of the dashboard tests: Debian's Chromium through playwright-core, and the CLI (dist)
 * as a serving process that prints its URL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { safeKill } from './processes.js';
import { repoRoot } from './workers.js';

/** Headless Debian chromium (never a downloaded browser). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

const bin = join(repoRoot, 'bin', 'dlock.js');
const running = new Set<ChildProcess>();

/** A running CLI process. */
export interface Cli {
  readonly proc: ChildProcess;
  readonly out: () => string;
  readonly exited: Promise<number | null>;
}

/** Run the CLI, keeping its output. */
export function runCli(args: readonly string[]): Cli {
  const proc = spawn(process.execPath, [bin, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => {
    running.delete(proc);
    resolve(code);
  }));
  return { proc, out: () => out, exited };
}

/** The page URL a serving CLI printed. */
export async function servedUrl(cli: Cli, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = /(http:\/\/127\.0\.0\.1:\d+\/\S*)/.exec(cli.out());
    if (m?.[1]) return m[1];
    if (cli.proc.exitCode !== null || Date.now() > deadline) throw new Error(`no URL printed:\n${cli.out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stop a serving CLI with SIGINT; resolves its exit code. */
export async function stopCli(cli: Cli): Promise<number | null> {
  if (cli.proc.exitCode === null && cli.proc.pid !== undefined) safeKill(cli.proc.pid, 'SIGINT');
  return cli.exited;
}

/** A new page on `address`, once its event stream is live (dialogs are accepted). */
export async function openPage(browser: Browser, address: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on('dialog', (d) => void d.accept());
  await page.goto(address);
  await page.locator('[data-testid=status]').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
  return page;
}

/** SIGKILL every CLI process still running (afterAll). */
export function killClis(): void {
  for (const p of running) if (p.pid !== undefined) safeKill(p.pid, 'SIGKILL');
}
