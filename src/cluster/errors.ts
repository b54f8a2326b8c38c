import { CodedError } from '../util/coded-error.ts';

/** Stable codes of ClusterError (docs/cluster.md). */
export const ClusterErrorCode = {
  /** A setting or request is malformed (node id, replicas out of range, a bad flag). */
  INVALID: 'CLUSTER_INVALID',
  /** etcd does not answer (at start: the URLs tried; later: a change that needs it). */
  ETCD_UNAVAILABLE: 'CLUSTER_ETCD_UNAVAILABLE',
  /** A node with this id is live in the cluster already. */
  NODE_LIVE: 'CLUSTER_NODE_LIVE',
  /** No member has this id. */
  NODE_NOT_FOUND: 'CLUSTER_NODE_NOT_FOUND',
  /** No disk has this name in the cluster. */
  DISK_NOT_FOUND: 'CLUSTER_DISK_NOT_FOUND',
  /** A disk with this name exists. */
  DISK_EXISTS: 'CLUSTER_DISK_EXISTS',
  /** The placement policy cannot be met by the up, active members. */
  POLICY_UNMET: 'CLUSTER_POLICY_UNMET',
  /** The data directory belongs to another node id or another cluster. */
  IDENTITY: 'CLUSTER_IDENTITY',
  /** A message carried an older epoch than the receiver's (the fencing token); `current` says the newer one. */
  STALE_EPOCH: 'CLUSTER_STALE_EPOCH',
  /** A message carried a newer epoch than the receiver's: it refreshes the disk record from etcd, the sender retries. */
  EPOCH_AHEAD: 'CLUSTER_EPOCH_AHEAD',
  /** A peer is unreachable or its connection was lost. */
  PEER_UNAVAILABLE: 'CLUSTER_PEER_UNAVAILABLE',
  /** A peer broke the protocol (bad frame, bad checksum, unexpected message). */
  PROTOCOL: 'CLUSTER_PROTOCOL',
  /** A peer could not prove it holds the cluster secret, or we could not. */
  AUTH_FAILED: 'CLUSTER_AUTH_FAILED',
  /** The two ends speak no common protocol version. */
  NO_COMMON_VERSION: 'CLUSTER_NO_COMMON_VERSION',
  /** This node is not (or no longer) the disk's head, or its own lease ran out. */
  NOT_HEAD: 'CLUSTER_NOT_HEAD',
  /** A concurrent change won a compare-and-swap; retry with fresh state. */
  CONFLICT: 'CLUSTER_CONFLICT',
  /** An op arrived out of stream order (a gap, or an epoch this replica is not configured for yet): the sender resends from its oldest unacknowledged op. */
  OUT_OF_ORDER: 'CLUSTER_OUT_OF_ORDER',
  /** A replica could not apply an op to its own copy (its drive failed, it is full): the op fails, and that replica leaves the chain. */
  REPLICA_IO: 'CLUSTER_REPLICA_IO',
  /** A limit was exceeded (sizes, in-flight requests). */
  LIMIT: 'CLUSTER_LIMIT',
  /** The cluster is closed. */
  CLOSED: 'CLUSTER_CLOSED',
  /** A peer's hybrid logical clock is too far ahead of ours to take (docs/cluster.md, "Time"). */
  CLOCK_SKEW: 'CLUSTER_CLOCK_SKEW',
} as const;

/** One of the ClusterErrorCode values. */
export type ClusterErrorCodeValue = (typeof ClusterErrorCode)[keyof typeof ClusterErrorCode];

/** The cluster room's one error class. `current` is set with STALE_EPOCH. */
export class ClusterError extends CodedError<ClusterErrorCodeValue> {
  /** With STALE_EPOCH: the newer epoch the receiver holds. */
  readonly current: number | null;
  /**
   * With REPLICA_IO: the engine's code of what the remote store refused (`ENGINE_NOT_FOUND`, …),
   * so a client served through another node gets the same typed error as one served locally.
   */
  readonly engine: string | null;
  constructor(code: ClusterErrorCodeValue, message: string, options?: { cause?: unknown; current?: number; engine?: string }) {
    super(code, message, options);
    this.current = options?.current ?? null;
    this.engine = options?.engine ?? null;
  }
}
