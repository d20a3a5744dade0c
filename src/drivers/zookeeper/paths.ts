/**
 * Znode names of the ZooKeeper driver.
 *
 * ```
 * <root>/locks/<key>/lock-<owner>-0000000042   EPHEMERAL_SEQUENTIAL: one per contender (exclusive)
 * <root>/locks/<key>/read-<owner>-0000000043   a shared (read) contender
 * <root>/locks/<key>/perm3of10-<owner>-0000000044   3 permits of a 10-permit semaphore
 * <root>/marks/<key>                           PERSISTENT: worker-id high-water mark (decimal)
 * ```
 * Keys and owner ids are percent-encoded where a znode name could not hold them (`/`, control
 * and non-ASCII characters, `%`), so names stay readable in zkCli.
 */
import type { Admission } from '../driver.js';

/** Percent-encode everything but letters, digits and `_ . : @ -` (a name is never `.` or `..`). */
export function encodeName(s: string): string {
  const out = s.replace(/[^A-Za-z0-9_.:@-]/gu, (c) => encodeURIComponent(c).replace(/[!'()*~]/g, (x) => `%${x.charCodeAt(0).toString(16).toUpperCase()}`));
  return out === '.' || out === '..' ? out.replace(/\./g, '%2E') : out;
}

/** The prefix of a contender's znode; ZooKeeper appends a 10-digit sequence number. */
export function childPrefix(owner: string, admission?: Admission): string {
  const kind = admission?.mode === 'shared' ? 'read' : admission?.mode === 'permits' ? `perm${admission.permits}of${admission.limit}` : 'lock';
  return `${kind}-${encodeName(owner)}-`;
}

/** One contender's znode, parsed. */
export interface Contender {
  readonly name: string;
  readonly owner: string;
  /** Sequence number given by the parent (creation order under this parent). */
  readonly seq: number;
  /** Its admission (from the name's kind); undefined: exclusive. */
  readonly admission: Admission | undefined;
}

const CHILD = /^(lock|read|perm(\d+)of(\d+))-(.*)-(\d{10})$/;

/** Parse a child name; null for names this driver did not create. */
export function parseChild(name: string): Contender | null {
  const m = CHILD.exec(name);
  if (!m) return null;
  let admission: Admission | undefined;
  if (m[1] === 'read') admission = { mode: 'shared' };
  else if (m[2] !== undefined) admission = { mode: 'permits', permits: Number(m[2]), limit: Number(m[3]) };
  try {
    return { name, owner: decodeURIComponent(m[4] ?? ''), seq: Number(m[5]), admission };
  } catch {
    return null;
  }
}

/** The contenders among `children`, in queue order (lowest sequence first: the holder). */
export function queueOf(children: readonly string[]): Contender[] {
  const out: Contender[] = [];
  for (const c of children) {
    const p = parseChild(c);
    if (p) out.push(p);
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** A validated absolute znode path without a trailing slash (`/` alone is refused). */
export function normalizeRoot(root: string): string | undefined {
  const r = root.replace(/\/+$/, '');
  if (!r.startsWith('/') || r.length < 2) return undefined;
  const parts = r.slice(1).split('/');
  const control = (p: string): boolean => [...p].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
  if (parts.some((p) => p === '' || p === '.' || p === '..' || control(p))) return undefined;
  return r;
}
