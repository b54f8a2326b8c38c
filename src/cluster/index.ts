/** The cluster room's face (docs/cluster.md). */
export { ClusterError, ClusterErrorCode } from './errors.ts';
export type { ClusterErrorCodeValue } from './errors.ts';
export type { AwayEntry, ChainEntry, ClusterRecord, DiskRecord, FailureDomain, LiveRecord, MemberRecord, OwnerRecord, Policy, ReplicaState } from './types.ts';
