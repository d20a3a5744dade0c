/**
 * Where the CPU went in a `node --cpu-prof` profile of a benchmark, in the terms of the report:
 * share of busy samples (idle excluded) by category, the top self-time frames, and dlock's own
 * functions (self and inclusive).
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/main.ts uncontended --only dlock --reps 1 --seconds 5
 *   npx tsx bench/profile-summary.ts /tmp/prof/<the largest>.cpuprofile
 *
 * Samples taken while modules load (tsx, ESM loader) are left out: only the steady state counts.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
}

const file = process.argv[2];
if (!file) {
  console.error('usage: tsx bench/profile-summary.ts <file.cpuprofile> [top=25]');
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

function where(f: CallFrame): string {
  const url = f.url
    .replace(/^file:\/\//, '')
    .replace(/^.*\/node_modules\//, '')
    .replace(/^.*\/(dist\/esm|src|bench)\//, '$1/');
  return `${url || '(native)'}:${f.functionName || '(anonymous)'}`;
}

function category(f: CallFrame): string {
  const u = f.url;
  if (f.functionName === '(idle)') return 'idle';
  if (f.functionName === '(garbage collector)') return 'garbage collector';
  if (/\/(dist\/esm|src)\//.test(u) && !u.includes('node_modules')) return 'dlock';
  if (u.includes('node_modules/ioredis') || u.includes('node_modules/@ioredis') || u.includes('redis-errors')) return 'ioredis';
  if (u.includes('node_modules/')) return 'other packages';
  if (u.includes('/bench/')) return 'bench harness';
  if (f.functionName === 'writeUtf8String' || f.functionName === 'writev' || f.functionName === 'writeBuffer') return 'socket writes (syscalls)';
  if (u.startsWith('node:')) return 'node internals (streams, timers, promises)';
  return 'native / VM';
}

/** Module loading: any sample under a loader frame. */
function loading(id: number): boolean {
  for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
    const f = nodes.get(x)?.callFrame;
    if (!f) break;
    if (f.url.includes('node_modules/tsx') || /modules\/(esm|cjs)\//.test(f.url) || f.functionName === 'compileForInternalLoader') return true;
  }
  return false;
}

const counts = new Map<number, number>();
for (const s of profile.samples) counts.set(s, (counts.get(s) ?? 0) + 1);

const byCategory = new Map<string, number>();
const self = new Map<string, number>();
const selfDlock = new Map<string, number>();
const inclusiveDlock = new Map<string, number>();
let busy = 0;
let idle = 0;
let skipped = 0;
for (const [id, c] of counts) {
  const node = nodes.get(id);
  if (!node) continue;
  const cat = category(node.callFrame);
  if (cat === 'idle') {
    idle += c;
    continue;
  }
  if (loading(id)) {
    skipped += c;
    continue;
  }
  busy += c;
  byCategory.set(cat, (byCategory.get(cat) ?? 0) + c);
  const w = where(node.callFrame);
  self.set(w, (self.get(w) ?? 0) + c);
  if (cat === 'dlock') selfDlock.set(w, (selfDlock.get(w) ?? 0) + c);
  const seen = new Set<string>();
  for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
    const f = nodes.get(x)?.callFrame;
    if (!f) break;
    if (category(f) !== 'dlock') continue;
    const w = where(f);
    if (seen.has(w)) continue;
    seen.add(w);
    inclusiveDlock.set(w, (inclusiveDlock.get(w) ?? 0) + c);
  }
}

const pct = (c: number): string => `${((100 * c) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
const sorted = (m: Map<string, number>): Array<[string, number]> => [...m].sort((a, b) => b[1] - a[1]);
console.log(`${file}\n${busy} busy samples (idle ${idle} and module loading ${skipped} left out); shares of busy samples:\n`);
console.log('by category (self time):');
for (const [k, c] of sorted(byCategory)) console.log(`  ${pct(c)}  ${k}`);
console.log(`\ntop ${top} frames by self time:`);
for (const [k, c] of sorted(self).slice(0, top)) console.log(`  ${pct(c)}  ${k}`);
console.log('\ndlock functions, self time:');
for (const [k, c] of sorted(selfDlock).slice(0, top)) console.log(`  ${pct(c)}  ${k}`);
console.log('\ndlock functions, inclusive time (includes the ioredis calls they make):');
for (const [k, c] of sorted(inclusiveDlock).slice(0, top)) console.log(`  ${pct(c)}  ${k}`);
