/** The records the cluster keeps in etcd (docs/cluster.md, "Keys"). Values are JSON. */

/** A replica's state in a disk's chain, as `disk info` shows it. */
export type ReplicaState = 'healthy' | 'rebuilding' | 'catching-up' | 'stale';

/** Where a disk's replicas may not share: a node, or a zone. */
export type FailureDomain = 'node' | 'zone';

/** `P/cluster`: created once by the first node. */
export interface ClusterRecord {
  id: string;
  createdMs: number;
  /** The peer secret: 32 random bytes, base64. */
  secret: string;
}

/** `P/members/ID`: persistent; a member stays known while down. */
export interface MemberRecord {
  id: string;
  zone: string;
  /** `HOST:PORT` each, as advertised. */
  api: string;
  nbd: string;
  peer: string;
  state: 'active' | 'draining';
  joinedMs: number;
}

/** `P/live/ID`: under the node's lease. */
export interface LiveRecord {
  id: string;
  startedMs: number;
  version: string;
  /** Peer protocol versions spoken, [min, max]. */
  protocol: [number, number];
  capacityBytes: number;
  usedBytes: number;
  /** Recent I/O load, requests a second. */
  load: number;
  /** The node's hybrid logical clock when written. */
  hlc: string;
}

/**
 * `P/rtt/ID`: under the node's lease. Per zone, the median of the node's round trips to the
 * zone's nodes, in ms (docs/cluster.md, "Round trips").
 */
export interface RttRecord {
  zones: Record<string, number>;
}

/** One replica in a disk's chain. */
export interface ChainEntry {
  node: string;
  state: Exclude<ReplicaState, 'stale'>;
  /** For a catching-up replica: the sync snapshot its data is good up to. */
  base?: string;
  /**
   * For a replica copying in: the epoch it (re)entered the chain at. A node still copying in
   * from an earlier entry (it left and came back, perhaps between two records it saw) starts its
   * copy over: the ops of the epochs it was out of reached neither its stream nor its copy.
   */
  since?: number;
}

/** A replica that left the chain and still holds data up to `base`. */
export interface AwayEntry {
  node: string;
  /** The sync snapshot it holds (null: none it can catch up from). */
  base: string | null;
  sinceMs: number;
}

/** A disk's placement policy. */
export interface Policy {
  replicas: number;
  failureDomain: FailureDomain;
}

/** `P/disks/NAME`. `chain[0]` is the head, the last entry the tail. */
export interface DiskRecord {
  name: string;
  sizeBytes: number;
  createdMs: number;
  /** `DISK@SNAP` it was cloned from, or null. */
  origin: string | null;
  policy: Policy;
  /** Grows at every change of the chain or of its head: the fencing token. */
  epoch: number;
  chain: ChainEntry[];
  away: AwayEntry[];
  /** The newest sync snapshot put through the chain, or null before the first. */
  sync: string | null;
}

/** `P/owners/NAME`: under the head node's lease. */
export interface OwnerRecord {
  node: string;
  epoch: number;
}
