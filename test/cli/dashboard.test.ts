/**
 * `dlock dashboard` end to end: the CLI (dist) serves a SQLite file on port 0, lock workers in
 * other processes hold and release locks, and Debian's headless Chromium (driven by
 * playwright-core) shows them: key, holder pid, token, mode, readers and semaphore permit holders
 * with their permits and queued waiters, a TTL counting down, a lock name with markup rendered as
 * text, feed entries on release, force release only with --allow-admin (the worker's lease is
 * lost), the auth token, and the loopback rule. Screenshots go to the
 * test's temp dir (DLOCK_DASHBOARD_SCREENSHOTS=docs also copies two of them there, for the README).
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { ReadWriteLock } from '../../src/primitives/read-write-lock.js';
import { Semaphore } from '../../src/primitives/semaphore.js';
import { killClis, launchChromium, openPage, runCli, servedUrl, stopCli } from '../support/browser.js';
import { forkWorker, killWorkers, startTogether } from '../support/workers.js';

const dir = mkdtempSync(join(tmpdir(), 'dlock-dashboard-'));
const url = `sqlite:${join(dir, 'locks.db')}`;
let browser: Browser;

beforeAll(async () => {
  browser = await launchChromium();
  // The dashboard creates nothing: make the database first.
  const c = await connect(url);
  await c.inspect('init');
  await c.close();
}, 60_000);

/** In-process clients a test opened (closed at the end, also after a failure). */
const closers: Array<() => Promise<void>> = [];

afterAll(async () => {
  await Promise.allSettled(closers.splice(0).map((c) => c()));
  await killWorkers();
  killClis();
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** With DLOCK_DASHBOARD_SCREENSHOTS=DIR, copy a screenshot to DIR/name (how docs/*.png are made). */
function keepForDocs(file: string, name: string): void {
  const to = process.env.DLOCK_DASHBOARD_SCREENSHOTS;
  if (to) copyFileSync(file, join(to, name));
}

const XSS = '<img src=x onerror="window.__pwned=1">';

describe('dlock dashboard on SQLite, in headless Chromium', () => {
  it('shows holders of other processes live, escapes lock names, feeds releases, and stays read-only', async () => {
    const cli = runCli(['dashboard', '--url', url, '--port', '0', '--interval', '200']);
    try {
      const address = await servedUrl(cli);
      expect(cli.out()).toContain('read-only');
      const key = `orders:${XSS}`;
      const holder = forkWorker({ mode: 'hold', url, key, ttlMs: 8000 });
      const looper = forkWorker({ mode: 'loop', url, key: 'cart:loop', cycles: 3, holdMs: 900, ttlMs: 5000, waitMs: 10_000 });
      await startTogether([holder]);
      const held = await holder.next('held', 20_000);
      const page = await openPage(browser, address);

      // The holder's row: the name with markup is text, the pid, token and mode are the worker's.
      const row = page.locator('tr[data-testid=lock-row]').filter({ has: page.locator('td.key', { hasText: 'orders:' }) });
      await row.waitFor({ timeout: 10_000 });
      // The dashboard polls only while a page is open: the looper starts once it is (on a loaded
      // machine its three cycles could otherwise end before the first snapshot).
      await startTogether([looper]);
      expect(await row.locator('td.key').textContent()).toBe(key);
      expect(await row.locator('td.pid').textContent()).toBe(String(held.pid));
      expect(await row.locator('td.token').textContent()).toBe(held.token);
      expect(await row.locator('td.mode').textContent()).toBe('exclusive');
      expect(await page.locator('#locks img').count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned)).toBeUndefined();

      // The TTL counts down on the page (between snapshots and across them).
      const samples: number[] = [];
      for (let i = 0; i < 12; i += 1) {
        samples.push(Number.parseFloat((await row.locator('td.ttl').textContent()) ?? 'NaN'));
        await page.waitForTimeout(120);
      }
      expect(samples.every((s) => s > 0 && s <= 8)).toBe(true);
      expect(samples.some((s, i) => i > 0 && s < (samples[i - 1] ?? 0))).toBe(true);

      // Readers of a read-write lock with a writer queued, and a semaphore's permit holders with a
      // waiter for more permits than are free: one row per holder, mode, permits and queue (held
      // until the screenshot, released at the end).
      const [ca, cb] = [await connect(url), await connect(url)];
      closers.push(() => ca.close(), () => cb.close());
      const reads = [await new ReadWriteLock(ca, 'doc:1').read.acquire({ ttlMs: 8000 }), await new ReadWriteLock(cb, 'doc:1').read.acquire({ ttlMs: 8000 })];
      const writer = new ReadWriteLock(cb, 'doc:1').write.acquire({ ttlMs: 8000, waitMs: 60_000 });
      const sem = (c: typeof ca): Semaphore => new Semaphore(c, 'pool:db', { permits: 3 });
      const permits = [await sem(ca).acquire({ permits: 2, ttlMs: 8000 }), await sem(ca).acquire({ permits: 1, ttlMs: 8000 })];
      const all = sem(cb).acquire({ permits: 3, ttlMs: 8000, waitMs: 60_000 });
      for (const p of [writer, all]) p.catch(() => undefined); // awaited at the end
      const cells = async (k: string): Promise<string[][]> =>
        page.locator(`tr[data-key="${k}"]`).evaluateAll((rows) => rows.map((r) => ['mode', 'pid', 'permits', 'waiters'].map((c) => r.querySelector(`td.${c}`)?.textContent ?? '')));
      const me = String(process.pid);
      await expect.poll(() => cells('doc:1'), { timeout: 10_000 }).toEqual([['shared', me, '1', '1'], ['shared', me, '1', '']]);
      await expect.poll(() => cells('pool:db'), { timeout: 10_000 }).toEqual([['permits/3', me, '2', '1'], ['permits/3', me, '1', '']]);

      // The looping worker's releases reach the feed, and its holds the histograms.
      await looper.next('done', 30_000);
      const released = page.locator('#feed li[data-kind=released][data-key="cart:loop"]');
      await released.first().waitFor({ timeout: 10_000 });
      expect(await released.first().textContent()).toContain(`pid ${looper.pid}`);
      expect(await page.locator('#feed li[data-key="cart:loop"]').count()).toBeGreaterThanOrEqual(2);
      const holds = await page.locator('.hist[data-key="cart:loop"] .hold-count').allTextContents();
      expect(holds.map(Number).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
      await expect.poll(() => page.locator('tr[data-key="cart:loop"]').count(), { timeout: 5000 }).toBe(0);

      // Read-only: no button, and the endpoint refuses.
      expect(await page.locator('[data-testid=force-release]').count()).toBe(0);
      const refused = await fetch(new URL('api/release', address), { method: 'POST', headers: { 'X-Dlock-Admin': '1' }, body: JSON.stringify({ key }) });
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { error: string }).error).toContain('--allow-admin');
      const shot = join(dir, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      keepForDocs(shot, 'dashboard.png');
      await Promise.all([...reads, ...permits].map((l) => l.release()));
      await Promise.all([(await writer).release(), (await all).release()]);
      await page.close();
      await killWorkers([holder, looper]);
    } finally {
      expect(await stopCli(cli)).toBe(0);
    }
  }, 90_000);

  it('--allow-admin: the page force-releases a lock and the holder in another process loses it', async () => {
    const cli = runCli(['dashboard', '--url', url, '--port', '0', '--interval', '200', '--allow-admin']);
    try {
      const address = await servedUrl(cli);
      const key = `admin:${Math.random().toString(36).slice(2)}`;
      const holder = forkWorker({ mode: 'hold', url, key, ttlMs: 1500 });
      await startTogether([holder]);
      const held = await holder.next('held', 20_000);
      const page = await openPage(browser, address);
      const row = page.locator(`tr[data-key="${key}"]`);
      await row.waitFor({ timeout: 10_000 });
      expect(await row.locator('td.pid').textContent()).toBe(String(held.pid));
      // Without the custom header (a cross-site form could send this): refused.
      const csrf = await fetch(new URL('api/release', address), { method: 'POST', body: JSON.stringify({ key }) });
      expect(csrf.status).toBe(403);
      await row.locator('[data-testid=force-release]').click();
      const lost = await holder.next('lost', 10_000);
      expect(lost.code).toBe('DLOCK_LOCK_LOST');
      await page.locator(`#feed li[data-kind=force-released][data-key="${key}"]`).waitFor({ timeout: 10_000 });
      await expect.poll(() => row.count(), { timeout: 5000 }).toBe(0);
      await page.screenshot({ path: join(dir, 'dashboard-admin.png') });
      await page.close();
      await killWorkers([holder]);
    } finally {
      expect(await stopCli(cli)).toBe(0);
    }
  }, 60_000);

  it('--auth-token: refused without it, accepted with it (header or ?token=)', async () => {
    const token = 'a-long-secret-token';
    const cli = runCli(['dashboard', '--url', url, '--port', '0', '--auth-token', token]);
    try {
      const address = await servedUrl(cli);
      expect(address).toContain(`?token=${token}`);
      const bare = new URL(address);
      bare.search = '';
      expect((await fetch(bare)).status).toBe(401);
      expect((await fetch(new URL('events?token=wrong-token-value', bare))).status).toBe(401);
      const viaHeader = await fetch(bare, { headers: { Authorization: `Bearer ${token}` } });
      expect(viaHeader.status).toBe(200);
      expect(await viaHeader.text()).toContain('dlock dashboard');
      const page = await openPage(browser, address);
      // The first snapshot follows the stream's opening.
      await page.locator('[data-testid=engine]').filter({ hasText: 'locks.db' }).waitFor({ timeout: 10_000 });
      await page.close();
      const denied = await browser.newPage();
      const r = await denied.goto(bare.toString());
      expect(r?.status()).toBe(401);
      await denied.close();
    } finally {
      expect(await stopCli(cli)).toBe(0);
    }
  }, 60_000);

  it('refuses a non-loopback --host without --auth-token; an unreachable engine and a missing SQLite file are one line', async () => {
    const open = runCli(['dashboard', '--url', url, '--host', '0.0.0.0']);
    expect(await open.exited).toBe(2);
    expect(open.out()).toContain('--auth-token');
    expect(open.out()).not.toMatch(/\n\s+at /);
    const down = runCli(['dashboard', '--url', 'redis://127.0.0.1:1']);
    expect(await down.exited).toBe(1);
    expect(down.out()).toBe(
      'dlock: error: Cannot reach Redis at redis://127.0.0.1:1: no connection. Check that it is running there and that --url (or DLOCK_URL) names it.\n',
    );
    // It creates nothing: a mistyped SQLite path is one line, and no file appears.
    const typo = join(dir, 'typo', 'lcoks.db');
    const missing = runCli(['dashboard', '--url', `sqlite:${typo}`]);
    expect(await missing.exited).toBe(1);
    expect(missing.out()).toBe(`dlock: error: no such database file "${typo}": check the path (nothing was created)\n`);
    expect(existsSync(join(dir, 'typo'))).toBe(false);
    const badPort = runCli(['dashboard', '--url', url, '--port', '70000']);
    expect(await badPort.exited).toBe(1);
    expect(badPort.out()).toContain('expected a whole number from 0 to 65535');
    expect(existsSync(join(dir, 'locks.db'))).toBe(true);
  }, 30_000);
});

describe('dlock demo flash-sale --dashboard', () => {
  it('shows the race: without the lock the stock goes to 0 and it oversells; with the lock it is exact', async () => {
    const saleUrl = `sqlite:${join(dir, 'sale.db')}`;
    const cli = runCli(['demo', 'flash-sale', '--dashboard', '--url', saleUrl, '--workers', '6', '--buyers', '120', '--stock', '2', '--port', '0']);
    try {
      const address = await servedUrl(cli);
      // Nothing runs before a page is open.
      await new Promise((r) => setTimeout(r, 300));
      expect(cli.out()).not.toContain('flash sale on');
      const page = await openPage(browser, address);
      const off = page.locator('[data-testid=phase][data-lock=off]');
      const on = page.locator('[data-testid=phase][data-lock=on]');
      await off.locator('[data-field=stock]').filter({ hasText: /^0 of 2$/ }).waitFor({ timeout: 60_000 });
      await page.locator('[data-testid=phase][data-lock=off][data-state=done]').waitFor({ timeout: 60_000 });
      const oversold = Number(await off.locator('[data-field=oversold]').textContent());
      const orders = Number(await off.locator('[data-field=orders]').textContent());
      expect(oversold).toBeGreaterThan(0);
      expect(orders).toBe(2 + oversold);
      expect(await off.locator('[data-field=buyers]').textContent()).toBe('120 / 120');
      expect(await off.locator('.verdict').textContent()).toContain(`OVERSOLD by ${oversold}`);
      // The locked phase: a worker holding the lock is seen while it runs, then the exact result.
      await page.locator('[data-testid=phase][data-lock=on][data-state=done]').waitFor({ timeout: 90_000 });
      expect(await on.locator('[data-field=orders]').textContent()).toBe('2');
      expect(await on.locator('[data-field=oversold]').textContent()).toBe('0');
      expect(await on.locator('[data-field=stock]').textContent()).toBe('0 of 2');
      expect(await on.locator('.verdict').textContent()).toContain('exact: sold 2 of 2');
      // Each of the 120 buyers took the lock once: it changed hands 119 times, across the workers.
      expect(await on.locator('[data-field=handoffs]').textContent()).toBe('119 times');
      const tiles = await on.locator('.worker').allTextContents();
      expect(tiles.map((t) => Number(/×(\d+)$/.exec(t)?.[1])).reduce((a, b) => a + b, 0)).toBe(120);
      await page.screenshot({ path: join(dir, 'flash-sale.png'), fullPage: true });
      keepForDocs(join(dir, 'flash-sale.png'), 'dashboard-flash-sale.png');
      // The CLI printed both summaries, as the page said.
      expect(cli.out()).toMatch(new RegExp(`\\| oversold +\\| ${oversold} `));
      expect(cli.out()).toContain('both phases done');
      await page.close();
    } finally {
      const code = await stopCli(cli);
      expect(code, cli.out()).toBe(0);
    }
  }, 180_000);
});
