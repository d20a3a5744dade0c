/**
 * The published shape: one ESM build with types for the root and each driver subpath, loadable
 * by plain Node from the built dist (the test command builds first) with `import` and, through
 * require(esm) (Node >= 20.19), with `require`: both give the very same module, so an error class
 * is one class whichever way it was loaded.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as {
  exports: Record<string, { types: string; default: string } | string>;
  engines: { node: string };
};

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();
}

describe('package exports', () => {
  const entries = Object.entries(pkg.exports).filter(([k]) => k !== './package.json');

  it.each(entries)('%s has its JavaScript and its types', (_name, target) => {
    if (typeof target === 'string') throw new Error('conditional exports expected');
    for (const f of [target.default, target.types]) {
      expect(existsSync(`${root}${f}`), f).toBe(true);
    }
  });

  it('declares the Node lines where require(esm) works without a flag', () => {
    expect(pkg.engines.node).toBe('>=20.19');
  });

  it('require("dlock") and import("dlock") expose the same API', () => {
    const cjs = node(['-e', 'console.log(Object.keys(require("dlock")).sort().join(","))']);
    const esm = node(['--input-type=module', '-e', 'const m = await import("dlock"); console.log(Object.keys(m).sort().join(","))']);
    expect(cjs).toBe(esm);
    for (const name of ['LockClient', 'Lease', 'connect', 'MemoryDriver', 'LockTimeoutError', 'isDlockError']) {
      expect(cjs.split(',')).toContain(name);
    }
  });

  /** Each subpath (the drivers, the OpenTelemetry bridge) and one function it must export. */
  const drivers: Array<[string, string]> = [
    ['dlock/redis', 'RedisDriver'],
    ['dlock/sqlite', 'SqliteDriver'],
    ['dlock/zookeeper', 'ZooKeeperDriver'],
    ['dlock/etcd', 'EtcdDriver'],
    ['dlock/postgres', 'PostgresSessionDriver'],
    ['dlock/mysql', 'MysqlSessionDriver'],
    ['dlock/redlock', 'RedlockDriver'],
    ['dlock/otel', 'instrument'],
  ];

  it('every subpath is in the exports map', () => {
    expect(drivers.map(([p]) => p.replace('dlock', '.')).sort()).toEqual(entries.map(([k]) => k).filter((k) => k !== '.').sort());
  });

  it.each(drivers)('%s loads in both module systems', (path, name) => {
    expect(node(['-e', `console.log(typeof require(${JSON.stringify(path)}).${name})`])).toBe('function');
    expect(node(['--input-type=module', '-e', `const m = await import(${JSON.stringify(path)}); console.log(typeof m.${name})`])).toBe('function');
  });

  it('require() and import() give the same module: one class per error, however it was loaded', () => {
    const out = node([
      '--input-type=module',
      '-e',
      `import { createRequire } from "node:module"; const require = createRequire(process.cwd() + "/x.js");
       const m = await import("dlock"); console.log(require("dlock").LockTimeoutError === m.LockTimeoutError);`,
    ]);
    expect(out).toBe('true');
  });

  it('errors thrown to a CommonJS caller are instances of the classes it required', () => {
    const out = node([
      '-e',
      `const d = require("dlock"); const c = new d.LockClient(new d.MemoryDriver());
       c.acquire("").catch((e) => { console.log(e instanceof TypeError, e instanceof d.InvalidArgumentError, e.code); return c.close(); });`,
    ]);
    expect(out).toBe('true true DLOCK_INVALID_ARGUMENT');
  });

  it('a CommonJS TypeScript project (module nodenext) type-checks against the ESM types', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dlock-cts-'));
    try {
      mkdirSync(join(dir, 'node_modules'));
      symlinkSync(root, join(dir, 'node_modules', 'dlock'), 'dir');
      writeFileSync(join(dir, 'package.json'), '{ "name": "app", "private": true }\n');
      const compilerOptions = {
        module: 'nodenext',
        moduleResolution: 'nodenext',
        strict: true,
        noEmit: true,
        target: 'es2022',
        lib: ['es2023', 'esnext.disposable'],
        types: ['node'],
        typeRoots: [join(root, 'node_modules', '@types')],
      };
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['main.cts'] }));
      writeFileSync(
        join(dir, 'main.cts'),
        `import { LockClient, MemoryDriver, LockTimeoutError } from 'dlock';
const client = new LockClient(new MemoryDriver());
void client.acquire('x').then((l) => l.release()).catch((e: unknown) => e instanceof LockTimeoutError).finally(() => client.close());
`,
      );
      const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
      const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
      // The control: TypeScript's older node16 module mode does not know require(esm) and says so.
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { ...compilerOptions, module: 'node16', moduleResolution: 'node16' }, files: ['main.cts'] }));
      const old = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
      expect(old.stdout).toContain('TS1479');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
