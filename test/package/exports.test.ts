/**
 * The published shape: ESM and CommonJS entry points (with types) for the root and each driver
 * subpath, loadable by plain Node from the built dist (the test command builds first).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as {
  exports: Record<string, { import: { types: string; default: string }; require: { types: string; default: string } } | string>;
};

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();
}

describe('package exports', () => {
  const entries = Object.entries(pkg.exports).filter(([k]) => k !== './package.json');

  it.each(entries)('%s has ESM and CommonJS files with types', (_name, target) => {
    if (typeof target === 'string') throw new Error('conditional exports expected');
    for (const f of [target.import.default, target.import.types, target.require.default, target.require.types]) {
      expect(existsSync(`${root}${f}`), f).toBe(true);
    }
  });

  it('require("dlock") and import("dlock") expose the same API', () => {
    const cjs = node(['-e', 'console.log(Object.keys(require("dlock")).sort().join(","))']);
    const esm = node(['--input-type=module', '-e', 'const m = await import("dlock"); console.log(Object.keys(m).sort().join(","))']);
    expect(cjs).toBe(esm);
    for (const name of ['LockClient', 'Lease', 'connect', 'MemoryDriver', 'LockTimeoutError', 'isDlockError']) {
      expect(cjs.split(',')).toContain(name);
    }
  });

  /** Each driver subpath and one class it must export. */
  const drivers: Array<[string, string]> = [
    ['dlock/redis', 'RedisDriver'],
    ['dlock/sqlite', 'SqliteDriver'],
    ['dlock/zookeeper', 'ZooKeeperDriver'],
    ['dlock/etcd', 'EtcdDriver'],
    ['dlock/postgres', 'PostgresSessionDriver'],
    ['dlock/mysql', 'MysqlSessionDriver'],
    ['dlock/redlock', 'RedlockDriver'],
  ];

  it('every driver subpath is in the exports map', () => {
    expect(drivers.map(([p]) => p.replace('dlock', '.')).sort()).toEqual(entries.map(([k]) => k).filter((k) => k !== '.').sort());
  });

  it.each(drivers)('%s loads in both module systems', (path, name) => {
    expect(node(['-e', `console.log(typeof require(${JSON.stringify(path)}).${name})`])).toBe('function');
    expect(node(['--input-type=module', '-e', `const m = await import(${JSON.stringify(path)}); console.log(typeof m.${name})`])).toBe('function');
  });

  it('errors thrown from the CommonJS build are instances of its own classes', () => {
    const out = node([
      '-e',
      `const d = require("dlock"); const c = new d.LockClient(new d.MemoryDriver());
       c.acquire("").catch((e) => { console.log(e instanceof TypeError, e instanceof d.InvalidArgumentError, e.code); return c.close(); });`,
    ]);
    expect(out).toBe('true true DLOCK_INVALID_ARGUMENT');
  });
});
