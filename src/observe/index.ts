/**
 * Observability: structured logs, Prometheus metrics and per-disk I/O counters (docs/observability.md).
 * A leaf room: it imports nothing of Tessera's but util/, so every other room may use it.
 */
export { Logger, parseLogLevel, parseLogFormat } from './log.ts';
export type { LogLevel, LogFormat, LogFields, LoggerOptions } from './log.ts';
export { MetricsRegistry } from './metrics.ts';
export type { Labels, Sample, HistogramSample } from './metrics.ts';
export { IoStats, DiskIoStats, IoOpIndex } from './io-stats.ts';
export type { IoOp } from './io-stats.ts';
export { ObserveError, ObserveErrorCode } from './errors.ts';
export type { ObserveErrorCodeValue } from './errors.ts';
