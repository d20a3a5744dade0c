/**
 * The OpenTelemetry SDK's in-memory exporters, set up for one test: a MeterProvider whose
 * periodic reader exports to an InMemoryMetricExporter (flushed on demand, cumulative), a
 * BasicTracerProvider with a SimpleSpanProcessor into an InMemorySpanExporter, and the
 * AsyncLocalStorage context manager (registered once, globally, as the Node.js SDK does).
 */
import { context, type Attributes } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type DataPoint,
  type Histogram,
  type MetricData,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';

let contextManager: AsyncLocalStorageContextManager | undefined;

/** Register the AsyncLocalStorage context manager (once per test file). */
export function useAsyncContext(): void {
  if (contextManager) return;
  contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
}

export interface Telemetry {
  readonly meterProvider: MeterProvider;
  readonly tracerProvider: BasicTracerProvider;
  /** Every metric now (one fresh export of cumulative values). */
  collect(): Promise<Metrics>;
  /** Every span ended so far. */
  spans(): ReadableSpan[];
  shutdown(): Promise<void>;
}

/** Create the providers and exporters. */
export function telemetry(): Telemetry {
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  // A long interval: the test flushes when it reads, so nothing is exported between reads.
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
  return {
    meterProvider,
    tracerProvider,
    async collect() {
      metricExporter.reset();
      await reader.forceFlush();
      const batches = metricExporter.getMetrics();
      return new Metrics(batches.flatMap((b) => b.scopeMetrics.flatMap((s) => s.metrics)));
    },
    spans: () => spanExporter.getFinishedSpans(),
    async shutdown() {
      await meterProvider.shutdown();
      await tracerProvider.shutdown();
    },
  };
}

/** Whether `attrs` has every attribute of `want` (undefined in `want`: must be absent). */
function matches(attrs: Attributes, want: Attributes): boolean {
  return Object.entries(want).every(([k, v]) => (v === undefined ? !(k in attrs) : attrs[k] === v));
}

/** Read access to one export. */
export class Metrics {
  constructor(readonly all: MetricData[]) {}

  /** The metric `name` (throws when it was never recorded). */
  metric(name: string): MetricData {
    const m = this.all.find((x) => x.descriptor.name === name);
    if (!m) throw new Error(`no metric ${name} (have: ${this.all.map((x) => x.descriptor.name).join(', ')})`);
    return m;
  }

  /** The data points of `name` whose attributes match `want` ([] when the metric was never recorded). */
  points(name: string, want: Attributes = {}): Array<DataPoint<unknown>> {
    const m = this.all.find((x) => x.descriptor.name === name);
    return ((m?.dataPoints ?? []) as Array<DataPoint<unknown>>).filter((p) => matches(p.attributes, want));
  }

  /** Sum of a counter's (or up-down counter's) points matching `want`. */
  value(name: string, want: Attributes = {}): number {
    return this.points(name, want).reduce((s, p) => s + (p.value as number), 0);
  }

  /** Count and sum of a histogram's points matching `want`. */
  histogram(name: string, want: Attributes = {}): { count: number; sum: number } {
    return this.points(name, want).reduce(
      (acc, p) => {
        const h = p.value as Histogram;
        return { count: acc.count + h.count, sum: acc.sum + (h.sum ?? 0) };
      },
      { count: 0, sum: 0 },
    );
  }

  /** Every attribute value of every data point (for "the raw key appears nowhere"). */
  attributeValues(): unknown[] {
    return this.all.flatMap((m) => (m.dataPoints as Array<DataPoint<unknown>>).flatMap((p) => Object.values(p.attributes)));
  }
}
