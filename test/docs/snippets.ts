/**
 * TypeScript blocks of the docs. A block is a complete program unless it is marked as a fragment,
 * either on the fence (```ts fragment) or by an HTML comment right before it:
 *
 *     <!-- fragment
 *     declare const locks: import('dlock').LockClient;
 *     -->
 *
 * The comment's first line (`fragment`, maybe with a note on why) is for the docs' maintainers; its
 * next lines are prepended to the block when it is type-checked: declarations of the reader's own
 * names (their client, their functions) that the block uses.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export interface Snippet {
  /** `README.md:56` (the fence's line). */
  readonly id: string;
  readonly file: string;
  readonly line: number;
  readonly code: string;
  readonly fragment: boolean;
  /** Declarations to prepend (fragments only). */
  readonly prelude: string;
}

const FENCE = /^```(ts|typescript)((?:\s+\S+)*)\s*$/;

/** Every ts/typescript block of one markdown text. */
export function extractSnippets(markdown: string, file: string): Snippet[] {
  const lines = markdown.split('\n');
  const out: Snippet[] = [];
  let inOther = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (inOther) {
      if (/^```\s*$/.test(line)) inOther = false;
      continue;
    }
    const m = FENCE.exec(line);
    if (!m) {
      if (/^```/.test(line)) inOther = true;
      continue;
    }
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^```\s*$/.test(lines[j] ?? ''); j++) body.push(lines[j] ?? '');
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: unterminated code block`);
    let fragment = (m[2] ?? '').split(/\s+/).includes('fragment');
    let prelude = '';
    const comment = precedingComment(lines, i);
    if (comment !== undefined && /^fragment\b/.test(comment)) {
      fragment = true;
      prelude = comment.split('\n').slice(1).join('\n').trim(); // the first line is a note for readers
    }
    out.push({ id: `${file}:${i + 1}`, file, line: i + 1, code: body.join('\n'), fragment, prelude });
    i = j;
  }
  return out;
}

/** Text of an HTML comment that ends on the line just before `fence` (trimmed), if any. */
function precedingComment(lines: readonly string[], fence: number): string | undefined {
  const end = fence - 1;
  if (end < 0 || !(lines[end] ?? '').trimEnd().endsWith('-->')) return undefined;
  for (let k = end; k >= 0; k--) {
    const l = lines[k] ?? '';
    const at = l.indexOf('<!--');
    if (at >= 0) {
      const text = [l.slice(at + 4), ...lines.slice(k + 1, end + 1)].join('\n');
      return text.slice(0, text.lastIndexOf('-->')).trim();
    }
    if (k < end && l.includes('-->')) return undefined;
  }
  return undefined;
}

/** README.md and every docs/**.md, relative to `root`. */
export function docFiles(root: string): string[] {
  const files = ['README.md'];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (relative(root, p) !== join('docs', 'api')) walk(p);
      } else if (e.name.endsWith('.md')) files.push(relative(root, p));
    }
  };
  walk(join(root, 'docs'));
  return files.sort();
}

/** Every snippet of the docs under `root`. */
export function allSnippets(root: string): Snippet[] {
  return docFiles(root).flatMap((f) => extractSnippets(readFileSync(join(root, f), 'utf8'), f));
}

/** The engines the test harness started, by what a snippet's URL names. */
export interface EngineUrls {
  redis?: string;
  etcd?: string;
  zookeeper?: string;
  postgres?: string;
  mysql?: string;
  redlock?: string;
  /** Directory for `sqlite:` files. */
  sqliteDir?: string;
}

const URL_LITERAL = /(['"`])((?:redis|rediss|redlock|etcd|zookeeper|postgres|postgresql|mysql|mariadb|redis\+cluster|redis\+sentinel):\/\/[^'"`]*|sqlite:[^'"`]+)\1/g;

/** The engine a snippet's URL names: `redis`, `etcd`, ... (the scheme family). */
export function engineOf(url: string): keyof EngineUrls | 'unsupported' {
  const scheme = url.slice(0, url.indexOf(':'));
  switch (scheme) {
    case 'redis':
    case 'rediss':
      return 'redis';
    case 'postgres':
    case 'postgresql':
      return 'postgres';
    case 'mysql':
    case 'mariadb':
      return 'mysql';
    case 'sqlite':
      return 'sqliteDir';
    case 'etcd':
    case 'zookeeper':
    case 'redlock':
      return scheme;
    default:
      return 'unsupported';
  }
}

/** The engines the URLs in `code` name. */
export function enginesIn(code: string): Set<keyof EngineUrls | 'unsupported'> {
  return new Set([...code.matchAll(URL_LITERAL)].map((m) => engineOf(m[2] ?? '')));
}

/**
 * Point every engine URL literal of `code` at the harness: the hosts (and, for SQL engines, the
 * credentials and database) become the harness's; the query string stays (it is what the snippet
 * shows), and so does a ZooKeeper root path. Throws for an engine the harness did not start.
 */
export function substituteUrls(code: string, urls: EngineUrls): string {
  return code.replace(URL_LITERAL, (_all, quote: string, url: string) => {
    const engine = engineOf(url);
    if (engine === 'unsupported') throw new Error(`no test engine for ${url}: mark the block as a fragment`);
    const target = urls[engine];
    if (target === undefined) throw new Error(`the ${engine} engine was not started for ${url}`);
    if (engine === 'sqliteDir') {
      const file = url.slice('sqlite:'.length).split('/').pop() ?? 'locks.db';
      return `${quote}sqlite:${join(target, file)}${quote}`;
    }
    const q = url.indexOf('?');
    const query = q >= 0 ? url.slice(q) : '';
    const noQuery = q >= 0 ? url.slice(0, q) : url;
    let path = '';
    if (engine === 'zookeeper') {
      const afterHosts = noQuery.indexOf('/', noQuery.indexOf('://') + 3);
      path = afterHosts >= 0 ? noQuery.slice(afterHosts) : '';
    }
    return `${quote}${target}${path}${query}${quote}`;
  });
}
