/**
 * OpenTelemetry metrics and traces for a {@link LockClient}, from its event stream
 * (`client.events`, src/core/events.ts): `instrument(client, options)` adds listeners and returns
 * the function that removes them. `@opentelemetry/api` is an optional peer dependency, loaded by
 * `instrument()` only: `import 'dlock'` never loads it, and neither does importing this module.
 *
 * Keys and cardinality: a metrics backend keeps one time series per distinct attribute set, so a
 * raw lock key (`cart:8412`) in metric attributes makes one series per cart. By default metrics
 * get the key's prefix (`cart:*`), and at most {@link InstrumentOptions.maxKeyValues} distinct key
 * values per `instrument()` call (the rest are reported as {@link OTHER_KEY}); spans, which are
 * not aggregated, get the full key. Both are options.
 * @packageDocumentation
 */
import type * as OtelApi from '@opentelemetry/api';
import type { Attributes, MeterProvider, TracerProvider } from '@opentelemetry/api';
import type { LockClient } from '../core/client.js';
import type { LockEventBase, LockEventMap, LockEventName } from '../core/events.js';
import { loadPeer } from '../core/peer.js';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/**
 * How a lock key appears in an attribute: `full` (as it is), `prefix` (up to and including the
 * first delimiter, then `*`: `cart:42` → `cart:*`; a key without the delimiter → `*`), `redact`
 * (no key attribute at all), or a function returning the value to report (`undefined`: none).
 */
export type KeyPolicy = 'full' | 'prefix' | 'redact' | ((key: string) => string | undefined);

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /** Where metrics go. Default: the global one (`metrics.getMeterProvider()`; a no-op until an SDK registers one). */
  meterProvider?: MeterProvider;
  /** Where spans go. Default: the global one (`trace.getTracerProvider()`; a no-op until an SDK registers one). */
  tracerProvider?: TracerProvider;
  /** Record metrics. Default true. */
  metrics?: boolean;
  /** Record `dlock.acquire` spans. Default true. */
  traces?: boolean;
  /** The key attribute of metrics. Default `prefix` (bounded cardinality; see the module's note). */
  keys?: KeyPolicy;
  /** The key attribute of spans. Default `full` (spans are not aggregated). */
  spanKeys?: KeyPolicy;
  /** The delimiter of the `prefix` policy. Default `:`. */
  prefixDelimiter?: string;
  /**
   * At most this many distinct key values in metric attributes (after `keys`); further ones are
   * reported as {@link OTHER_KEY}. A guard for a policy that turns out to be high-cardinality.
   * Default 100.
   */
  maxKeyValues?: number;
}

/** The instrumentation scope: the meter's and the tracer's name. */
export const INSTRUMENTATION_SCOPE = 'dlock';

/** The key value reported once {@link InstrumentOptions.maxKeyValues} distinct values were seen. */
export const OTHER_KEY = '_other';

/** The name of the span of one acquisition (acquire, tryAcquire, using, and the primitives on them). */
export const ACQUIRE_SPAN = 'dlock.acquire';

/** Attribute names of the metrics and spans (see the README's "OpenTelemetry" table). */
export const ATTR = {
  /** The driver's name (`redis`, `sqlite`, ...). */
  engine: 'dlock.engine',
  /** The lock key, as the key policy reports it. */
  key: 'dlock.lock.key',
  /** `exclusive`, `shared` or `permits`. */
  mode: 'dlock.lock.mode',
  /** Permits asked for (spans of semaphore acquisitions only). */
  permits: 'dlock.lock.permits',
  /** How an acquisition ended: `acquired`, `busy`, `timeout`, `aborted`, `closed`, `unavailable`. */
  outcome: 'dlock.outcome',
  /** Whether an acquisition re-entered a hold of the same owner. */
  reentrant: 'dlock.lock.reentrant',
  /** Why a hold was lost (`expired`, `not-held`, `session-lost`, `max-hold`, `closed`, ...). */
  lostReason: 'dlock.lost.reason',
  /** How a hold ended: `released`, or `lost` (lost first, or the release found it gone). */
  holdEnd: 'dlock.hold.end',
  /** What the engine was asked when it failed (`acquire`, `release`, ...). */
  operation: 'dlock.operation',
  /** Spans: the fencing token of the grant (a decimal string). */
  token: 'dlock.lock.token',
  /** Spans: the acquisition's owner id. */
  owner: 'dlock.lock.owner',
  /** Spans: whether the acquisition had to wait. */
  waited: 'dlock.lock.waited',
  /** Spans: from the call to the grant or the refusal, in seconds. */
  wait: 'dlock.lock.wait.duration',
} as const;

/** Metric names (see the README's "OpenTelemetry" table). */
export const METRICS = {
  /** Histogram, s: from the acquire call to the grant or the refusal, by outcome. */
  wait: 'dlock.lock.wait.duration',
  /** Histogram, s: from the grant to the release or the loss. */
  hold: 'dlock.lock.hold.duration',
  /** Counter: acquisitions by outcome (granted ones and refused ones). */
  acquisitions: 'dlock.lock.acquisitions',
  /** Counter: holds lost, by reason. */
  losses: 'dlock.lock.losses',
  /** Counter: failed renewals (each is retried until the local deadline). */
  renewalFailures: 'dlock.lock.renewal.failures',
  /** Counter: engine requests that failed, by operation. */
  engineErrors: 'dlock.engine.errors',
  /** Up-down counter: holds held now (a reentrant hold counts once). */
  held: 'dlock.lock.held',
  /** Up-down counter: acquisitions waiting now. */
  waiters: 'dlock.lock.waiters',
} as const;

/** Wait buckets, s: a try takes a round trip (ms), a contended wait up to the wait limit. */
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Hold buckets, s: a critical section of ms up to a leader's hours. */
const HOLD_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/**
 * Record metrics and `dlock.acquire` spans of `client` (see the README's "OpenTelemetry" section
 * for every name, unit and attribute). Returns the function that stops it (idempotent); the
 * up-down counters drop what this client contributed.
 *
 * The span of an acquisition is a child of the context active where `acquire()` was called (the
 * caller's span, with an async-hooks context manager, as the SDKs for Node.js register), from the
 * call to the grant or the refusal; its status is an error for `timeout` and `unavailable`.
 * @throws {@link index!MissingPeerError} when `@opentelemetry/api` is not installed;
 *   {@link index!InvalidArgumentError} / {@link index!OutOfRangeError} for bad options.
 *
 * @example
 * ```ts fragment
 * import { instrument } from 'dlock/otel';
 * const stop = instrument(locks, { keys: 'prefix' }); // the global providers of your SDK setup
 * // ...
 * stop();
 * ```
 */
export function instrument(client: LockClient, options: InstrumentOptions = {}): () => void {
  if (typeof client !== 'object' || client === null || typeof (client as { on?: unknown }).on !== 'function') {
    throw new InvalidArgumentError('instrument(client, options): client must be a LockClient.');
  }
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('instrument(client, options): options must be an object.');
  const delimiter = options.prefixDelimiter ?? ':';
  if (typeof delimiter !== 'string' || delimiter === '') throw new InvalidArgumentError('prefixDelimiter must be a non-empty string such as ":".');
  const metricKey = keyMapper('keys', options.keys ?? 'prefix', delimiter);
  const spanKey = keyMapper('spanKeys', options.spanKeys ?? 'full', delimiter);
  const maxKeyValues = options.maxKeyValues ?? 100;
  if (typeof maxKeyValues !== 'number' || !Number.isInteger(maxKeyValues) || maxKeyValues < 1) {
    throw new OutOfRangeError('maxKeyValues', `maxKeyValues must be a whole number of at least 1, got ${String(maxKeyValues)}.`);
  }
  for (const flag of ['metrics', 'traces'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw new InvalidArgumentError(`${flag} must be a boolean.`);
  }
  const api = loadPeer<typeof OtelApi>('@opentelemetry/api');
  const offs: Array<() => void> = [];
  const on = <K extends LockEventName>(name: K, listener: (e: LockEventMap[K]) => void): void => {
    offs.push(client.on(name, listener));
  };
  if (options.metrics !== false) {
    offs.push(recordMetrics(api, options.meterProvider ?? api.metrics.getMeterProvider(), on, capped(metricKey, maxKeyValues)));
  }
  if (options.traces !== false) recordSpans(api, options.tracerProvider ?? api.trace.getTracerProvider(), on, spanKey, (options.spanKeys ?? 'full') === 'full');
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    for (const off of offs) off();
  };
}

type KeyFn = (key: string) => string | undefined;
type On = <K extends LockEventName>(name: K, listener: (e: LockEventMap[K]) => void) => void;

function keyMapper(option: string, policy: unknown, delimiter: string): KeyFn {
  if (policy === 'full') return (k) => k;
  if (policy === 'redact') return () => undefined;
  if (policy === 'prefix') {
    return (k) => {
      const at = k.indexOf(delimiter);
      return at < 0 ? '*' : `${k.slice(0, at + delimiter.length)}*`;
    };
  }
  if (typeof policy === 'function') {
    const f = policy as (key: string) => unknown;
    return (k) => {
      try {
        const v = f(k);
        return typeof v === 'string' ? v : undefined;
      } catch {
        return undefined; // a policy that throws reports no key; it never breaks the client
      }
    };
  }
  throw new InvalidArgumentError(`${option} must be "full", "prefix", "redact" or a function (key) => string, got ${JSON.stringify(policy)}.`);
}

/** `key`, and at most `max` distinct values of it; then {@link OTHER_KEY}. */
function capped(key: KeyFn, max: number): KeyFn {
  const seen = new Set<string>();
  return (k) => {
    const v = key(k);
    if (v === undefined || seen.has(v)) return v;
    if (seen.size >= max) return OTHER_KEY;
    seen.add(v);
    return v;
  };
}

/** The attributes every lock metric carries. */
function lockAttributes(e: LockEventBase, key: KeyFn): Attributes {
  const a: Attributes = { [ATTR.engine]: e.engine, [ATTR.mode]: e.mode };
  const k = key(e.key);
  if (k !== undefined) a[ATTR.key] = k;
  return a;
}

function recordMetrics(api: typeof OtelApi, provider: MeterProvider, on: On, key: KeyFn): () => void {
  const meter = provider.getMeter(INSTRUMENTATION_SCOPE);
  const wait = meter.createHistogram(METRICS.wait, {
    unit: 's',
    description: 'From the acquire call to the grant or the refusal.',
    valueType: api.ValueType.DOUBLE,
    advice: { explicitBucketBoundaries: WAIT_BUCKETS },
  });
  const hold = meter.createHistogram(METRICS.hold, {
    unit: 's',
    description: 'From the grant to the release or the loss of a hold.',
    valueType: api.ValueType.DOUBLE,
    advice: { explicitBucketBoundaries: HOLD_BUCKETS },
  });
  const acquisitions = meter.createCounter(METRICS.acquisitions, { unit: '{acquisition}', description: 'Acquisitions, by outcome.' });
  const losses = meter.createCounter(METRICS.losses, { unit: '{loss}', description: 'Holds lost, by reason.' });
  const renewalFailures = meter.createCounter(METRICS.renewalFailures, { unit: '{failure}', description: 'Failed renewals (retried until the local deadline).' });
  const engineErrors = meter.createCounter(METRICS.engineErrors, { unit: '{error}', description: 'Engine requests that failed, by operation.' });
  const held = meter.createUpDownCounter(METRICS.held, { unit: '{lease}', description: 'Holds held now.' });
  const waiters = meter.createUpDownCounter(METRICS.waiters, { unit: '{waiter}', description: 'Acquisitions waiting now.' });

  // What this client adds to the up-down counters, by owner id (unique per engine request), with
  // the attributes it was added with (a decrement must name the same series). One rare case stays
  // counted as waiting until detach: a grant that arrived after its own validity is given back and
  // retried under a new owner id, so the first id's wait never ends by its own event.
  const holding = new Map<string, Attributes>();
  const waiting = new Map<string, Attributes>();
  const stopWaiting = (owner: string): void => {
    const a = waiting.get(owner);
    if (!a) return;
    waiting.delete(owner);
    waiters.add(-1, a);
  };
  const endHold = (owner: string, holdMs: number, end: 'released' | 'lost'): void => {
    const a = holding.get(owner);
    if (!a) return; // a reentrant hold, or its end was recorded already (lost, then released)
    holding.delete(owner);
    held.add(-1, a);
    hold.record(holdMs / 1000, { ...a, [ATTR.holdEnd]: end });
  };

  on('waiting', (e) => {
    if (waiting.has(e.owner)) return;
    const a = lockAttributes(e, key);
    waiting.set(e.owner, a);
    waiters.add(1, a);
  });
  on('acquired', (e) => {
    const a = lockAttributes(e, key);
    acquisitions.add(1, { ...a, [ATTR.outcome]: 'acquired', [ATTR.reentrant]: e.reentrant });
    if (e.reentrant) return;
    stopWaiting(e.owner);
    wait.record(e.waitMs / 1000, { ...a, [ATTR.outcome]: 'acquired' });
    holding.set(e.owner, a);
    held.add(1, a);
  });
  on('not-acquired', (e) => {
    const a = lockAttributes(e, key);
    stopWaiting(e.owner);
    acquisitions.add(1, { ...a, [ATTR.outcome]: e.outcome, [ATTR.reentrant]: false });
    wait.record(e.waitMs / 1000, { ...a, [ATTR.outcome]: e.outcome });
  });
  on('released', (e) => endHold(e.owner, e.holdMs, e.ok ? 'released' : 'lost'));
  on('lost', (e) => {
    losses.add(1, { ...lockAttributes(e, key), [ATTR.lostReason]: e.reason });
    endHold(e.owner, e.holdMs, 'lost');
  });
  on('renewal-failed', (e) => renewalFailures.add(1, lockAttributes(e, key)));
  on('unavailable', (e) => engineErrors.add(1, { [ATTR.engine]: e.engine, [ATTR.operation]: e.operation }));

  return () => {
    for (const a of holding.values()) held.add(-1, a);
    for (const a of waiting.values()) waiters.add(-1, a);
    holding.clear();
    waiting.clear();
  };
}

/** `fullKeys`: errors may be recorded as they are (their messages name the key). */
function recordSpans(api: typeof OtelApi, provider: TracerProvider, on: On, key: KeyFn, fullKeys: boolean): void {
  const tracer = provider.getTracer(INSTRUMENTATION_SCOPE);
  const span = (e: LockEventBase & { readonly waitMs: number }, outcome: string, extra: Attributes, error?: unknown): void => {
    // Emitted in the acquire's async chain: the active context is the caller's.
    const end = performance.now();
    const attributes: Attributes = { ...lockAttributes(e, key), [ATTR.outcome]: outcome, [ATTR.wait]: e.waitMs / 1000, ...extra };
    if (e.mode === 'permits') attributes[ATTR.permits] = e.permits;
    if (e.owner !== '') attributes[ATTR.owner] = e.owner;
    const s = tracer.startSpan(ACQUIRE_SPAN, { kind: api.SpanKind.INTERNAL, startTime: end - e.waitMs, attributes }, api.context.active());
    if (outcome === 'timeout' || outcome === 'unavailable') {
      if (fullKeys && error instanceof Error) s.recordException(error);
      const message = outcome === 'timeout' ? 'The lock was not acquired within the wait.' : fullKeys && error instanceof Error ? error.message : 'The engine could not be reached.';
      s.setStatus({ code: api.SpanStatusCode.ERROR, message });
    }
    s.end(end);
  };
  on('acquired', (e) => span(e, 'acquired', { [ATTR.token]: e.token.toString(), [ATTR.waited]: e.waited, [ATTR.reentrant]: e.reentrant }));
  on('not-acquired', (e) => span(e, e.outcome, {}, e.error));
}
