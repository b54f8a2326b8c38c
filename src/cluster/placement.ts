/**
 * Where a disk's replicas go (docs/cluster.md, "Placement"). Pure: no I/O, no clock, no
 * randomness; the same input always gives the same answer, ties broken by node id.
 *
 * The weight of a node is the larger of the bytes it uses and the bytes it has reserved (the
 * provisioned sizes of the replicas it holds): disks are thin, so a disk created a moment ago
 * uses nothing yet, and counting only used bytes would send a burst of creates to the same
 * emptiest node. Snapshots can make a node use more than its disks' sizes, hence the larger of
 * the two. A new replica adds its disk's full size.
 */
import { ClusterError, ClusterErrorCode } from './errors.ts';
import type { FailureDomain, Policy } from './types.ts';

/** The fewest replicas a disk may have. */
export const REPLICAS_MIN = 1;
/** The most replicas a disk may have. */
export const REPLICAS_MAX = 5;
/** The replicas a disk gets without a policy, in a cluster of 3 members or more. */
export const REPLICAS_DEFAULT = 3;

/** What placement knows of a node: its member record, its live record, its reservations. */
export interface PlacementNode {
  readonly id: string;
  readonly zone: string;
  readonly state: 'active' | 'draining';
  /** Its live key exists (its lease is alive). */
  readonly up: boolean;
  readonly capacityBytes: number;
  /** Bytes its store uses, from its live record. */
  readonly usedBytes: number;
  /** Sum of the sizes of the replicas it holds (chain and away); see reservedBytesOf(). */
  readonly reservedBytes: number;
  /** Recent I/O, requests a second, from its live record. */
  readonly load: number;
}

/** Measured round-trip time between two nodes in ms, or undefined when not measured. */
export type RttLookup = (a: string, b: string) => number | undefined;

/** The disk being placed: its size, policy and, when it exists, where its replicas are. */
export interface PlacementDisk {
  /** Its name: spreads equally good choices differently per disk (see place()). */
  readonly name?: string;
  readonly sizeBytes: number;
  readonly policy: Policy;
  /** The current chain, head first (empty or absent for a new disk). */
  readonly chain?: readonly { readonly node: string }[];
  /** Replicas that left the chain and hold data they can catch up from. */
  readonly away?: readonly { readonly node: string }[];
}

/** Input of place(). */
export interface PlacementInput {
  readonly nodes: readonly PlacementNode[];
  readonly disk: PlacementDisk;
  /** Round-trip times (from P/rtt/ records: rttFromRecords() in rtt.ts). Missing: every pair unmeasured. */
  readonly rttMs?: RttLookup;
}

/** What a change of replica set does: replicas to copy to, replicas to drop, and those kept. */
export interface PlacementPlan {
  /** Nodes of the current set that stay, in chain order. */
  readonly keep: readonly string[];
  /** Nodes that get a new replica (a catch-up when they are in `away`, else a full copy). */
  readonly add: readonly string[];
  /** Nodes whose replica leaves the set. */
  readonly remove: readonly string[];
}

/** The default replica count for a cluster of `memberCount` members: 3, or fewer members' count. */
export function defaultReplicas(memberCount: number): number {
  return Math.min(REPLICAS_DEFAULT, Math.max(REPLICAS_MIN, memberCount));
}

/** Throws CLUSTER_INVALID unless `policy` is one placement can be asked for. */
export function validatePolicy(policy: Policy): void {
  const { replicas, failureDomain } = policy;
  if (!Number.isInteger(replicas) || replicas < REPLICAS_MIN || replicas > REPLICAS_MAX) {
    throw new ClusterError(ClusterErrorCode.INVALID, `replicas must be between ${REPLICAS_MIN} and ${REPLICAS_MAX}: got ${replicas}`);
  }
  if (failureDomain !== 'node' && failureDomain !== 'zone') {
    throw new ClusterError(ClusterErrorCode.INVALID, `failure domain must be node or zone: got ${String(failureDomain)}`);
  }
}

/** Per node, the summed sizes of the replicas it holds (chain and away) across `disks`. */
export function reservedBytesOf(
  disks: Iterable<{ readonly sizeBytes: number; readonly chain: readonly { readonly node: string }[]; readonly away: readonly { readonly node: string }[] }>,
): Map<string, number> {
  const reserved = new Map<string, number>();
  for (const disk of disks) {
    for (const { node } of [...disk.chain, ...disk.away]) reserved.set(node, (reserved.get(node) ?? 0) + disk.sizeBytes);
  }
  return reserved;
}

/** Eligible nodes hold new replicas and keep old ones: up and active (not draining). */
function eligible(node: PlacementNode | undefined): node is PlacementNode {
  return node !== undefined && node.up && node.state === 'active';
}

function domainOf(node: PlacementNode, failureDomain: FailureDomain): string {
  return failureDomain === 'zone' ? node.zone : node.id;
}

/**
 * Fills closer than this count as equal. Without it the one least-filled node takes every next
 * replica, so nodes that are filled together take the same disks together: losing one node
 * would leave its disks' surviving replicas on a handful of nodes, which then carry the whole
 * rebuild, and a second loss among them hits many disks twice. With it, among the nodes within
 * one step of fill, load, round-trip times and then a hash of the disk's name and the node's id
 * decide, which scatters disks over many partners; the spread of fill stays within about a step.
 */
export const FILL_STEP = 0.01;

/** The fraction of its capacity a node's weight fills, with `extraBytes` more. */
function fillOf(node: PlacementNode, extraBytes: number): number {
  const weight = Math.max(node.usedBytes, node.reservedBytes) + extraBytes;
  // A node reporting no capacity (not measured yet) ranks after every node that reports some.
  return node.capacityBytes > 0 ? weight / node.capacityBytes : Number.POSITIVE_INFINITY;
}

/** The refusal of a policy; `domains` are fewer than REPLICAS_MAX, so the message names them all. */
function unmet(policy: Policy, domains: readonly string[]): ClusterError {
  const { replicas, failureDomain } = policy;
  const names = [...domains].sort().join(', ');
  const message =
    failureDomain === 'zone'
      ? `cannot place ${replicas} replicas in distinct zones: the cluster has ${domains.length} zone${domains.length === 1 ? '' : 's'} up (${names})`
      : `cannot place ${replicas} replicas on distinct nodes: the cluster has ${domains.length} node${domains.length === 1 ? '' : 's'} up and active (${names})`;
  return new ClusterError(ClusterErrorCode.POLICY_UNMET, domains.length === 0 ? message.replace(' ()', '') : message);
}

/**
 * The RTT score of `node` against the nodes already chosen: unmeasured pairs count first (so a
 * measured node wins over an unmeasured one), then the summed measured RTTs.
 */
function rttScore(node: string, chosen: readonly string[], rttMs: RttLookup | undefined): [number, number] {
  let missing = 0;
  let sum = 0;
  for (const other of chosen) {
    const rtt = rttMs?.(node, other);
    if (rtt === undefined || !Number.isFinite(rtt)) missing++;
    else sum += rtt;
  }
  return [missing, sum];
}

/** FNV-1a of `text`: a cheap, stable hash. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Node ids' hashes: a node is compared thousands of times per disk in a large cluster. */
const idHashes = new Map<string, number>();

/** The tie-breaking rank of node `id` for the disk whose name hashes to `diskHash`. */
function tieRank(diskHash: number, id: string): number {
  let h = idHashes.get(id);
  if (h === undefined) idHashes.set(id, (h = fnv1a(id)));
  // murmur3's finaliser over both: FNV alone leaves related ids (n0001, n0002) close.
  h ^= diskHash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Negative when `a` is the better node to receive a replica of `sizeBytes`. */
function compareCandidates(a: PlacementNode, b: PlacementNode, sizeBytes: number, chosen: readonly string[], rttMs: RttLookup | undefined, diskHash: number): number {
  const stepA = Math.floor(fillOf(a, sizeBytes) / FILL_STEP);
  const stepB = Math.floor(fillOf(b, sizeBytes) / FILL_STEP);
  if (stepA !== stepB) return stepA < stepB ? -1 : 1;
  if (a.load !== b.load) return a.load < b.load ? -1 : 1;
  if (chosen.length > 0) {
    const [missA, sumA] = rttScore(a.id, chosen, rttMs);
    const [missB, sumB] = rttScore(b.id, chosen, rttMs);
    if (missA !== missB) return missA - missB;
    if (sumA !== sumB) return sumA < sumB ? -1 : 1;
  }
  const hashA = tieRank(diskHash, a.id);
  const hashB = tieRank(diskHash, b.id);
  if (hashA !== hashB) return hashA - hashB;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * The replica set of a disk, head first. For a disk that has replicas, every one that still
 * satisfies the policy stays (chain entries first, in chain order, then `away` entries, which
 * catch up rather than copy everything), so data moves only where it must; new replicas go at
 * the end of the chain. When the set shrinks, the replicas on the fullest nodes go, never the
 * head. Throws CLUSTER_INVALID for a bad policy, CLUSTER_POLICY_UNMET when the up, active
 * members have too few failure domains.
 */
export function place(input: PlacementInput): string[] {
  const { nodes, disk, rttMs } = input;
  const { policy, sizeBytes } = disk;
  validatePolicy(policy);
  const { replicas, failureDomain } = policy;

  const current = [...(disk.chain ?? []), ...(disk.away ?? [])].map(({ node }) => node);
  // Only a disk with replicas needs nodes by id (a new one: a thousand map entries saved per disk).
  const byId = new Map<string, PlacementNode>();
  const domains = new Set<string>();
  for (const node of nodes) {
    if (current.length > 0) byId.set(node.id, node);
    if (eligible(node)) domains.add(domainOf(node, failureDomain));
  }
  if (domains.size < replicas) throw unmet(policy, [...domains]);

  // Keep what can stay: one replica per domain, first come in chain order, then away entries.
  const kept: string[] = [];
  const takenDomains = new Set<string>();
  for (const id of current) {
    const node = byId.get(id);
    if (!eligible(node) || kept.includes(id)) continue;
    const domain = domainOf(node, failureDomain);
    if (takenDomains.has(domain)) continue;
    takenDomains.add(domain);
    kept.push(id);
  }

  if (kept.length > replicas) return shrink(kept, replicas, byId);

  // Fill up: each round, the best node in a domain not taken yet (a scan, not a sort: placement
  // runs over a thousand nodes per disk in the simulation).
  const chosen = kept;
  const diskHash = fnv1a(disk.name ?? '');
  while (chosen.length < replicas) {
    let best: PlacementNode | undefined;
    for (const node of nodes) {
      if (!eligible(node) || takenDomains.has(domainOf(node, failureDomain))) continue;
      if (best === undefined || compareCandidates(node, best, sizeBytes, chosen, rttMs, diskHash) < 0) best = node;
    }
    // The domain count was checked above, so a node is always left.
    if (best === undefined) throw unmet(policy, [...domains]);
    takenDomains.add(domainOf(best, failureDomain));
    chosen.push(best.id);
  }
  return chosen;
}

/** Drops replicas on the fullest nodes until `replicas` are left; the head stays. */
function shrink(kept: readonly string[], replicas: number, byId: ReadonlyMap<string, PlacementNode>): string[] {
  const [head, ...rest] = kept;
  const fullestFirst = [...rest].sort((a, b) => {
    const fillA = fillOf(byId.get(a)!, 0);
    const fillB = fillOf(byId.get(b)!, 0);
    if (fillA !== fillB) return fillB - fillA;
    return a < b ? -1 : a > b ? 1 : 0;
  });
  const dropped = new Set(fullestFirst.slice(0, kept.length - replicas));
  return [head!, ...rest.filter((id) => !dropped.has(id))];
}

/**
 * What moving from the `current` replica set to `target` (both in chain order) does. The
 * caller orders it: a lost node's replica is removed at once; a drained one only after its
 * replacement is healthy (docs/cluster.md, "Drain").
 */
export function planChange(current: readonly string[], target: readonly string[]): PlacementPlan {
  const inTarget = new Set(target);
  const inCurrent = new Set(current);
  return {
    keep: current.filter((id) => inTarget.has(id)),
    add: target.filter((id) => !inCurrent.has(id)),
    remove: current.filter((id) => !inTarget.has(id)),
  };
}
