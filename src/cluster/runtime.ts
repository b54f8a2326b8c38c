/**
 * What a node runs in a cluster besides its coordinator (docs/cluster.md): the peer listener
 * and pool, its part in every replicated disk, the controller while it is elected, and the
 * cluster-wide disk operations the API asks for.
 */
import type { Store, DiskInfo, SnapshotInfo, Volume } from '../engine/index.ts';
import { checkName, EngineError, EngineErrorCode } from '../engine/index.ts';
import type { Logger } from '../observe/index.ts';
import { ClusterError, ClusterErrorCode } from './errors.ts';
import type { Coordinator } from './coord/coordinator.ts';
import { Controller, placementNodes } from './controller.ts';
import { CopyRegistry } from './copies.ts';
import { defaultReplicas, place, validatePolicy } from './placement.ts';
import { controllerRank, rttPublishDue, summarizeRtt, RttFilter, RTT_MEASURE_FIRST_MS, RTT_MEASURE_INTERVAL_MS } from './rtt.ts';
import { ReplicatedDisks, reservedSnapshot } from './disks.ts';
import type { CopyToDrop } from './disks.ts';
import { PeerPool, PeerServer } from './peer/index.ts';
import type { DiskRecord, FailureDomain, ReplicaState, RttRecord } from './types.ts';
import type { Hlc } from './hlc.ts';

/** A disk as the cluster reports it: the engine's DiskInfo and its replicas (docs/cluster.md, "Contract"). */
export interface ClusterDiskInfo extends DiskInfo {
  replicas: Array<{ node: string; role: 'head' | 'middle' | 'tail'; state: ReplicaState }>;
  epoch: number;
  policy: { replicas: number; failureDomain: FailureDomain };
}

/** A disk's ownership as `disk lease show` reports it (docs/cluster.md, "Epochs, ownership and fencing"). */
export interface DiskLeaseInfo {
  disk: string;
  /** The node holding `P/owners/NAME`, or null while none does (between heads, or after a break). */
  owner: string | null;
  /** The disk record's epoch: the fencing token now. */
  epoch: number;
  /** The epoch the owner took the key at, or null without an owner. */
  ownerEpoch: number | null;
  /** Seconds the owner's etcd lease has left (etcd's TTL of the lease the key is under), or null. */
  ttlSeconds: number | null;
  /** The head the record names. */
  head: string | null;
}

/** A node's part in its cluster, for `node info` (GET /node). */
export interface NodeClusterState {
  node: string;
  /** The revision of its cache of the cluster's keys (the cluster-map version). */
  revision: number;
  /** Copies of disks it must delete and has not yet. */
  copiesToDelete: CopyToDrop[];
}

/** How long `disk rm` waits for the replicas up to delete their copies before it names those that did not. */
const copiesGoneWaitMs = 10_000;

/** Options of startReplication. */
export interface ReplicationOptions {
  coord: Coordinator;
  store: Store;
  /** Where the copies this node makes are noted (DIR/cluster/copies); default: in memory only. */
  copiesFile?: string;
  /** Host and port the peer listener binds. */
  host: string;
  port: number;
  log: Logger;
  /** The newest peer protocol version to speak (rolling upgrades). */
  protocolMax?: number;
  /** The node's hybrid logical clock: stamps peer messages and learns from theirs. */
  hlc: Hlc;
  /** How long a replica may stay away before the controller places a new one (`--rebuild-delay`). */
  rebuildDelayMs?: number;
  /** Bytes a second a copy in reads at most (`--rebuild-rate`). */
  rebuildBytesPerSecond?: number;
  /** How often a head takes a sync point of a disk written since the last (`--sync-interval`). */
  syncIntervalMs?: number;
}

/** The replication side of a cluster node. */
export class Replication {
  readonly coord: Coordinator;
  readonly disks: ReplicatedDisks;
  readonly #server: PeerServer;
  readonly #pool: PeerPool;
  readonly #store: Store;
  readonly #log: Logger;
  #controller: Controller | null = null;
  #port = 0;
  #rttTimer: NodeJS.Timeout | null = null;
  readonly #rttFilter = new RttFilter();
  /** The summary of this node's latest measurement of round trips, published or not. */
  #rttLatest: RttRecord | null = null;
  /** When (monotonic ms) this node last put its summary; -Infinity before the first. */
  #rttPutMs = -Infinity;
  readonly #rebuildDelayMs: number | undefined;

  constructor(opts: ReplicationOptions) {
    const c = opts.coord;
    this.coord = c;
    this.#store = opts.store;
    this.#log = opts.log;
    const clock = opts.hlc;
    const hlc = (): bigint => clock.now();
    const identity = { node: c.nodeId, cluster: c.clusterId, secret: c.secret, protocolMax: opts.protocolMax, log: opts.log, clock };
    this.#pool = new PeerPool({
      ...identity,
      resolve: (node) => {
        const m = c.nodes().find((n) => n.id === node);
        return m === undefined || m.peer === null ? null : m.peer;
      },
    });
    const copies = CopyRegistry.open(opts.copiesFile ?? null, (why) => opts.log.warn(why));
    this.disks = new ReplicatedDisks({ nodeId: c.nodeId, store: opts.store, coord: c, pool: this.#pool, log: opts.log, hlc, copyBytesPerSecond: opts.rebuildBytesPerSecond, syncIntervalMs: opts.syncIntervalMs, copies });
    this.#rebuildDelayMs = opts.rebuildDelayMs;
    this.#server = new PeerServer({ ...identity, disks: (name) => this.disks.view(name) });
    this.disks.register(this.#server);
  }

  /** Listens for peers; resolves to the bound port. */
  async listen(host: string, port: number): Promise<number> {
    const a = await this.#server.listen({ host, port });
    this.#port = a.port;
    return a.port;
  }

  /** Once the node joined: takes part in the disks and runs the controller when elected. */
  start(): void {
    this.disks.start();
    this.#controller = new Controller({ coord: this.coord, log: this.#log, rebuildDelayMs: this.#rebuildDelayMs });
    // Round trips to the other nodes, for placement and the controller's rank: measured soon after
    // the start, then every 30 s; put in etcd only as a summary by zone, when it changed materially
    // (docs/cluster.md, "Round trips").
    const tick = (): void => {
      void this.#measureRtt();
      this.#rttTimer = setTimeout(tick, RTT_MEASURE_INTERVAL_MS).unref();
    };
    this.#rttTimer = setTimeout(tick, RTT_MEASURE_FIRST_MS).unref();
  }

  async #measureRtt(): Promise<void> {
    const up = this.coord.nodes().filter((n) => n.state === 'up' && n.id !== this.coord.nodeId);
    if (up.length === 0) return;
    const zones = new Map(up.map((n) => [n.id, n.zone]));
    try {
      const next = summarizeRtt(this.#rttFilter.add(await this.#pool.pingAll(zones.keys())), (id) => zones.get(id));
      this.#rttLatest = next;
      if (!rttPublishDue({ published: this.coord.publishedRtt(), next, lastPutMs: this.#rttPutMs, nowMs: performance.now() })) return;
      if (await this.coord.publishRtt(next)) this.#rttPutMs = performance.now();
    } catch (err) {
      this.#log.debug(`round trips not published: ${(err as Error).message}`);
    }
  }

  /**
   * This node's rank as a controller candidate: how many up nodes have a lower mean round trip to
   * the others (ties by id), so the best connected campaigns first (docs/cluster.md, "Failure,
   * catch-up and rebuild"). Its own mean from its latest measurement, the others' from their
   * records. 0 until round trips are known.
   */
  rank(): number {
    const me = this.coord.nodeId;
    const records = { ...this.coord.rtts() };
    if (this.#rttLatest !== null) records[me] = this.#rttLatest;
    const up = this.coord.nodes().filter((n) => n.state === 'up').map((n) => ({ id: n.id, zone: n.zone }));
    return controllerRank({ me, up, records });
  }

  get port(): number {
    return this.#port;
  }

  /** Creates a replicated disk: placed on `replicas` nodes of distinct failure domains; resolves once its head serves it. */
  async createDisk(name: string, sizeBytes: number, policy: { replicas?: number; failureDomain?: FailureDomain }): Promise<ClusterDiskInfo> {
    const nodes = placementNodes(this.coord);
    const p = { replicas: policy.replicas ?? defaultReplicas(nodes.length), failureDomain: policy.failureDomain ?? ('node' as const) };
    validatePolicy(p);
    const chosen = place({ nodes, disk: { sizeBytes, policy: p }, rttMs: this.coord.rttLookup() });
    const replicas = p.replicas;
    const failureDomain = p.failureDomain;
    const record: DiskRecord = {
      name,
      sizeBytes,
      createdMs: Date.now(),
      origin: null,
      policy: { replicas, failureDomain },
      epoch: 1,
      chain: chosen.map((node) => ({ node, state: 'healthy' as const })),
      away: [],
      sync: null,
    };
    const rev = await this.coord.createDisk(record);
    await this.coord.reach(rev).catch(() => {});
    return this.waitServed(name, 30_000);
  }

  /**
   * Resolves with the disk's info once its record's head serves it (its first epoch configured)
   * and every node up knows it (asked through its API, a few seconds at most), so a client may
   * connect to any node at once.
   */
  async waitServed(name: string, timeoutMs: number): Promise<ClusterDiskInfo> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const vd = this.coord.disk(name);
      if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
      if (vd.record.sync !== null || this.disks.isHead(name)) {
        await this.#knownEverywhere(name, Math.min(5000, Math.max(0, deadline - performance.now())));
        return this.info(name);
      }
      if (performance.now() > deadline) throw new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `disk ${name}: its head ${vd.record.chain[0]?.node} did not start serving it within ${Math.round(timeoutMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits (at most `ms`) until every other node up answers for the disk: their caches saw its record. */
  async #knownEverywhere(name: string, ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    const others = this.coord.nodes().filter((n) => n.state === 'up' && n.id !== this.coord.nodeId);
    await Promise.all(others.map(async (n) => {
      while (performance.now() < deadline) {
        try {
          const res = await fetch(`http://${n.api}/api/v1/disks/${encodeURIComponent(name)}`, { signal: AbortSignal.timeout(1000) });
          await res.body?.cancel();
          if (res.status === 200) return;
        } catch {
          // Not answering: it may be going down; the deadline bounds the wait.
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }));
  }

  /** The disk's info: the engine's, from this node's copy where it holds one, with its replicas. */
  info(name: string): ClusterDiskInfo {
    const vd = this.coord.disk(name);
    if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
    const r = vd.record;
    let base: DiskInfo;
    try {
      base = this.#store.getDisk(name);
    } catch {
      base = { name, sizeBytes: r.sizeBytes, allocatedBytes: 0, snapshots: [], origin: r.origin, createdMs: r.createdMs };
    }
    const last = r.chain.length - 1;
    return {
      ...base,
      sizeBytes: r.sizeBytes,
      snapshots: base.snapshots.filter((s) => !reservedSnapshot(s)),
      replicas: [
        ...r.chain.map((e, i) => ({ node: e.node, role: i === 0 ? ('head' as const) : i === last ? ('tail' as const) : ('middle' as const), state: e.state as ReplicaState })),
        ...r.away.map((a) => ({ node: a.node, role: 'tail' as const, state: 'stale' as ReplicaState })),
      ],
      epoch: r.epoch,
      policy: { ...r.policy },
    };
  }

  /** The cluster's disks as this node's cache sees them: replicas not healthy (copying in, or away). */
  degraded(): { replicasNotHealthy: number; disksUnderPolicy: number } {
    let replicasNotHealthy = 0;
    let disksUnderPolicy = 0;
    for (const { record } of this.coord.disks()) {
      const healthy = record.chain.filter((e) => e.state === 'healthy').length;
      replicasNotHealthy += record.chain.length - healthy + record.away.length;
      if (healthy < record.policy.replicas) disksUnderPolicy++;
    }
    return { replicasNotHealthy, disksUnderPolicy };
  }

  /** Every disk of the cluster. */
  list(): ClusterDiskInfo[] {
    return this.coord.disks().map((d) => this.info(d.record.name));
  }

  /**
   * Clones `disk@snap` as `name` (at the head): a new disk placed on the same nodes as its origin,
   * each cloning its own copy of the snapshot, so no data moves. Refused while a replica of the
   * origin is copying in (it may not hold the snapshot whole).
   */
  async cloneDisk(disk: string, snap: string, name: string): Promise<ClusterDiskInfo> {
    const vd = this.coord.disk(disk);
    if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${disk}" not found`);
    const s = this.#store.listSnapshots(disk).find((x) => x.name === snap);
    if (s === undefined || reservedSnapshot(snap)) throw new EngineError(EngineErrorCode.NOT_FOUND, `Snapshot "${disk}@${snap}" not found`);
    if (vd.record.chain.some((e) => e.state !== 'healthy')) throw new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `disk ${disk} has a replica copying in: clone it once it is done`);
    const record: DiskRecord = {
      name,
      sizeBytes: s.sizeBytes,
      createdMs: Date.now(),
      origin: `${disk}@${snap}`,
      policy: { ...vd.record.policy },
      epoch: 1,
      chain: vd.record.chain.map((e) => ({ node: e.node, state: 'healthy' as const })),
      away: [],
      sync: null,
    };
    const rev = await this.coord.createDisk(record);
    await this.coord.reach(rev).catch(() => {});
    return this.waitServed(name, 30_000);
  }

  /** Changes a disk's replica count (`disk set`): the controller adds or drops replicas to meet it. */
  async setReplicas(name: string, replicas: number): Promise<ClusterDiskInfo> {
    for (;;) {
      const vd = this.coord.disk(name);
      if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
      const policy = { ...vd.record.policy, replicas };
      validatePolicy(policy);
      // Refused now rather than left waiting: the nodes up cannot hold that many.
      place({ nodes: placementNodes(this.coord), disk: { sizeBytes: vd.record.sizeBytes, policy, chain: vd.record.chain, away: vd.record.away } });
      try {
        const rev = await this.coord.updateDisk({ ...vd.record, policy }, vd.modRevision);
        await this.coord.reach(rev).catch(() => {});
        return this.info(name);
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.CONFLICT) throw err;
      }
    }
  }

  /** Drains a node (`node drain`): the controller moves each of its replicas elsewhere, the disks online. */
  async drainNode(id: string): Promise<void> {
    await this.coord.drainMember(id);
  }

  /**
   * Forgets a node (`node rm`): one that holds no replica (drained), or one that is down (its
   * replicas away are forgotten, so the controller rebuilds them elsewhere at once). Refused for
   * a node up with replicas, or one holding the last healthy replica of a disk.
   */
  async removeNode(id: string): Promise<void> {
    const m = this.coord.members().find((x) => x.record.id === id);
    if (m === undefined) throw new ClusterError(ClusterErrorCode.NODE_NOT_FOUND, `no node ${id} in the cluster`);
    const holding = this.coord.disks().filter((d) => d.record.chain.some((e) => e.node === id));
    if (m.up && holding.length > 0) {
      throw new ClusterError(ClusterErrorCode.INVALID, `node ${id} is up and holds replicas of ${holding.length} disk(s) (${holding.slice(0, 5).map((d) => d.record.name).join(', ')}): drain it first (tessera node drain ${id})`);
    }
    for (const d of holding) {
      if (!d.record.chain.some((e) => e.node !== id && e.state === 'healthy')) {
        throw new ClusterError(ClusterErrorCode.INVALID, `node ${id} holds the only healthy replica of disk ${d.record.name}: it cannot be forgotten`);
      }
    }
    for (const name of this.coord.disks().filter((d) => d.record.chain.some((e) => e.node === id) || d.record.away.some((a) => a.node === id)).map((d) => d.record.name)) {
      for (;;) {
        const vd = this.coord.disk(name);
        if (vd === null) break;
        const r = vd.record;
        const chain = r.chain.filter((e) => e.node !== id);
        const next = { ...r, chain, away: r.away.filter((a) => a.node !== id), epoch: chain.length !== r.chain.length ? r.epoch + 1 : r.epoch };
        try {
          await this.coord.updateDisk(next, vd.modRevision);
          break;
        } catch (err) {
          if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.CONFLICT) throw err;
        }
      }
    }
    if (m.up) this.#log.warn(`node ${id} is forgotten while up: stop it`);
    await this.coord.removeMember(id);
  }

  /** This node's part in the cluster, for `node info`. */
  nodeState(): NodeClusterState {
    return { node: this.coord.nodeId, revision: this.coord.revision, copiesToDelete: this.disks.copiesToDrop() };
  }

  /**
   * Deletes a disk from the cluster: its record goes, and every replica deletes its copy when it
   * sees that. Resolves once every node up that held a copy (chain or away) has deleted it; a
   * copy a node could not delete (a client of that node still has it open) or a node that did
   * not answer within 10 s is an IN_USE naming them: the disk is gone from the cluster, and each
   * node deletes its copy as soon as it can.
   */
  async deleteDisk(name: string): Promise<void> {
    const vd = this.coord.disk(name);
    if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
    const holders = [...new Set([...vd.record.chain.map((e) => e.node), ...vd.record.away.map((a) => a.node)])];
    const rev = await this.coord.deleteDisk(name, vd.modRevision);
    await this.coord.reach(rev).catch(() => {});
    const left = await this.#copiesLeft(name, holders, rev);
    if (left.length > 0) {
      throw new EngineError(EngineErrorCode.IN_USE, `Disk "${name}" is deleted from the cluster, but ${left.map((l) => `${l.node} still holds a copy (${l.why})`).join('; ')}; a node deletes its copy as soon as it can`);
    }
  }

  /**
   * The nodes up among `holders` that still hold a copy of a deleted disk, and why: waits until
   * each node's cache is past the deletion (revision `rev`), then for its copy to go, until it
   * failed to delete it or copiesGoneWaitMs passed.
   */
  async #copiesLeft(name: string, holders: readonly string[], rev: number): Promise<Array<{ node: string; why: string }>> {
    const deadline = performance.now() + copiesGoneWaitMs;
    const left: Array<{ node: string; why: string }> = [];
    await Promise.all(holders.map(async (id) => {
      for (;;) {
        const node = this.coord.nodes().find((n) => n.id === id);
        // A node down deletes nothing now; its copy stays until it is back.
        if (node === undefined || node.state !== 'up') return;
        const state = id === this.coord.nodeId ? this.nodeState() : await remoteState(node.api);
        if (state !== null && state.revision >= rev) {
          const copy = state.copiesToDelete.find((c) => c.disk === name);
          if (copy === undefined) return;
          // Tried and refused: it tries again on its own, which may take as long as the client keeps it open.
          if (copy.error !== null) return void left.push({ node: id, why: copy.error });
        }
        if (performance.now() > deadline) return void left.push({ node: id, why: state === null ? `it did not answer within ${copiesGoneWaitMs / 1000} s` : `not deleted within ${copiesGoneWaitMs / 1000} s` });
        await new Promise((r) => setTimeout(r, 100));
      }
    }));
    return left.sort((a, b) => (a.node < b.node ? -1 : 1));
  }

  /** Who owns a disk now, at which epoch, and for how long its lease lasts without a keep-alive. */
  async lease(name: string): Promise<DiskLeaseInfo> {
    const vd = this.coord.disk(name);
    if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
    const { owner, ttlSeconds } = await this.coord.owner(name);
    return { disk: name, owner: owner?.node ?? null, epoch: vd.record.epoch, ownerEpoch: owner?.epoch ?? null, ttlSeconds, head: vd.record.chain[0]?.node ?? null };
  }

  /**
   * Breaks a disk's lease, for an operator who knows its owner is dead: at a new epoch the next
   * healthy replica heads the disk and the old head leaves the chain for `away` (as a node down
   * does), its owner key deleted in the same transaction so its lease, alive or not, keeps
   * nobody waiting. An old head still alive is fenced by the new epoch and comes back as a
   * replica catching up. POLICY_UNMET when no other healthy replica could take over.
   */
  async breakLease(name: string): Promise<DiskLeaseInfo> {
    for (;;) {
      const vd = this.coord.disk(name);
      if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${name}" not found`);
      const r = vd.record;
      const head = r.chain[0];
      const up = new Set(this.coord.nodes().filter((n) => n.state === 'up').map((n) => n.id));
      const next = r.chain.find((e, i) => i > 0 && e.state === 'healthy' && up.has(e.node));
      if (head === undefined || next === undefined) {
        throw new ClusterError(ClusterErrorCode.POLICY_UNMET, `cannot break the lease of disk ${name}: no other healthy replica is up to take over from ${head?.node ?? 'its head'}`);
      }
      const chain = [next, ...r.chain.filter((e) => e !== head && e !== next)];
      const away = [...r.away.filter((a) => a.node !== head.node), { node: head.node, base: r.sync, sinceMs: Date.now() }];
      try {
        const rev = await this.coord.updateDisk({ ...r, epoch: r.epoch + 1, chain, away }, vd.modRevision, { dropOwner: true });
        await this.coord.reach(rev).catch(() => {});
        this.#log.warn(`disk ${name}: lease of ${head.node} broken by an operator: epoch ${r.epoch + 1}, head ${next.node}`, { disk: name });
        return await this.lease(name);
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.CONFLICT) throw err;
      }
    }
  }

  /** The API address of the controller, or null when this node is the controller (or there is none now). */
  controllerApi(): string | null {
    const controller = this.coord.controller;
    if (controller === null || controller === this.coord.nodeId) return null;
    return this.coord.nodes().find((n) => n.id === controller)?.api ?? null;
  }

  /**
   * The node that heads every one of `disks`, where a group snapshot or a backup of them runs
   * (docs/cluster.md, "Group snapshots"). NOT_FOUND for a disk the cluster does not have,
   * INVALID for one named twice, POLICY_UNMET naming each disk's head when they differ.
   */
  groupHead(disks: readonly string[]): string {
    const byHead = new Map<string, string[]>();
    for (const d of disks) {
      const vd = this.coord.disk(d);
      if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${d}" not found`);
      if ([...byHead.values()].some((names) => names.includes(d))) throw new EngineError(EngineErrorCode.INVALID, `Disk "${d}" is named twice`);
      const head = vd.record.chain[0]?.node ?? '(none)';
      byHead.set(head, [...(byHead.get(head) ?? []), d]);
    }
    if (byHead.size > 1) {
      const who = [...byHead].map(([node, names]) => `${node} heads ${names.join(', ')}`).join('; ');
      throw new ClusterError(ClusterErrorCode.POLICY_UNMET, `disks ${disks.join(', ')} have different heads (${who}): a snapshot or backup of several disks runs at the one node that heads them all`);
    }
    return [...byHead.keys()][0];
  }

  /**
   * One snapshot of several disks this node heads, at one cut across them, on every replica
   * (ReplicatedDisks.snapshotGroup). Checked first, so that a refusal takes no snapshot at all:
   * the name, and none of the disks has a snapshot of that name. Resolves to the snapshots as
   * this node's store holds them, in the order of `disks`.
   */
  async snapshotGroup(disks: readonly string[], name: string): Promise<SnapshotInfo[]> {
    checkName('snapshot', name);
    this.groupHead(disks);
    for (const d of disks) {
      if (this.#store.listSnapshots(d).some((s) => s.name === name)) throw new EngineError(EngineErrorCode.EXISTS, `Disk "${d}" has a snapshot named "${name}" already`);
    }
    await this.disks.snapshotGroup(disks, name);
    return disks.map((d) => this.#store.listSnapshots(d).find((s) => s.name === name)!);
  }

  /** Whether this node holds a healthy replica of the disk (in its chain, not copying in). */
  holdsHealthy(name: string): boolean {
    return this.coord.disk(name)?.record.chain.some((e) => e.node === this.coord.nodeId && e.state === 'healthy') ?? false;
  }

  /** The API address of the disk's head, or null when this node is its head (or it has none). */
  headApi(name: string): string | null {
    const vd = this.coord.disk(name);
    const head = vd?.record.chain[0]?.node;
    if (head === undefined || head === this.coord.nodeId) return null;
    return this.coord.nodes().find((n) => n.id === head)?.api ?? null;
  }

  /** The volume a client of this node gets for a disk. */
  openVolume(disk: string, snap: string | null): Volume {
    if (snap !== null) return this.#store.openVolume(disk, snap);
    return this.disks.openVolume(disk);
  }

  async close(): Promise<void> {
    if (this.#rttTimer !== null) clearTimeout(this.#rttTimer);
    await this.#controller?.close();
    await this.disks.close();
    await this.#server.close();
    await this.#pool.close();
  }
}

/** Another node's part in the cluster, from its API (`cluster` of GET /api/v1/node), or null when it does not answer. */
async function remoteState(api: string): Promise<NodeClusterState | null> {
  try {
    const res = await fetch(`http://${api}/api/v1/node`, { signal: AbortSignal.timeout(1000) });
    if (res.status !== 200) {
      await res.body?.cancel();
      return null;
    }
    return ((await res.json()) as { cluster?: NodeClusterState | null }).cluster ?? null;
  } catch {
    return null;
  }
}
