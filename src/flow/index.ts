/**
 * Flow control with no knowledge of what flows (docs/flow.md): concurrency that adapts to
 * throughput, hedged requests, byte budgets, pooled and shared memory, pacing of background
 * work, the event loop's I/O gate, a pool of worker threads, and emulated device latency.
 */
export { AdaptiveLimiter } from './adapt.ts';
export type { AdaptiveLimiterStats } from './adapt.ts';
export { Hedger } from './hedge.ts';
export type { HedgerOptions, HedgerStats } from './hedge.ts';
export { ByteBudget } from './budget.ts';
export { SharedSlots, isDirectAligned, directAlignBytes } from './shared-slots.ts';
export { BufferPool } from './buffer-pool.ts';
export { Pacer } from './pacer.ts';
export { LoopIoGate } from './io-gate.ts';
export { ThreadPool, threadsMax } from './thread-pool.ts';
export { serveTasks } from './thread-worker.ts';
export { RateLimiter } from './rate.ts';
export { parseCron, nextCronMs, CronError } from './cron.ts';
export type { Cron } from './cron.ts';
export { Timetable, nextDueMs, systemClock, fastClock } from './timetable.ts';
export type { Recurrence, RunTimes, ScheduleClock } from './timetable.ts';
export { DelayQueue, SPIN_MS } from './delay-queue.ts';
export { LatencyDevice, expectedLatency, seededRandom } from './latency-device.ts';
export type { ExpectedLatency, LatencyOp } from './latency-device.ts';
export { builtinProfile, builtinProfileNames, builtinProfiles, checkLatencyProfile } from './latency-profile.ts';
export type { LatencyDistribution, LatencyProfile, ProfileCheck } from './latency-profile.ts';
