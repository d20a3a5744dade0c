/**
 * Listing held locks on Redis without blocking it: SCAN with MATCH over the lock keys, page by
 * page, node by node (a Redis Cluster's masters, Redlock's nodes). Shared by the Redis and Redlock
 * drivers, whose lock keys are both `<prefix>:{<key>}` (the Redis driver escapes a key that
 * starts with `}`).
 */
import { InvalidArgumentError } from '../../errors.js';
import type { KeyPage } from '../driver.js';
import type { ScanNode } from './adapter.js';

/** SCANs one page may run when they find nothing, before it answers an empty page with a cursor. */
const EMPTY_SCANS = 16;

/** `text` with glob's special characters escaped, for SCAN MATCH. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/**
 * The MATCH pattern of the lock keys of every key starting with `keyPrefix`. `escaped`: the Redis
 * driver's naming, where a key starting with backslashes and `}` gets one more leading backslash.
 */
export function lockPattern(prefix: string, keyPrefix: string, escaped: boolean): string {
  const inner = escaped && /^\\*\}/.test(keyPrefix) ? `\\${keyPrefix}` : keyPrefix;
  return `${globEscape(prefix)}:{${globEscape(inner)}*}`;
}

/** The user's key of the lock key `name` (`<prefix>:{<key>}`), or undefined when it is not one. */
export function lockKeyName(prefix: string, name: string, escaped: boolean): string | undefined {
  const head = `${prefix}:{`;
  if (!name.startsWith(head) || !name.endsWith('}') || name.length < head.length + 2) return undefined;
  const inner = name.slice(head.length, -1);
  return escaped && /^\\+\}/.test(inner) ? inner.slice(1) : inner;
}

/** Where a listing stands: the node (by address), its SCAN cursor and COUNT, and the last key given from that batch. */
type Position = [address: string, cursor: string, count: number, after: string | null];

function decode(cursor: string): Position {
  try {
    const p = JSON.parse(cursor) as unknown;
    if (Array.isArray(p) && p.length === 4 && typeof p[0] === 'string' && typeof p[1] === 'string' && typeof p[2] === 'number' && (p[3] === null || typeof p[3] === 'string')) {
      return p as Position;
    }
  } catch {
    // reported below
  }
  throw new InvalidArgumentError(`list() cursor ${JSON.stringify(cursor)} is not one this driver returned: pass back a page's cursor unchanged.`);
}

/**
 * One page of keys (at most `limit`) over `nodes` (sorted by address). `keyOf` maps a Redis key
 * to the user's key, or undefined to drop it. The cursor is `[address, SCAN cursor, COUNT,
 * after]`: when one SCAN batch holds more than `limit` keys, the page gives the first `limit` (in
 * key order) and the next call re-runs the same SCAN cursor with the same COUNT (SCAN is
 * stateless: it covers the same buckets) and gives the keys after `after`. A node that left the
 * cluster is skipped; a new node that sorts after the current one is scanned in turn.
 */
export async function scanPage(
  nodes: readonly ScanNode[],
  match: string,
  page: { readonly cursor?: string; readonly limit: number },
  keyOf: (name: string) => string | undefined,
): Promise<KeyPage> {
  let [address, cursor, count, after] = page.cursor === undefined ? [nodes[0]?.address ?? '', '0', page.limit, null] : decode(page.cursor);
  let i = nodes.findIndex((n) => n.address >= address);
  if (i >= 0 && nodes[i]!.address !== address) [cursor, after, count] = ['0', null, page.limit];
  for (let scans = 0; i >= 0 && i < nodes.length; scans++) {
    const node = nodes[i]!;
    const batch = await node.scan(cursor, match, count);
    const keys = [...new Set(batch.keys.map(keyOf).filter((k): k is string => k !== undefined && (after === null || k > after)))].sort();
    if (keys.length > page.limit) {
      const out = keys.slice(0, page.limit);
      return { keys: out, cursor: JSON.stringify([node.address, cursor, count, out[out.length - 1]!] satisfies Position) };
    }
    // Next: the same node's next cursor, or the next node from its start.
    let next: Position | undefined;
    if (batch.cursor !== '0') next = [node.address, batch.cursor, page.limit, null];
    else if (nodes[i + 1]) next = [nodes[i + 1]!.address, '0', page.limit, null];
    if (keys.length > 0 || next === undefined || scans + 1 >= EMPTY_SCANS) {
      return next === undefined ? { keys } : { keys, cursor: JSON.stringify(next) };
    }
    [address, cursor, count, after] = next;
    if (address !== node.address) i++;
  }
  return { keys: [] };
}
