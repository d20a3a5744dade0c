/**
 * A library user who has not installed an engine's client: every driver entry point still loads,
 * and `connect()` and each driver constructor throw MissingPeerError naming the package and the
 * command, in both module systems; so does `instrument()` of `dlock/otel` without
 * `@opentelemetry/api` (while `dlock` and `dlock/otel` themselves load). Run for real: a temporary
 * project whose node_modules holds dlock (this build) and none of the optional peers.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** [what is called, the package it must name]; run in the temporary project. */
const CASES: Array<[string, string]> = [
  ["connect('sqlite:/tmp/dlock-missing-peer.db')", 'better-sqlite3'],
  ["connect('redis://127.0.0.1:1')", 'ioredis'],
  ["connect('redis+cluster://127.0.0.1:1')", 'ioredis'],
  ["connect('redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3')", 'ioredis'],
  ["connect('zookeeper://127.0.0.1:1')", 'node-zookeeper-client'],
  ["connect('etcd://127.0.0.1:1')", 'etcd3'],
  ["connect('postgres://u@127.0.0.1:1/db')", 'pg'],
  ["connect('postgres://u@127.0.0.1:1/db?mode=table')", 'pg'],
  ["connect('mysql://u@127.0.0.1:1/db')", 'mysql2'],
  ["connect('mysql://u@127.0.0.1:1/db?mode=table')", 'mysql2'],
  ["new (load('dlock/sqlite').SqliteDriver)({ path: '/tmp/dlock-missing-peer.db' })", 'better-sqlite3'],
  ["new (load('dlock/redis').RedisDriver)({ url: 'redis://127.0.0.1:1' })", 'ioredis'],
  ["new (load('dlock/redlock').RedlockDriver)({ nodes: ['redis://127.0.0.1:1', 'redis://127.0.0.1:2', 'redis://127.0.0.1:3'] })", 'ioredis'],
  ["new (load('dlock/zookeeper').ZooKeeperDriver)({ url: 'zookeeper://127.0.0.1:1' })", 'node-zookeeper-client'],
  ["new (load('dlock/etcd').EtcdDriver)({ url: 'etcd://127.0.0.1:1' })", 'etcd3'],
  ["load('dlock/postgres').createPostgresDriver({ connection: 'postgres://u@127.0.0.1:1/db' })", 'pg'],
  ["new (load('dlock/mysql').MysqlSessionDriver)({ url: 'mysql://u@127.0.0.1:1/db' })", 'mysql2'],
  ["load('dlock').RedisDailyIds.open({ url: 'redis://127.0.0.1:1', name: 'orders' })", 'ioredis'],
  ["load('dlock/otel').instrument(new (load('dlock').LockClient)(new (load('dlock').MemoryDriver)()))", '@opentelemetry/api'],
];

/** A script that runs every case and prints one JSON line per case. */
function script(esm: boolean): string {
  const prelude = esm
    ? `const mods = {}; for (const p of ['dlock', 'dlock/sqlite', 'dlock/redis', 'dlock/redlock', 'dlock/zookeeper', 'dlock/etcd', 'dlock/postgres', 'dlock/mysql', 'dlock/otel']) mods[p] = await import(p);
       const load = (p) => mods[p]; const { connect } = mods.dlock;`
    : `const load = (p) => require(p); const { connect } = require('dlock');`;
  const body = `${prelude}
    const cases = ${JSON.stringify(CASES.map(([call]) => call))};
    const out = [];
    for (const c of cases) {
      try { await eval(c); out.push({ c, ok: true }); }
      catch (e) { out.push({ c, name: e.name, code: e.code, packageName: e.packageName, installCommand: e.installCommand, message: e.message, isDlock: load('dlock').isDlockError(e) }); }
    }
    console.log(JSON.stringify(out));`;
  return esm ? body : `(async () => { ${body} })().catch((e) => { console.error(e); process.exit(1); });`;
}

describe('a missing engine client', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'dlock-nopeer-'));
    const home = join(dir, 'node_modules', 'dlock');
    for (const p of ['dist', 'package.json']) cpSync(join(root, p), join(home, p), { recursive: true });
    writeFileSync(join(dir, 'package.json'), '{ "name": "app", "private": true }\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function run(esm: boolean): Array<Record<string, unknown>> {
    const args = esm ? ['--input-type=module', '-e', script(true)] : ['-e', script(false)];
    const out = execFileSync(process.execPath, args, { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    return JSON.parse(out) as Array<Record<string, unknown>>;
  }

  for (const esm of [true, false]) {
    it(`throws MissingPeerError naming the package and the command (${esm ? 'ESM' : 'CommonJS'})`, () => {
      const results = run(esm);
      expect(results).toHaveLength(CASES.length);
      results.forEach((r, i) => {
        const [call, pkg] = CASES[i]!;
        expect({ call, name: r.name, code: r.code, packageName: r.packageName, installCommand: r.installCommand, isDlock: r.isDlock }).toEqual({
          call,
          name: 'MissingPeerError',
          code: 'DLOCK_MISSING_PEER',
          packageName: pkg,
          installCommand: `npm install ${pkg}`,
          isDlock: true,
        });
        expect(r.message, call).toContain(`\`npm install ${pkg}\``);
      });
    });
  }
});
