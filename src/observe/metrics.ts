/**
 * The node's Prometheus metrics (docs/observability.md, "Metrics"). prom-client writes the text
 * format and the process metrics; Tessera's own figures are plain numbers kept by the code that
 * does the work and read only when /metrics is scraped (`collect` callbacks), so counting costs
 * the I/O path an addition, never an allocation or a label lookup.
 */
import { Registry, collectDefaultMetrics, validateMetricName } from 'prom-client';
import { ObserveError, ObserveErrorCode } from './errors.ts';

/** Label values of one sample. */
export type Labels = Record<string, string | number>;
/** One value of a gauge or counter. */
export interface Sample {
  labels?: Labels;
  value: number;
}

/** What a histogram collector returns per label set: bucket counts (not cumulative), sum and count. */
export interface HistogramSample {
  labels: Labels;
  /** Upper bounds of the buckets, ascending, without +Inf. */
  bounds: readonly number[];
  /** Observations per bucket: `counts[i]` fell in (bounds[i-1], bounds[i]]; the last, past every bound. Length bounds.length + 1. */
  counts: ArrayLike<number>;
  sum: number;
  count: number;
}

type MetricType = 'gauge' | 'counter' | 'histogram';
/** A row as prom-client's registry formats it. */
interface Row {
  metricName?: string;
  labels: Labels;
  value: number;
}

/** Names are `tessera_…` snake case; counters end in `_total` (promtool's lint asks for it). */
function checkName(name: string, type: MetricType): void {
  if (!validateMetricName(name) || !/^[a-z][a-z0-9_]*$/.test(name)) throw new ObserveError(ObserveErrorCode.INVALID, `Metric name ${name} is not snake case`);
  if ((type === 'counter') !== name.endsWith('_total')) throw new ObserveError(ObserveErrorCode.INVALID, `Metric ${name}: only counters, and all of them, end in _total`);
}

/** prom-client's process metrics that are gauges with a counter's `_total` suffix. */
const gaugesNamedTotal = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** The metrics of one node: Tessera's collected figures plus the process's. */
export class MetricsRegistry {
  /** Content-Type of text(). */
  readonly contentType: string = Registry.PROMETHEUS_CONTENT_TYPE;
  readonly #registry = new Registry();

  /** `processMetrics` adds prom-client's process_* and nodejs_* figures (CPU, memory, event loop lag, GC). */
  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.#registry });
      // Gauges named like counters: promtool's lint refuses them, and handles say little here.
      for (const name of gaugesNamedTotal) this.#registry.removeSingleMetric(name);
    }
  }

  /** A gauge whose samples `collect` reads at each scrape. */
  gauge(name: string, help: string, collect: () => Sample[] | Promise<Sample[]>): void {
    this.#add(name, help, 'gauge', async () => (await collect()).map((s) => ({ labels: s.labels ?? {}, value: s.value })));
  }

  /** A counter whose samples `collect` reads at each scrape; they must only grow (a disk's vanish with it). */
  counter(name: string, help: string, collect: () => Sample[] | Promise<Sample[]>): void {
    this.#add(name, help, 'counter', async () => (await collect()).map((s) => ({ labels: s.labels ?? {}, value: s.value })));
  }

  /** A histogram whose buckets `collect` reads at each scrape. */
  histogram(name: string, help: string, collect: () => HistogramSample[]): void {
    this.#add(name, help, 'histogram', () => {
      const rows: Row[] = [];
      for (const h of collect()) {
        let cumulative = 0;
        for (let i = 0; i <= h.bounds.length; i++) {
          cumulative += h.counts[i];
          rows.push({ metricName: `${name}_bucket`, labels: { ...h.labels, le: i < h.bounds.length ? h.bounds[i] : '+Inf' }, value: cumulative });
        }
        rows.push({ metricName: `${name}_sum`, labels: h.labels, value: h.sum });
        rows.push({ metricName: `${name}_count`, labels: h.labels, value: h.count });
      }
      return rows;
    });
  }

  /** Every metric in the Prometheus text format (version 0.0.4). */
  text(): Promise<string> {
    return this.#registry.metrics();
  }

  #add(name: string, help: string, type: MetricType, rows: () => Row[] | Promise<Row[]>): void {
    checkName(name, type);
    const metric = { name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, aggregator: 'sum', values: await rows() }) };
    this.#registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
  }
}
