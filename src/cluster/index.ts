/** The cluster room's face (docs/cluster.md). */
export { ClusterError, ClusterErrorCode } from './errors.ts';
export type { ClusterErrorCodeValue } from './errors.ts';
export type { AwayEntry, ChainEntry, ClusterRecord, DiskRecord, FailureDomain, LiveRecord, MemberRecord, OwnerRecord, Policy, ReplicaState, RttRecord } from './types.ts';
export { PeerServer, PeerPool, PeerConnection, validatePeerRequest, MessageType, Version as PeerProtocolVersion, PeerLimit, PeerSize, DEFAULT_PEER_LIMITS, OP_KINDS, IO_KINDS } from './peer/index.ts';
export type {
  PeerServerOptions,
  PeerNodeOptions,
  PeerPoolOptions,
  PeerAddress,
  PeerClock,
  PeerHandler,
  PeerReply,
  PeerRequest,
  PeerResponse,
  ReplyBodies,
  RequestBodies,
  RequestType,
  InflightStats,
  DiskView,
  GateContext,
  PeerRejection,
  PeerLimits,
  MessageTypeValue,
  OpId,
  Extent,
  HelloBody,
  HelloReply,
  AuthBody,
  ErrorBody,
  PingBody,
  PongBody,
  DiskScoped,
  ConfigureBody,
  ConfigureReply,
  OpKind,
  OpBody,
  AckBody,
  IoKind,
  IoBody,
  IoReply,
  ExtentsBody,
  ExtentsReply,
  ReadSnapBody,
} from './peer/index.ts';
export { Coordinator, leaseTtlSDefault, connectTimeoutMsDefault, liveIntervalMsDefault, secretBytes } from './coord/coordinator.ts';
export type { CoordinatorOptions, CoordinatorEvents, JoinOptions, NodeView, VersionedDisk } from './coord/coordinator.ts';
export { checkNodeId, etcdPrefixDefault, normalizePrefix } from './coord/keys.ts';
export { etcdRequestKinds } from './coord/etcd.ts';
export type { EtcdRequestCounts, EtcdRequestKind } from './coord/etcd.ts';
export { Replication } from './runtime.ts';
export type { ClusterDiskInfo, DiskLeaseInfo, NodeClusterState, ReplicationOptions } from './runtime.ts';
export type { CopyToDrop } from './disks.ts';
export { reservedSnapshot, syncName } from './disks.ts';
export { chainAfter } from './controller.ts';
export {
  defaultReplicas, place, planChange, reservedBytesOf, validatePolicy, REPLICAS_DEFAULT, REPLICAS_MAX, REPLICAS_MIN,
} from './placement.ts';
export {
  controllerRank, parseRttRecord, rttChanged, rttFromRecords, rttPublishDue, summarizeRtt, zoneRtt,
  RTT_CHANGE_MIN_MS, RTT_CHANGE_RATIO, RTT_MEASURE_FIRST_MS, RTT_MEASURE_INTERVAL_MS, RTT_PUBLISH_INTERVAL_MIN_MS,
} from './rtt.ts';
export type { PlacementDisk, PlacementInput, PlacementNode, PlacementPlan, RttLookup } from './placement.ts';
export {
  encodeHlc, fileBoundStore, formatHlc, Hlc, hlcLogical, hlcWallMs, parseHlc, HLC_LOGICAL_BITS, HLC_LOGICAL_MAX,
  HLC_MAX_AHEAD_MS_DEFAULT, HLC_WALL_MS_MAX, HLC_WINDOW_MS_DEFAULT,
} from './hlc.ts';
export type { HlcBoundStore, HlcOptions, HlcTimestamp } from './hlc.ts';
