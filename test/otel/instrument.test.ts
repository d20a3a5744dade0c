/**
 * dlock/otel on the OpenTelemetry SDK's in-memory exporters: the values of every metric (not only
 * their presence) after a known sequence of acquisitions, on the memory driver and on the embedded
 * SQLite engine; the acquire span and its parent; key policies; detach; the global no-op API.
 */
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpanStatusCode } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/connect.js';
import { LockClient } from '../../src/core/client.js';
import { MemoryDriver } from '../../src/drivers/memory/index.js';
import { InvalidArgumentError, LockAbortedError, LockTimeoutError, OutOfRangeError, UnavailableError } from '../../src/errors.js';
import { ACQUIRE_SPAN, ATTR, instrument, METRICS, OTHER_KEY } from '../../src/otel/index.js';
import { removeDir, tempDir } from '../support/processes.js';
import { startSqliteBlocker } from '../support/sqlite.js';
import { telemetry, useAsyncContext, type Telemetry } from './support.js';

useAsyncContext();

const open: Array<{ close(): Promise<void> }> = [];
let t: Telemetry;
afterEach(async () => {
  for (const c of open.splice(0)) await c.close();
  await t?.shutdown();
});

function memoryClient(): LockClient {
  const c = new LockClient(new MemoryDriver());
  open.push(c);
  return c;
}

/** A memory client instrumented on fresh providers. */
function setup(options: Parameters<typeof instrument>[1] = {}): { client: LockClient; off: () => void } {
  t = telemetry();
  const client = memoryClient();
  const off = instrument(client, { meterProvider: t.meterProvider, tracerProvider: t.tracerProvider, ...options });
  return { client, off };
}

describe('dlock/otel metrics (memory driver)', () => {
  it('counts acquisitions by outcome, with wait and hold histograms and the held and waiters gauges', async () => {
    const { client } = setup({ keys: 'full' });
    const base = { [ATTR.engine]: 'memory', [ATTR.mode]: 'exclusive' };

    // Three uncontended acquisitions, two of them held at once.
    const a = await client.acquire('cart:1');
    const b = await client.acquire('cart:2');
    let m = await t.collect();
    expect(m.value(METRICS.held)).toBe(2);
    expect(m.value(METRICS.held, { [ATTR.key]: 'cart:1' })).toBe(1);
    await sleep(100);
    await a.release();
    await b.release();
    await (await client.acquire('cart:3')).release();
    m = await t.collect();
    expect(m.value(METRICS.acquisitions, { ...base, [ATTR.outcome]: 'acquired' })).toBe(3);
    expect(m.value(METRICS.held)).toBe(0);
    const holds = m.histogram(METRICS.hold, { [ATTR.holdEnd]: 'released' });
    expect(holds.count).toBe(3);
    expect(holds.sum).toBeGreaterThanOrEqual(0.18); // two holds of >= 100 ms each

    // A waiter that waits about 200 ms, then gets the lock.
    const holder = await client.acquire('cart:1');
    const waiter = client.acquire('cart:1', { waitMs: 10_000 });
    await sleep(50);
    m = await t.collect();
    expect(m.value(METRICS.waiters)).toBe(1);
    expect(m.value(METRICS.waiters, { [ATTR.key]: 'cart:1' })).toBe(1);
    await sleep(150);
    await holder.release();
    const second = await waiter;
    m = await t.collect();
    expect(m.value(METRICS.waiters)).toBe(0);
    const waits = m.histogram(METRICS.wait, { [ATTR.outcome]: 'acquired' });
    expect(waits.count).toBe(5);
    expect(waits.sum).toBeGreaterThanOrEqual(0.15);

    // A timeout, a refused try, an abort: one each.
    await expect(client.acquire('cart:1', { waitMs: 200 })).rejects.toBeInstanceOf(LockTimeoutError);
    expect(await client.tryAcquire('cart:1')).toBeNull();
    await expect(client.acquire('cart:1', { waitMs: 10_000, signal: AbortSignal.timeout(50) })).rejects.toBeInstanceOf(LockAbortedError);
    m = await t.collect();
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'timeout' })).toBe(1);
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'busy' })).toBe(1);
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'aborted' })).toBe(1);
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'acquired' })).toBe(5); // 3 + the holder + the waiter
    const timedOut = m.histogram(METRICS.wait, { [ATTR.outcome]: 'timeout' });
    expect(timedOut.count).toBe(1);
    expect(timedOut.sum).toBeGreaterThanOrEqual(0.15);
    expect(m.value(METRICS.waiters)).toBe(0);
    expect(m.value(METRICS.held)).toBe(1);
    await second.release();
    m = await t.collect();
    expect(m.value(METRICS.held)).toBe(0);
    expect(m.metric(METRICS.wait).descriptor.unit).toBe('s');
    expect(m.metric(METRICS.hold).descriptor.unit).toBe('s');
  });

  it('a reentrant hold counts as an acquisition but holds once; shared and permits modes are attributes', async () => {
    const { client } = setup({ keys: 'full' });
    await client.using('job:1', { reentrant: true }, async () => {
      await client.using('job:1', { reentrant: true }, async () => {
        const m = await t.collect();
        expect(m.value(METRICS.held)).toBe(1);
        expect(m.value(METRICS.acquisitions, { [ATTR.reentrant]: true })).toBe(1);
      });
    });
    const r1 = await client.acquire('doc', { admission: { mode: 'shared' } });
    const r2 = await client.acquire('doc', { admission: { mode: 'shared' } });
    const p = await client.acquire('pool', { admission: { mode: 'permits', limit: 5, permits: 3 } });
    let m = await t.collect();
    expect(m.value(METRICS.held, { [ATTR.mode]: 'shared' })).toBe(2);
    expect(m.value(METRICS.held, { [ATTR.mode]: 'permits' })).toBe(1);
    expect(m.value(METRICS.held, { [ATTR.mode]: 'exclusive' })).toBe(0);
    await Promise.all([r1.release(), r2.release(), p.release()]);
    m = await t.collect();
    expect(m.value(METRICS.held)).toBe(0);
    expect(m.histogram(METRICS.hold).count).toBe(4);
    const permitSpan = t.spans().find((s) => s.attributes[ATTR.key] === 'pool');
    expect(permitSpan?.attributes[ATTR.permits]).toBe(3);
    expect(permitSpan?.attributes[ATTR.mode]).toBe('permits');
  });

  it('a key removed behind the holder counts one loss with its reason, and the hold ends once', async () => {
    t = telemetry();
    const driver = new MemoryDriver();
    const client = new LockClient(driver);
    open.push(client);
    instrument(client, { meterProvider: t.meterProvider, tracerProvider: t.tracerProvider });
    const lease = await client.acquire('order:7', { ttlMs: 90 });
    driver.forget('order:7');
    await new Promise((resolve) => lease.signal.addEventListener('abort', resolve, { once: true }));
    expect(await lease.release()).toBe(false);
    const m = await t.collect();
    expect(m.value(METRICS.losses, { [ATTR.lostReason]: 'not-held', [ATTR.key]: 'order:*' })).toBe(1);
    expect(m.value(METRICS.losses)).toBe(1);
    expect(m.value(METRICS.held)).toBe(0);
    expect(m.histogram(METRICS.hold, { [ATTR.holdEnd]: 'lost' }).count).toBe(1);
    expect(m.histogram(METRICS.hold).count).toBe(1);
  });

  it('keys: prefix by default, redact, a function, and the cap on distinct values', async () => {
    const raw = ['user:alice@example.com', 'user:bob@example.com', 'invoice/2026/17', 'plain'];
    const cycle = async (c: LockClient): Promise<void> => {
      for (const k of raw) await (await c.acquire(k)).release();
    };

    const { client } = setup(); // default policy
    await cycle(client);
    let m = await t.collect();
    expect(new Set(m.points(METRICS.acquisitions).map((p) => p.attributes[ATTR.key]))).toEqual(new Set(['user:*', '*']));
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: 'user:*' })).toBe(2);
    for (const k of raw) expect(m.attributeValues()).not.toContain(k);
    // Spans keep the full key by default.
    expect(t.spans().map((s) => s.attributes[ATTR.key])).toEqual(raw);
    await t.shutdown();

    const redacted = setup({ keys: 'redact', spanKeys: 'redact' });
    await cycle(redacted.client);
    await expect(redacted.client.acquire('user:alice@example.com', { waitMs: 0 }).then((l) => redacted.client.acquire('user:alice@example.com', { waitMs: 100 }).finally(() => l.release()))).rejects.toBeInstanceOf(LockTimeoutError);
    m = await t.collect();
    expect(m.points(METRICS.acquisitions).every((p) => !(ATTR.key in p.attributes))).toBe(true);
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'acquired' })).toBe(5);
    const texts = JSON.stringify(t.spans().map((s) => [s.attributes, s.status, s.events]));
    for (const k of raw) expect(texts).not.toContain(k);
    expect(m.attributeValues().map(String).some((v) => raw.some((k) => v.includes(k)))).toBe(false);
    await t.shutdown();

    const custom = setup({ keys: (k) => (k.startsWith('invoice/') ? 'invoice' : undefined), prefixDelimiter: '/' });
    await cycle(custom.client);
    m = await t.collect();
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: 'invoice' })).toBe(1);
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: undefined })).toBe(3);
    await t.shutdown();

    const cappedSetup = setup({ keys: 'full', maxKeyValues: 2 });
    await cycle(cappedSetup.client);
    await cycle(cappedSetup.client);
    m = await t.collect();
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: raw[0] })).toBe(2);
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: raw[1] })).toBe(2);
    expect(m.value(METRICS.acquisitions, { [ATTR.key]: OTHER_KEY })).toBe(4);
  });

  it('the returned function stops recording and takes back what the client added to the gauges', async () => {
    const { client, off } = setup();
    const kept = await client.acquire('a:1');
    const waiter = client.acquire('a:1', { waitMs: 10_000 });
    await sleep(50);
    let m = await t.collect();
    expect([m.value(METRICS.held), m.value(METRICS.waiters), m.value(METRICS.acquisitions)]).toEqual([1, 1, 1]);
    off();
    off(); // idempotent
    m = await t.collect();
    expect([m.value(METRICS.held), m.value(METRICS.waiters)]).toEqual([0, 0]);
    await kept.release();
    await (await waiter).release();
    await (await client.acquire('a:2')).release();
    m = await t.collect();
    expect([m.value(METRICS.held), m.value(METRICS.waiters), m.value(METRICS.acquisitions)]).toEqual([0, 0, 1]);
    expect(m.histogram(METRICS.hold).count).toBe(0);
    expect(t.spans()).toHaveLength(1);
    expect(client.events.has('acquired')).toBe(false);
  });

  it('close() ends every hold and wait: the gauges return to 0, losses and closed waits are counted', async () => {
    const { client } = setup();
    await client.acquire('c:1');
    await client.acquire('c:2');
    const waiter = client.acquire('c:1', { waitMs: 10_000 });
    await sleep(30);
    let m = await t.collect();
    expect([m.value(METRICS.held), m.value(METRICS.waiters)]).toEqual([2, 1]);
    await client.close();
    await expect(waiter).rejects.toThrow();
    m = await t.collect();
    expect([m.value(METRICS.held), m.value(METRICS.waiters)]).toEqual([0, 0]);
    expect(m.value(METRICS.losses, { [ATTR.lostReason]: 'closed' })).toBe(2);
    expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'closed' })).toBe(1);
  });

  it('without providers it uses the global API (no-ops until an SDK registers) and breaks nothing', async () => {
    const client = memoryClient();
    const off = instrument(client);
    const lease = await client.acquire('x');
    expect(await client.tryAcquire('x')).toBeNull();
    expect(await lease.release()).toBe(true);
    off();
    t = telemetry();
  });

  it('bad options are typed errors that say what to pass', () => {
    const client = memoryClient();
    t = telemetry();
    expect(() => instrument({} as LockClient)).toThrow(InvalidArgumentError);
    expect(() => instrument(client, { keys: 'hash' as never })).toThrow(/keys must be "full", "prefix", "redact" or a function/);
    expect(() => instrument(client, { prefixDelimiter: '' })).toThrow(InvalidArgumentError);
    expect(() => instrument(client, { maxKeyValues: 0 })).toThrow(OutOfRangeError);
    expect(() => instrument(client, { metrics: 'yes' as never })).toThrow(InvalidArgumentError);
    expect(client.events.has('acquired')).toBe(false); // nothing was attached
  });
});

describe('dlock/otel spans', () => {
  it('an acquire span is a child of the caller\'s span, with key, engine, mode, outcome and wait', async () => {
    const { client } = setup();
    const app = t.tracerProvider.getTracer('app');
    const holder = await client.acquire('cart:9');
    let parentId = '';
    let traceId = '';
    await app.startActiveSpan('checkout', async (parent) => {
      parentId = parent.spanContext().spanId;
      traceId = parent.spanContext().traceId;
      const waited = client.acquire('cart:9', { waitMs: 10_000 });
      await sleep(200);
      await holder.release();
      await (await waited).release();
      await expect(client.acquire('cart:9', { waitMs: 0 }).then((l) => client.acquire('cart:9', { waitMs: 150 }).finally(() => l.release()))).rejects.toBeInstanceOf(LockTimeoutError);
      parent.end();
    });
    const spans = t.spans().filter((s) => s.name === ACQUIRE_SPAN);
    expect(spans).toHaveLength(4); // the holder's, the waiter's, the third holder's, the timeout
    const [outside, waited, , timedOut] = spans;
    expect(outside?.parentSpanContext).toBeUndefined();
    for (const s of spans.slice(1)) {
      expect(s.parentSpanContext?.spanId).toBe(parentId);
      expect(s.spanContext().traceId).toBe(traceId);
    }
    expect(waited?.attributes).toMatchObject({ [ATTR.key]: 'cart:9', [ATTR.engine]: 'memory', [ATTR.mode]: 'exclusive', [ATTR.outcome]: 'acquired', [ATTR.waited]: true });
    expect(waited?.attributes[ATTR.wait]).toBeGreaterThanOrEqual(0.15);
    const ms = (s: typeof waited): number => (s!.duration[0] * 1e9 + s!.duration[1]) / 1e6;
    expect(ms(waited)).toBeGreaterThanOrEqual(150);
    expect(ms(waited)).toBeCloseTo((waited!.attributes[ATTR.wait] as number) * 1000, -1);
    expect(waited?.status.code).toBe(SpanStatusCode.UNSET);
    expect(BigInt(waited!.attributes[ATTR.token] as string)).toBeGreaterThan(BigInt(outside!.attributes[ATTR.token] as string));
    expect(timedOut?.attributes[ATTR.outcome]).toBe('timeout');
    expect(timedOut?.status.code).toBe(SpanStatusCode.ERROR);
    expect(ms(timedOut)).toBeGreaterThanOrEqual(120);
  });
});

describe('dlock/otel on SQLite (two clients, one meter)', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dlock-otel-');
  });
  afterAll(() => {
    if (dir) removeDir(dir);
  });

  it('contention between two clients: wait, held and waiters gauges summed over both; renewal failures, the loss and engine errors while the file is locked', async () => {
    t = telemetry();
    const path = `${dir}/otel.db`;
    const a = await connect(`sqlite:${path}`);
    const b = await connect(`sqlite:${path}`);
    open.push(a, b);
    const o = { meterProvider: t.meterProvider, tracerProvider: t.tracerProvider };
    instrument(a, o);
    instrument(b, o);
    const la = await a.acquire('res:1');
    const lb = await b.acquire('res:2');
    let m = await t.collect();
    expect(m.value(METRICS.held, { [ATTR.engine]: 'sqlite' })).toBe(2);
    const waiting = b.acquire('res:1', { waitMs: 10_000 });
    await sleep(200);
    m = await t.collect();
    expect(m.value(METRICS.waiters, { [ATTR.engine]: 'sqlite', [ATTR.key]: 'res:*' })).toBe(1);
    await la.release();
    const got = await waiting;
    m = await t.collect();
    expect(m.value(METRICS.waiters)).toBe(0);
    expect(m.value(METRICS.held)).toBe(2);
    expect(m.value(METRICS.acquisitions, { [ATTR.engine]: 'sqlite', [ATTR.outcome]: 'acquired' })).toBe(3);
    const w = m.histogram(METRICS.wait, { [ATTR.outcome]: 'acquired' });
    expect(w.count).toBe(3);
    expect(w.sum).toBeGreaterThanOrEqual(0.15);
    await Promise.all([got.release(), lb.release()]);

    // The engine refuses writes: renewals fail, then the hold is lost when its deadline passes.
    const blocker = await startSqliteBlocker(path);
    try {
      const lease = await a.acquire('res:lost', { ttlMs: 1500 });
      await blocker.lock();
      await new Promise((resolve) => lease.signal.addEventListener('abort', resolve, { once: true }));
      m = await t.collect();
      expect(m.value(METRICS.renewalFailures, { [ATTR.engine]: 'sqlite' })).toBeGreaterThanOrEqual(1);
      expect(m.value(METRICS.losses, { [ATTR.lostReason]: 'expired' })).toBe(1);
      expect(m.value(METRICS.held)).toBe(0);
      expect(m.histogram(METRICS.hold, { [ATTR.holdEnd]: 'lost' }).sum).toBeGreaterThan(1);
      // An acquisition while the engine refuses: engine errors by operation, an unavailable outcome.
      const refused = await a.acquire('res:refused', { waitMs: 300 }).catch((e: unknown) => e);
      m = await t.collect();
      expect(refused).toBeInstanceOf(UnavailableError);
      expect(m.value(METRICS.engineErrors, { [ATTR.engine]: 'sqlite', [ATTR.operation]: 'acquire' })).toBeGreaterThanOrEqual(1);
      expect(m.value(METRICS.acquisitions, { [ATTR.outcome]: 'unavailable' })).toBe(1);
      const span = t.spans().find((s) => s.attributes[ATTR.key] === 'res:refused');
      expect([span?.attributes[ATTR.outcome], span?.status.code]).toEqual(['unavailable', SpanStatusCode.ERROR]);
    } finally {
      await blocker.unlock().catch(() => undefined);
      await blocker.stop();
    }
  });
});

describe('dlock/otel loading', () => {
  it('dlock and dlock/otel load without @opentelemetry/api; instrument() loads it (from the built package)', () => {
    const script = `import { createRequire } from 'node:module';
      const require = createRequire(process.cwd() + '/x.js');
      const loaded = () => Object.keys(require.cache).some((k) => k.includes('@opentelemetry'));
      const d = await import('dlock'); const o = await import('dlock/otel');
      const before = loaded();
      const c = new d.LockClient(new d.MemoryDriver()); const off = o.instrument(c); off(); await c.close();
      console.log(JSON.stringify({ before, after: loaded() }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ before: false, after: true });
    // Without the package at all: test/package/missing-peer.test.ts (MissingPeerError).
  });
});
