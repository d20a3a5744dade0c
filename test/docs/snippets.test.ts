/**
 * Docs that run: every TypeScript block of README.md and docs/**.md is type-checked under
 * `--strict` against the built package (imported as `dlock`, as a user would), and every block not
 * marked as a fragment runs to completion against real engines started here, within a time limit:
 * a snippet that leaves a connection open never exits and fails.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startEtcd, type EtcdServer } from '../support/etcd.js';
import { startMysql, type MysqlServer } from '../support/mysql.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { startRedlock, type RedlockNodes } from '../support/redlock.js';
import { startZooKeeper, type ZooKeeperCluster } from '../support/zookeeper.js';
import { createTempProject, repoRoot, runNode, typeCheck, type TempProject } from './project.js';
import { allSnippets, enginesIn, extractSnippets, substituteUrls, type EngineUrls, type Snippet } from './snippets.js';

/** How long one snippet may run (a loaded 2-core machine; the quickstarts take well under 2 s). */
const RUN_LIMIT_MS = 30_000;

const snippets = allSnippets(repoRoot);
const complete = snippets.filter((s) => !s.fragment);
const fileOf = (s: Snippet): string => s.id.replace(/[^A-Za-z0-9]+/g, '_').toLowerCase();

let project: TempProject | undefined;
let tscOutput = '';
const started: Array<{ stop(): Promise<void> }> = [];
const urls: EngineUrls = {};
/** Complete snippets naming an engine the harness does not start, with the reason. */
const unrunnable = new Map<string, string>();

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/esm/index.js'))) throw new Error('dist/ is missing: run `npm run build` first (npm test does).');
  project = createTempProject('dlock-snippets');
  urls.redis = inject('redisUrl');
  urls.sqliteDir = project.dir;
  const needed = new Set(complete.flatMap((s) => [...enginesIn(s.code)]));
  const starts: Array<Promise<void>> = [];
  if (needed.has('etcd')) starts.push(startEtcd().then((s: EtcdServer) => void (started.push({ stop: () => s.dispose() }), (urls.etcd = s.url))));
  if (needed.has('zookeeper')) starts.push(startZooKeeper().then((z: ZooKeeperCluster) => void (started.push(z), (urls.zookeeper = z.url))));
  if (needed.has('postgres')) starts.push(startPostgres().then((p: PostgresServer) => void (started.push(p), (urls.postgres = p.url))));
  if (needed.has('mysql')) starts.push(startMysql().then((m: MysqlServer) => void (started.push(m), (urls.mysql = m.url))));
  if (needed.has('redlock')) starts.push(startRedlock().then((r: RedlockNodes) => void (started.push(r), (urls.redlock = r.url))));
  const results = await Promise.allSettled(starts);
  for (const r of results) if (r.status === 'rejected') throw r.reason;

  for (const s of snippets) {
    let body = `${s.prelude}\n${s.code}`;
    if (!s.fragment) {
      try {
        body = substituteUrls(s.code, urls);
      } catch (e) {
        unrunnable.set(s.id, (e as Error).message);
      }
    }
    writeFileSync(join(project.dir, 'src', `${fileOf(s)}.ts`), `${body}\nexport {};\n`);
  }
  tscOutput = await typeCheck(project.dir);
}, 240_000);

afterAll(async () => {
  await Promise.allSettled(started.map((s) => s.stop()));
  project?.remove();
});

describe('the docs extractor', () => {
  it('finds blocks, fragment marks on the fence or in a comment, and the comment declarations', () => {
    const md = [
      '```ts',
      'const a = 1;',
      '```',
      '<!-- fragment',
      'declare const locks: unknown;',
      '-->',
      '```ts',
      'locks;',
      '```',
      '```sh',
      '```ts inside a shell block is not a block',
      '```',
      '```typescript fragment',
      'x;',
      '```',
      '<!-- fragment: needs a cluster -->',
      '```ts',
      'y;',
      '```',
    ].join('\n');
    const got = extractSnippets(md, 'x.md');
    expect(got.map((s) => [s.line, s.fragment, s.prelude, s.code])).toEqual([
      [1, false, '', 'const a = 1;'],
      [7, true, 'declare const locks: unknown;', 'locks;'],
      [13, true, '', 'x;'],
      [17, true, '', 'y;'],
    ]);
  });

  it('points URLs at the harness, keeping the query and the ZooKeeper root', () => {
    const u: EngineUrls = { redis: 'redis://127.0.0.1:1', zookeeper: 'zookeeper://127.0.0.1:2', postgres: 'postgres://postgres@127.0.0.1:3/postgres', sqliteDir: '/tmp/d' };
    expect(substituteUrls(`connect('redis://127.0.0.1:6379')`, u)).toBe(`connect('redis://127.0.0.1:1')`);
    expect(substituteUrls(`'zookeeper://zk1:2181,zk2:2181/myapp?sessionTimeoutMs=10000'`, u)).toBe(`'zookeeper://127.0.0.1:2/myapp?sessionTimeoutMs=10000'`);
    expect(substituteUrls(`"postgres://app:secret@pgbouncer:6432/app?mode=table"`, u)).toBe(`"postgres://postgres@127.0.0.1:3/postgres?mode=table"`);
    expect(substituteUrls(`'sqlite:/var/tmp/myapp-locks.db'`, u)).toBe(`'sqlite:/tmp/d/myapp-locks.db'`);
    expect(() => substituteUrls(`'redis+cluster://a:1'`, u)).toThrow(/fragment/);
  });

  it('a program that does not exit by itself fails the time limit', async () => {
    const p = createTempProject('dlock-hang');
    try {
      const file = join(p.dir, 'hang.js');
      writeFileSync(file, 'setInterval(() => {}, 1000);\n');
      const r = await runNode(file, { cwd: p.dir, timeoutMs: 1000 });
      expect(r.timedOut).toBe(true);
    } finally {
      p.remove();
    }
  });

  it('the docs have blocks, and complete programs among them', () => {
    expect(snippets.length).toBeGreaterThan(20);
    expect(complete.length).toBeGreaterThan(5);
  });
});

describe.each(snippets.map((s) => [s.id, s] as const))('%s', (_id, s) => {
  it(`type-checks under --strict${s.fragment ? ' (fragment)' : ''}`, () => {
    const mine = tscOutput.split('\n').filter((l) => l.startsWith(`src/${fileOf(s)}.ts`));
    expect(mine, `tsc errors (line numbers count the fragment's declarations):\n${mine.join('\n')}`).toEqual([]);
  });

  // Fragments get no run test (not a skipped one): they are checked by type only.
  if (!s.fragment) {
    it('runs against a real engine and exits by itself', async () => {
      expect(unrunnable.get(s.id)).toBeUndefined();
      const r = await runNode(join(project!.dir, 'out', `${fileOf(s)}.js`), {
        cwd: project!.dir,
        timeoutMs: RUN_LIMIT_MS,
        env: { ID_KEY: 'docs-test-key-0123456789abcdef' },
      });
      expect(r.timedOut, `did not exit within ${RUN_LIMIT_MS} ms (a client left open?)\n${r.stdout}${r.stderr}`).toBe(false);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stderr, 'nothing on stderr (no warning, no stray log)').toBe('');
    }, RUN_LIMIT_MS + 10_000);
  }
});
