/**
 * The API reference (`npm run docs:api`, TypeDoc from the TSDoc) builds with no warning: every
 * export of every entry point is documented (`validation.notDocumented`), every `{@link}`
 * resolves, and no public signature names a type the reference leaves out (warnings are errors).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './project.js';

/** The devDependency; TYPEDOC_BIN points at another install (a checkout sharing node_modules). */
const typedoc = process.env.TYPEDOC_BIN ?? join(repoRoot, 'node_modules', 'typedoc', 'bin', 'typedoc');
const out = mkdtempSync(join(tmpdir(), 'dlock-api-'));

function run(args: string[], cwd: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [typedoc, ...args], { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('API reference', () => {
  it('typedoc is installed (devDependency)', () => {
    expect(existsSync(typedoc), `${typedoc} is missing: run npm ci`).toBe(true);
  });

  it('builds from the TSDoc with no warning (undocumented export, broken link, missing type)', async () => {
    const r = await run(['--out', join(out, 'api')], repoRoot);
    expect(r.output.split('\n').filter((l) => /warning|error/i.test(l)), r.output).toEqual([]);
    expect(r.code, r.output).toBe(0);
    for (const page of ['index.html', 'classes/index.LockClient.html', 'classes/drivers_redis.RedisDriver.html']) {
      expect(existsSync(join(out, 'api', page)), page).toBe(true);
    }
  }, 120_000);

  it('the same settings fail on an undocumented export and on a broken link', async () => {
    const dir = join(out, 'bad');
    rmSync(dir, { recursive: true, force: true });
    const src = join(dir, 'src');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'index.ts'), 'export const undocumented = 1;\n/** See {@link Nowhere}. */\nexport const linked = 2;\n');
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022' }, include: ['src'] }));
    const settings = JSON.parse(readFileSync(join(repoRoot, 'typedoc.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'typedoc.json'), JSON.stringify({ ...settings, entryPoints: ['src/index.ts'], tsconfig: 'tsconfig.json', out: 'api' }));
    const r = await run([], dir);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/undocumented.*does not have any documentation/);
    expect(r.output).toMatch(/Failed to resolve link to "Nowhere"/);
  }, 120_000);
});
