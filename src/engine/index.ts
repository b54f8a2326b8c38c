/** The volume engine: write log + versioned block index; disks, snapshots, clones. */
export { Store } from './store.ts';
export type { SnapshotOptions, StoreOptions, StoreStats, StoreMetrics } from './store.ts';
export type { StoreHealth } from './health.ts';
export type { LogFiles } from './log/files.ts';
export type { CompactStats } from './gc/compact.ts';
export type { SpaceOptions, SpaceFigures, SpaceState } from './space.ts';
export type { ScrubOptions, ScrubReport, ScrubProgress, DamagedExtent, DamageReason } from './scrub.ts';
export { EngineError, EngineErrorCode } from './errors.ts';
/** Throws ENGINE_INVALID unless a disk or snapshot name is one the store takes (for checks before a change reaches it). */
export { checkName } from './history.ts';
export type { EngineErrorCodeValue, ReadFault } from './errors.ts';
export type { DiskInfo, SnapshotInfo, Volume, AllocationExtent, ChangeExtent, WriteOptions, ZeroOptions } from './types.ts';
export type { Feed, FeedRecord, FeedSubscriber, FeedSubscription, FallBehind } from './feed.ts';
