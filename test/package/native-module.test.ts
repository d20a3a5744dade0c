/**
 * better-sqlite3's native module built for one Node.js and loaded by another (a checkout switched
 * to another Node line) is reported as NativeModuleError with the fix command, not as an
 * unreachable database. For real: this checkout's better-sqlite3 (built for the Node running the
 * tests) is loaded by a Node.js of another line, fetched with `npx -y node@N` (skipped, saying
 * why, when that cannot be fetched).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { classifyPeerError, nativeMismatch } from '../../src/core/peer.js';
import { NativeModuleError } from '../../src/errors.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);
const other = major === 20 ? 22 : 20;

/** `npx -y node@N` argv for a script, or the reason it cannot run here. */
function otherNode(): { ok: true } | { ok: false; why: string } {
  const installed = JSON.parse(readFileSync(join(root, 'node_modules/better-sqlite3/package.json'), 'utf8')) as { version: string };
  if (Number(installed.version.split('.')[0]) >= 13) {
    // 13 is a Node-API module: one build serves every Node line, so no mismatch can arise
    // (loading it on a Node older than it supports crashes the process instead).
    return { ok: false, why: `better-sqlite3 ${installed.version} is a Node-API module (no per-Node build to mismatch)` };
  }
  const r = spawnSync('npx', ['-y', `node@${other}`, '-p', 'process.versions.modules'], { encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) return { ok: false, why: `npx -y node@${other} failed: ${(r.stderr || String(r.error)).slice(0, 300)}` };
  if (r.stdout.trim() === process.versions.modules) return { ok: false, why: `node@${other} has this Node's ABI` };
  return { ok: true };
}

describe('a native module built for another Node.js', () => {
  const probe = otherNode();
  const dir = mkdtempSync(join(tmpdir(), 'dlock-abi-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!probe.ok)(`is reported with the Node version and \`npm rebuild better-sqlite3\` (loaded by node@${other})${probe.ok ? '' : ` [skipped: ${probe.why}]`}`, () => {
    const driver = pathToFileURL(join(root, 'dist/esm/drivers/sqlite/index.js')).href;
    const script = `
      const out = { node: process.version, abi: process.versions.modules };
      const { SqliteDriver } = await import(${JSON.stringify(driver)});
      try { new SqliteDriver({ path: ${JSON.stringify(join(dir, 'locks.db'))} }); }
      catch (e) {
        out.dlock = { name: e.name, code: e.code, fixCommand: e.fixCommand, nodeVersion: e.nodeVersion, builtForAbi: e.builtForAbi, message: e.message };
        out.raw = { message: e.cause?.message };
      }
      console.log(JSON.stringify(out));`;
    const out = JSON.parse(
      execFileSync('npx', ['-y', `node@${other}`, '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 180_000 }),
    ) as {
      node: string;
      abi: string;
      raw?: { message: string };
      dlock?: { name: string; code: string; fixCommand: string; nodeVersion: string; builtForAbi: number; message: string };
    };
    // The real error Node gave for the mismatch (the cause)...
    expect(out.raw?.message).toMatch(/NODE_MODULE_VERSION|did not self-register/);
    // ...is what the driver reports, typed.
    expect(out.dlock).toMatchObject({ name: 'NativeModuleError', code: 'DLOCK_NATIVE_MODULE', fixCommand: 'npm rebuild better-sqlite3', nodeVersion: out.node });
    expect(out.dlock?.message).toContain(out.node);
    expect(out.dlock?.message).toContain('`npm rebuild better-sqlite3`');
    expect(out.dlock?.message).not.toMatch(/Create its directory|UnavailableError/);
    if (/NODE_MODULE_VERSION (\d+)\./.test(out.raw?.message ?? '')) {
      expect(out.dlock?.builtForAbi).toBe(Number(process.versions.modules));
      expect(out.dlock?.message).toContain(`NODE_MODULE_VERSION ${out.abi}`);
    }
    // The classification, in this process, on that same real message.
    const raw = Object.assign(new Error(out.raw?.message), { code: 'ERR_DLOPEN_FAILED' });
    expect(nativeMismatch(raw.message)).toBeDefined();
    expect(classifyPeerError('better-sqlite3', raw)).toBeInstanceOf(NativeModuleError);
  });

  it('classifies Node’s two forms of the message, and nothing else', () => {
    const versioned =
      "The module '/x/better_sqlite3.node'\nwas compiled against a different Node.js version using\nNODE_MODULE_VERSION 115. This version of Node.js requires\nNODE_MODULE_VERSION 137. Please try re-compiling or re-installing\nthe module (for instance, using `npm rebuild` or `npm install`).";
    expect(nativeMismatch(versioned)).toEqual({ builtFor: 115 });
    expect(nativeMismatch('Module did not self-register: \'/x/better_sqlite3.node\'.')).toEqual({ builtFor: undefined });
    expect(nativeMismatch('SQLITE_CANTOPEN: unable to open database file')).toBeUndefined();
    expect(classifyPeerError('better-sqlite3', new Error('SQLITE_CANTOPEN: unable to open database file'))).toBeUndefined();
    const e = classifyPeerError('better-sqlite3', new Error(versioned));
    expect(e).toBeInstanceOf(NativeModuleError);
    expect((e as NativeModuleError).builtForAbi).toBe(115);
    expect(e?.message).toContain(process.version);
  });
});
