/**
 * ids: one thread, N ids per library in a tight loop, as fast as each library allows, in the same
 * run, library order rotated between repetitions. Counted after the timed loop: duplicates per
 * million ids (a Set of bigints or strings) and order violations (an id not above the one before).
 *
 * Rows: dlock's Snowflake `next()` (the baseline of the ratios), the npm peers, and extra dlock
 * rows (Snowflake `nextBatch`, SegmentIds over memory and over the bench's redis-server).
 * The target (performance.md): dlock `next()` >= 0.9 x the layout's cap, 4,096 ids per ms per
 * worker for 41/10/12 = 4.096 M ids/s, with 0 duplicates.
 */
import { readFileSync } from 'node:fs';
import type { SegmentIds } from '../src/ids/segment.js';
import type { DlockSource } from './libs.js';
import { fmt, fmtSpread, rotate, spread, table, type Spread } from './support.js';

/** The layout's cap: 2^12 sequence values per 1 ms unit. */
export const CAP_IDS_PER_SECOND = 4096 * 1000;
const BASELINE = 'dlock';

export interface IdsOptions {
  count: number;
  reps: number;
  json: boolean;
  redisUrl: string;
  dlock: DlockSource;
  /** Only these ids (the baseline is always kept: ratios need it). */
  only?: readonly string[];
  params: Record<string, unknown>;
  log(line: string): void;
}

/**
 * One prepared generator. `fill` is the timed loop: it writes n ids into the runner's own store,
 * allocated beforehand by `prepare`. 64-bit ids go into a BigUint64Array (Buffers into one big
 * Buffer): keeping a million heap bigints alive until the check costs ~70 ns per id of GC
 * (scavenges copying and promoting them), which would measure the harness, not the library.
 * Strings can only be kept as they are.
 */
interface Runner {
  prepare(n: number): void;
  fill(n: number): number | Promise<number>;
  /** The i-th id of the last fill, as a Set key and for order (called after timing). */
  key(i: number): bigint | string;
  /** Engine round trips so far (segment rows). */
  engineCalls?(): number;
  /** How far the last id's time is ahead of the wall clock, in ms (dlock Snowflake rows). */
  aheadMs?(): number;
  close(): Promise<void>;
}

interface IdLib {
  readonly id: string;
  readonly name: string;
  /** What a row's ids are: bits and kind. */
  readonly kind: string;
  create(o: IdsOptions): Promise<Runner>;
}

interface IdsResult {
  idsPerSecond: number;
  duplicatesPerMillion: number;
  orderViolations: number;
  /** Exceptions the library threw inside the loop (each retried). */
  throws: number;
  engineCallsPerMillion: number;
  aheadMs: number;
}

type DlockIds = typeof import('../src/ids/index.js');
type DlockSegment = typeof import('../src/ids/segment.js');
type DlockCore = typeof import('../src/index.js');
type DlockRedis = typeof import('../src/drivers/redis/index.js');

/** dlock from the built package (default) or from src via tsx (--src), like libs.ts. */
function dlockModule<T>(source: DlockSource, path: string): Promise<T> {
  const rel = source === 'dist' ? `../dist/esm/${path}.js` : `../src/${path}.js`;
  return import(new URL(rel, import.meta.url).href) as Promise<T>;
}

function version(pkg: string): string {
  try {
    const json = JSON.parse(readFileSync(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')) as { version?: string };
    return json.version ?? '?';
  } catch {
    return 'not installed';
  }
}

const EPOCH_2026 = Date.UTC(2026, 0, 1);
const done = (): Promise<void> => Promise.resolve();

/** A BigUint64Array store shared by the 64-bit rows (each row still has its own loop). */
class U64 {
  ids = new BigUint64Array(0);
  prepare = (n: number): void => {
    if (this.ids.length < n) this.ids = new BigUint64Array(n);
  };
  key = (i: number): bigint => this.ids[i] ?? -1n;
}

class Strings {
  ids: string[] = [];
  prepare = (n: number): void => {
    this.ids = new Array<string>(n).fill('');
  };
  key = (i: number): string => this.ids[i] ?? '';
}

/** dlock's Snowflake rows: ids in a U64 store, and how far the last one is ahead of the clock. */
async function dlockSnowflake(o: IdsOptions, workerId: number, fill: (g: SnowflakeT, ids: BigUint64Array, n: number) => void): Promise<Runner> {
  const { Snowflake } = await dlockModule<DlockIds>(o.dlock, 'ids/index');
  const g = new Snowflake({ workerId });
  const store = new U64();
  let last = 0n;
  return {
    prepare: store.prepare,
    fill(n) {
      fill(g, store.ids, n);
      last = store.ids[n - 1] ?? 0n;
      return 0;
    },
    key: store.key,
    aheadMs: () => g.decode(last).timestampMs - Date.now(),
    close: done,
  };
}

type SnowflakeT = InstanceType<DlockIds['Snowflake']>;

const LIBS: readonly IdLib[] = [
  {
    id: BASELINE,
    name: 'dlock Snowflake next()',
    kind: '63-bit 41/10/12',
    create: (o) =>
      dlockSnowflake(o, 1, (g, ids, n) => {
        for (let i = 0; i < n; i++) ids[i] = g.next();
      }),
  },
  {
    id: 'sapphire',
    name: `@sapphire/snowflake ${version('@sapphire/snowflake')}`,
    kind: '64-bit 42/5/5/12',
    async create() {
      const { Snowflake } = await import('@sapphire/snowflake');
      const g = new Snowflake(EPOCH_2026);
      const store = new U64();
      return {
        prepare: store.prepare,
        fill(n) {
          const ids = store.ids;
          for (let i = 0; i < n; i++) ids[i] = g.generate();
          return 0;
        },
        key: store.key,
        close: done,
      };
    },
  },
  {
    id: 'nodejs-snowflake',
    name: `nodejs-snowflake ${version('nodejs-snowflake')}`,
    kind: '64-bit 42/10/12 (wasm)',
    async create() {
      const { Snowflake } = await import('nodejs-snowflake');
      const g = new Snowflake({ custom_epoch: EPOCH_2026, instance_id: 1 });
      const store = new U64();
      return {
        prepare: store.prepare,
        fill(n) {
          const ids = store.ids;
          for (let i = 0; i < n; i++) ids[i] = g.getUniqueID() as bigint;
          return 0;
        },
        key: store.key,
        close: () => {
          g.free();
          return done();
        },
      };
    },
  },
  {
    id: 'flake-idgen',
    name: `flake-idgen ${version('flake-idgen')}`,
    kind: '64-bit 42/10/12 Buffer',
    async create() {
      const { default: FlakeId } = await import('flake-idgen');
      const g = new FlakeId({ id: 1, epoch: EPOCH_2026 });
      let bytes = Buffer.alloc(0);
      return {
        prepare(n) {
          if (bytes.length < n * 8) bytes = Buffer.alloc(n * 8);
        },
        fill(n) {
          // Its sync API throws once 4,096 ids were made in one ms: retry until the next ms.
          let throws = 0;
          for (let i = 0; i < n; i++) {
            for (;;) {
              try {
                bytes.set(g.next(), i * 8);
                break;
              } catch {
                throws++;
              }
            }
          }
          return throws;
        },
        key: (i) => bytes.readBigUInt64BE(i * 8),
        close: done,
      };
    },
  },
  {
    id: 'uuid-v7',
    name: `uuid ${version('uuid')} v7()`,
    kind: '128-bit string',
    async create() {
      const { v7 } = await import('uuid');
      const store = new Strings();
      return {
        prepare: store.prepare,
        fill(n) {
          const ids = store.ids;
          for (let i = 0; i < n; i++) ids[i] = v7();
          return 0;
        },
        key: store.key,
        close: done,
      };
    },
  },
  {
    id: 'ulid',
    name: `ulid ${version('ulid')} monotonicFactory()`,
    kind: '128-bit string',
    async create() {
      const { monotonicFactory } = await import('ulid');
      const g = monotonicFactory();
      const store = new Strings();
      return {
        prepare: store.prepare,
        fill(n) {
          const ids = store.ids;
          for (let i = 0; i < n; i++) ids[i] = g();
          return 0;
        },
        key: store.key,
        close: done,
      };
    },
  },
  {
    id: 'dlock-batch',
    name: 'dlock Snowflake nextBatch(1000)',
    kind: '63-bit 41/10/12',
    create: (o) =>
      dlockSnowflake(o, 2, (g, ids, n) => {
        for (let i = 0; i < n; ) {
          const batch = g.nextBatch(Math.min(1000, n - i));
          for (let k = 0; k < batch.length; k++) ids[i++] = batch[k] as bigint;
        }
      }),
  },
  {
    id: 'dlock-segment-memory',
    name: 'dlock SegmentIds (memory)',
    kind: '63-bit counter ranges',
    async create(o) {
      const [{ SegmentIds }, { MemoryDriver }] = await Promise.all([
        dlockModule<DlockSegment>(o.dlock, 'ids/segment'),
        dlockModule<DlockCore>(o.dlock, 'index'),
      ]);
      const driver = new MemoryDriver();
      return segmentRunner(await SegmentIds.open({ driver, name: 'bench' }), driver);
    },
  },
  {
    id: 'dlock-segment-redis',
    name: 'dlock SegmentIds (redis)',
    kind: '63-bit counter ranges',
    async create(o) {
      const [{ SegmentIds }, { RedisDriver }] = await Promise.all([
        dlockModule<DlockSegment>(o.dlock, 'ids/segment'),
        dlockModule<DlockRedis>(o.dlock, 'drivers/redis/index'),
      ]);
      const driver = new RedisDriver({ url: o.redisUrl });
      // A fresh counter name per instance: ranges start at 1 each time.
      return segmentRunner(await SegmentIds.open({ driver, name: `bench:${process.hrtime.bigint()}` }), driver);
    },
  },
];

function segmentRunner(ids: SegmentIds, driver: { close(): Promise<void> }): Runner {
  const store = new U64();
  return {
    prepare: store.prepare,
    async fill(n) {
      const out = store.ids;
      for (let i = 0; i < n; i++) {
        const id = ids.tryNext();
        out[i] = id !== undefined ? id : await ids.next();
      }
      return 0;
    },
    key: store.key,
    engineCalls: () => ids.stats().fetches,
    close: async () => {
      await ids.close();
      await driver.close();
    },
  };
}

/** One timed run of one library: warm-up, N ids, then the checks. */
async function once(lib: IdLib, o: IdsOptions): Promise<IdsResult> {
  const runner = await lib.create(o);
  try {
    // Untimed warm-up, so that every library's loop is optimised before the clock starts.
    const warm = 200_000;
    runner.prepare(Math.max(warm, o.count));
    await runner.fill(warm);
    const callsBefore = runner.engineCalls?.() ?? 0;
    const t0 = process.hrtime.bigint();
    const throws = await runner.fill(o.count);
    const t1 = process.hrtime.bigint();
    const aheadMs = runner.aheadMs?.() ?? Number.NaN;
    const calls = (runner.engineCalls?.() ?? 0) - callsBefore;
    const seen = new Set<bigint | string>();
    let duplicates = 0;
    let orderViolations = 0;
    let prev: bigint | string | undefined;
    for (let i = 0; i < o.count; i++) {
      const k = runner.key(i);
      if (seen.has(k)) duplicates++;
      else seen.add(k);
      if (prev !== undefined && k <= prev) orderViolations++;
      prev = k;
    }
    return {
      idsPerSecond: o.count / (Number(t1 - t0) / 1e9),
      duplicatesPerMillion: (duplicates * 1e6) / o.count,
      orderViolations,
      throws,
      engineCallsPerMillion: (calls * 1e6) / o.count,
      aheadMs,
    };
  } finally {
    await runner.close();
  }
}

interface Row {
  scenario: 'ids';
  library: string;
  id: string;
  kind: string;
  baseline: boolean;
  figures: Record<string, Spread>;
}

/** Run the scenario and print its table (or JSON rows). */
export async function runIds(o: IdsOptions): Promise<void> {
  const wanted = (l: IdLib): boolean => !o.only || l.id === BASELINE || o.only.includes(l.id);
  const libs: IdLib[] = [];
  const missing: string[] = [];
  for (const l of LIBS.filter(wanted)) {
    // A peer that cannot be loaded here is reported, not fatal.
    try {
      await (await l.create({ ...o, count: 1 })).close();
      libs.push(l);
    } catch (e) {
      missing.push(`${l.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const results = new Map<string, IdsResult[]>(libs.map((l) => [l.id, []]));
  for (let rep = 0; rep < o.reps; rep++) {
    for (const lib of rotate(libs, rep)) {
      const r = await once(lib, o);
      results.get(lib.id)?.push(r);
      o.log(
        `  [ids ${rep + 1}/${o.reps}] ${lib.name.padEnd(34)} ${fmt(r.idsPerSecond / 1e6)} M ids/s  dup/M ${fmt(r.duplicatesPerMillion)}` +
          (r.throws ? `  throws ${r.throws}` : ''),
      );
    }
  }
  const base = results.get(BASELINE) ?? [];
  const rows: Row[] = libs.map((l) => {
    const rs = results.get(l.id) ?? [];
    return {
      scenario: 'ids',
      library: l.name,
      id: l.id,
      kind: l.kind,
      baseline: l.id === BASELINE,
      figures: {
        idsPerSecond: spread(rs.map((r) => r.idsPerSecond)),
        nsPerId: spread(rs.map((r) => 1e9 / r.idsPerSecond)),
        vsDlock: spread(rs.map((r, i) => (base[i] ? r.idsPerSecond / base[i].idsPerSecond : Number.NaN))),
        vsCap: spread(rs.map((r) => r.idsPerSecond / CAP_IDS_PER_SECOND)),
        duplicatesPerMillion: spread(rs.map((r) => r.duplicatesPerMillion)),
        orderViolations: spread(rs.map((r) => r.orderViolations)),
        throws: spread(rs.map((r) => r.throws)),
        engineCallsPerMillion: spread(rs.map((r) => r.engineCallsPerMillion)),
        aheadOfClockMs: spread(rs.map((r) => r.aheadMs)),
      },
    };
  });
  if (o.json) {
    for (const r of rows) console.log(JSON.stringify({ ...r, params: o.params }));
    for (const m of missing) console.log(JSON.stringify({ scenario: 'ids', missing: m }));
    return;
  }
  const M = (s: Spread): Spread => ({ median: s.median / 1e6, min: s.min / 1e6, max: s.max / 1e6, reps: s.reps.map((v) => v / 1e6) });
  console.log(`\n## ids: one thread, ${o.count.toLocaleString('en-US')} ids per library per rep, tight loop`);
  console.log(
    table(
      ['library', 'ids', 'M ids/s', 'ns/id', '× dlock', '× cap', 'dup per M', 'order violations', 'throws', 'engine calls per M', 'last id ahead of clock ms'],
      rows.map((r) => {
        const f = r.figures;
        const cell = (k: string, sfx = ''): string => (f[k] ? fmtSpread(f[k], sfx) : '-');
        return [
          r.library + (r.baseline ? ' (baseline)' : ''),
          r.kind,
          f.idsPerSecond ? fmtSpread(M(f.idsPerSecond)) : '-',
          cell('nsPerId'),
          cell('vsDlock', '×'),
          cell('vsCap', '×'),
          cell('duplicatesPerMillion'),
          cell('orderViolations'),
          cell('throws'),
          r.id.startsWith('dlock-segment') ? cell('engineCallsPerMillion') : '-',
          cell('aheadOfClockMs'),
        ];
      }),
    ),
  );
  const notes = [
    `cap: the 41/10/12 layout's ${fmt(CAP_IDS_PER_SECOND / 1e6, 4)} M ids/s per worker (4,096 per ms). 64-bit ids are stored in a BigUint64Array during the loop, strings in an Array; duplicates and order are checked after it.`,
    "dlock's Snowflake borrows up to maxBorrowMs (1 s) ahead of the clock when asked for more than 4,096 ids in a ms (the last column): a burst shorter than that passes the cap; a sustained rate is held to it.",
    'flake-idgen throws above 4,096 ids in one ms: the loop retries (counted as throws). uuid v7 and ulid are 128-bit strings, not 64-bit snowflakes.',
    'SegmentIds: default options (step 1000, adaptive up to 1,000,000, prefetch at 20% left); engine calls = allocateRange round trips.',
  ];
  for (const m of missing) notes.push(`NOT RUN (could not load): ${m}`);
  const d = rows.find((r) => r.id === BASELINE);
  if (d?.figures.idsPerSecond && d.figures.duplicatesPerMillion) {
    const ratio = d.figures.idsPerSecond.median / CAP_IDS_PER_SECOND;
    const ok = ratio >= 0.9 && d.figures.duplicatesPerMillion.max === 0 && (d.figures.orderViolations?.max ?? 0) === 0;
    notes.push(
      `target: dlock next() >= 0.9 × cap with 0 duplicates: ${fmt(ratio)} × cap, ${fmt(d.figures.duplicatesPerMillion.max)} duplicates per M (worst rep), ${ok ? 'MET' : 'MISSED'}`,
    );
  }
  for (const n of notes) console.log(n);
}

/** Library ids for `--only`. */
export const ID_LIBS: readonly string[] = LIBS.map((l) => l.id);
