/**
 * A node's part in every replicated disk (docs/cluster.md, "Replication: the chain" and
 * "Failure, catch-up and rebuild"): for each disk record that names this node, a copy in the
 * node's own store and a ChainReplica; as head, the owner key, the members configured and a sync
 * snapshot at each epoch; as a replica copying in, the copy from the healthy ones; for every
 * disk, the volume a client gets here (the head's own, or a gateway to the head). The peer
 * handlers of the chain, gateway and copy families live here too.
 */
import { EngineError, EngineErrorCode } from '../engine/index.ts';
import { BufferPool } from '../flow/index.ts';
import type { Store, Volume } from '../engine/index.ts';
import type { Logger } from '../observe/index.ts';
import { ClusterError, ClusterErrorCode } from './errors.ts';
import type { Coordinator, VersionedDisk } from './coord/coordinator.ts';
import { ChainReplica } from './chain/replica.ts';
import type { ChainConfig, ChainTransport, Hold } from './chain/replica.ts';
import { EngineReplicaStore } from './chain/engine-store.ts';
import { ReplicatedVolume } from './chain/volume.ts';
import { GatewayVolume } from './chain/gateway.ts';
import type { GatewayHost, HeadView } from './chain/gateway.ts';
import type { ChainOp, OpMessage } from './chain/ops.ts';
import { MessageType } from './peer/index.ts';
import type { DiskView, IoBody, IoReply, OpBody, PeerPool, PeerReply, PeerRequest, PeerServer } from './peer/index.ts';
import type { DiskRecord } from './types.ts';
import { CopyRegistry } from './copies.ts';

/** The prefix of the sync snapshots heads put through their chains; users cannot take these names. */
export const SYNC_PREFIX = 'tessera-sync-';

/** The sync snapshot of an epoch: its first (`n` 0) at the epoch's start, later ones every sync interval. */
export function syncName(epoch: number, n = 0): string {
  return n === 0 ? `${SYNC_PREFIX}${epoch}` : `${SYNC_PREFIX}${epoch}.${n}`;
}

/** The epoch a sync snapshot was taken in. */
export function syncEpoch(name: string): number {
  return Number(name.slice(SYNC_PREFIX.length).split('.')[0]);
}

/** How often a head takes a sync snapshot of a disk written since the last (`serve --sync-interval`). */
export const syncIntervalMsDefault = 60_000;

/** Whether a snapshot name is reserved for the cluster (hidden from listings, refused to users). */
export function reservedSnapshot(name: string): boolean {
  return name.startsWith('tessera-');
}

/** How often a node tries again to delete a copy it must drop and could not (one still open). */
export const dropRetryMs = 2000;

/** A copy of a disk this node must delete (its disk deleted, or its replica placed elsewhere) and has not yet. */
export interface CopyToDrop {
  disk: string;
  /** Why it goes: `the disk was deleted`, or `this node holds no replica of it any more`. */
  reason: string;
  /** What refused the last try (e.g. the copy is open), or null before the first. */
  error: string | null;
  /** When this node learnt the copy must go, ms since the epoch. */
  sinceMs: number;
}

/** A disk this node holds a replica of. */
interface Held {
  name: string;
  local: EngineReplicaStore;
  replica: ChainReplica;
  /** The epoch this node serves clients at as head (members configured, owner key held); null when it does not. */
  servingEpoch: number | null;
  /** The epoch it joined at as a replica copying in (its local copy prepared), or null. */
  joinedEpoch: number | null;
  /** A copy in running. */
  copying: Promise<void> | null;
  /**
   * The base the local copy went back to when it joined, or null when it had none and starts
   * empty (a wiped or new node): then only a full copy makes it whole, whatever the record says.
   */
  joinedBase: string | null;
  /** Sync snapshots taken in the serving epoch, and the head's op count at the last one. */
  syncs: number;
  syncedAtOps: number;
  syncing: boolean;
  /** The record of a newer epoch whose sync snapshot was asked while one ran: it follows. */
  syncNext: DiskRecord | null;
  /** The volume requests from gateways go through at the head, opened at the first and kept. */
  gateway?: ReplicatedVolume;
}

/** Options of ReplicatedDisks. */
export interface ReplicatedDisksOptions {
  nodeId: string;
  store: Store;
  coord: Coordinator;
  pool: PeerPool;
  log: Logger;
  /** The hybrid logical clock, stamped on requests. */
  hlc: () => bigint;
  /** Bytes a second a copy in reads at most (`--rebuild-rate`). */
  copyBytesPerSecond?: number;
  /** How often a head takes a sync snapshot of a disk written since the last (`--sync-interval`). */
  syncIntervalMs?: number;
  /** The copies this node made as a member (DIR/cluster/copies); default: in memory only. */
  copies?: CopyRegistry;
}

const COPY_CHUNK_BYTES = 1024 * 1024;
const COPY_PARALLEL = 4;

/** Every replicated disk as this node takes part in it. */
export class ReplicatedDisks {
  readonly #o: ReplicatedDisksOptions;
  readonly #held = new Map<string, Held>();
  /** The head's copies of its clients' writes, reused once the chain lets go of them. */
  readonly #writes = new BufferPool({ pooledBytesMax: 64 * 1024 * 1024 });
  /** Snapshot reads a copying replica asked for, reused once the answer is written. */
  readonly #reads = new BufferPool({ pooledBytesMax: 16 * 1024 * 1024 });
  /** Per disk, the reconcile running (they are serialized per disk). */
  readonly #reconciling = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  /** The group snapshot running (one at a time: a replica takes one hold at a time). */
  #groups: Promise<void> = Promise.resolve();
  #closed = false;
  #syncTimer: NodeJS.Timeout | null = null;
  /** Bytes copied in from other replicas, and sync points taken as head, since the start. */
  #copiedBytes = 0;
  #syncPoints = 0;
  /** Copies to delete, by disk: noted as the change that dooms them is seen, gone once deleted. */
  readonly #drops = new Map<string, CopyToDrop>();
  #dropTimer: NodeJS.Timeout | null = null;
  readonly #onDisk = (name: string): void => {
    // Noted in the turn the change is seen, so that a node whose cache is past that change lists
    // the copy among its copies to drop until it is deleted (Replication.deleteDisk waits on that).
    const why = this.#dropReason(name);
    if (why !== null && !this.#drops.has(name) && this.#hasCopy(name)) this.#drops.set(name, { disk: name, reason: why, error: null, sinceMs: Date.now() });
    this.reconcile(name);
  };

  readonly #copies: CopyRegistry;

  constructor(opts: ReplicatedDisksOptions) {
    this.#o = opts;
    this.#copies = opts.copies ?? CopyRegistry.open(null);
  }

  /** Registers the peer handlers of the chain, gateway and copy families on `server`. */
  register(server: PeerServer): void {
    server.handle(MessageType.CONFIGURE, (req) => this.#onConfigure(req));
    server.handle(MessageType.OP, (req) => this.#onOp(req));
    server.handle(MessageType.IO, (req) => this.#onIo(req));
    server.handle(MessageType.EXTENTS, (req) => this.#onExtents(req));
    server.handle(MessageType.READ_SNAP, (req) => this.#onReadSnap(req));
  }

  /** Takes part in every disk record known now and later (the node has joined: it holds a lease). */
  start(): void {
    // Sync points every interval, so a replica that leaves catches up by the recent changes only.
    this.#syncTimer = setInterval(() => this.#periodicSyncs(), this.#o.syncIntervalMs ?? syncIntervalMsDefault).unref();
    this.#o.coord.on('disk', this.#onDisk);
    // Copies this node made whose disk was deleted, or placed elsewhere, while it was down: no
    // record change would name them now. Those the records still give it are noted (a store
    // from before the registry), so they are found too if that changes while it is down.
    for (const name of this.#copies.names()) {
      if (!this.#hasCopy(name)) this.#copies.remove(name);
      else if (this.#dropReason(name) !== null) this.#onDisk(name);
    }
    for (const d of this.#o.coord.disks()) {
      const name = d.record.name;
      if (this.#dropReason(name) === null && this.#hasCopy(name)) this.#copies.add(name);
      this.reconcile(name);
    }
    // A copy that could not be deleted (a client or a backup still has it open) is tried again
    // until it goes: nothing else would bring its disk's name back to a reconcile.
    this.#dropTimer = setInterval(() => {
      for (const c of this.#drops.values()) this.reconcile(c.disk);
    }, dropRetryMs).unref();
  }

  /** The copies this node must delete and has not yet (docs/cluster.md, "How a node runs it"). */
  copiesToDrop(): CopyToDrop[] {
    return [...this.#drops.values()].map((c) => ({ ...c }));
  }

  /** Why this node's copy of a disk must go as its record stands now, or null when it stays. */
  #dropReason(name: string): string | null {
    const r = this.#o.coord.disk(name)?.record;
    if (r === undefined) return 'the disk was deleted';
    const me = this.#o.nodeId;
    // Away, the copy is the base of a later catch-up.
    return r.chain.some((e) => e.node === me) || r.away.some((a) => a.node === me) ? null : 'this node holds no replica of it any more';
  }

  /** Whether this node's store holds a disk of that name (asked at every disk record change: no listing, no space count). */
  #hasCopy(name: string): boolean {
    try {
      this.#o.store.listSnapshots(name);
      return true;
    } catch (err) {
      if (err instanceof EngineError && err.code === EngineErrorCode.NOT_FOUND) return false;
      throw err;
    }
  }

  /**
   * Deletes this node's copy of a disk it must drop. Refused (open by a client of this node, or
   * a backup), it stays among the copies to drop, logged at the first refusal, and is tried again
   * every dropRetryMs.
   */
  async #dropCopy(name: string, reason: string): Promise<void> {
    const was = this.#drops.get(name);
    if (!this.#hasCopy(name)) {
      this.#drops.delete(name);
      this.#copies.remove(name);
      return;
    }
    try {
      await this.#o.store.deleteDisk(name);
    } catch (err) {
      if (!(err instanceof EngineError)) throw err;
      if (was?.error == null) this.#o.log.warn(`disk ${name}: its copy here is not deleted (${reason}): ${err.message}; trying again every ${dropRetryMs / 1000} s`, { disk: name });
      this.#drops.set(name, { disk: name, reason, error: err.message, sinceMs: was?.sinceMs ?? Date.now() });
      return;
    }
    this.#drops.delete(name);
    this.#copies.remove(name);
    const late = was?.error != null ? `, ${((Date.now() - was.sinceMs) / 1000).toFixed(1)} s after the first try` : '';
    this.#o.log.info(`disk ${name}: its copy here is deleted (${reason})${late}`, { disk: name });
  }

  /** What this node does in the cluster's disks, for its metrics. */
  stats(): { heads: number; replicas: number; copyingIn: number; copiedBytes: number; syncPoints: number } {
    let heads = 0;
    let copyingIn = 0;
    for (const h of this.#held.values()) {
      if (this.isHead(h.name)) heads++;
      if (h.replica.copyingIn) copyingIn++;
    }
    return { heads, replicas: this.#held.size, copyingIn, copiedBytes: this.#copiedBytes, syncPoints: this.#syncPoints };
  }

  /** The gate's view of a disk here (PeerServerOptions.disks). */
  view(name: string): DiskView | null {
    const h = this.#held.get(name);
    if (h === undefined) return null;
    return { sizeBytes: h.local.volume.sizeBytes, epoch: h.replica.epoch, head: h.servingEpoch !== null && h.servingEpoch === h.replica.epoch };
  }

  /** Whether this node serves `disk` as its head now. */
  isHead(disk: string): boolean {
    const h = this.#held.get(disk);
    return h !== undefined && h.servingEpoch !== null && h.servingEpoch === h.replica.epoch;
  }

  /** The volume a client of this node gets for a disk of the cluster: the head's own, or a gateway. */
  openVolume(disk: string): Volume {
    const vd = this.#o.coord.disk(disk);
    if (vd === null) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${disk}" not found`);
    const h = this.#held.get(disk);
    if (h !== undefined && vd.record.chain[0]?.node === this.#o.nodeId) {
      return this.#headVolume(disk, h.replica);
    }
    return new GatewayVolume(disk, this.#gatewayHost());
  }

  /**
   * Whether the record as this node knows it names it the disk's head (a paused head learns it
   * was replaced before its replica is reconfigured). Past its lease a head still serves, under
   * the checks of ReplicatedVolume.
   */
  #named(disk: string): boolean {
    return this.#o.coord.disk(disk)?.record.chain[0]?.node === this.#o.nodeId;
  }

  /** A snapshot of a disk, read here if this node holds it, else at the head. */
  openSnapshot(disk: string, snap: string): Volume {
    return this.#o.store.openVolume(disk, snap);
  }

  /** Puts a changing op through the disk's chain at its head (snapshots, reverts, resizes, deletes). */
  async submit(disk: string, op: ChainOp): Promise<void> {
    const h = this.#held.get(disk);
    if (h === undefined || !this.isHead(disk)) throw new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.#o.nodeId} is not the head of ${disk}`);
    await h.replica.submit(op);
  }

  /**
   * One snapshot `name` of several disks this node heads, put through each disk's chain so every
   * replica has it, at one cut across the disks (docs/cluster.md, "Group snapshots"): every op
   * submitted at these heads from the moment the holds close waits until each disk's snapshot op
   * has its place in its stream, so an op in any of the snapshots was submitted before the cut,
   * and every write acknowledged before the cut is in all of them. One group at a time per node.
   * If a disk's snapshot fails, the ones taken are deleted again and the error is thrown.
   */
  async snapshotGroup(disks: readonly string[], name: string): Promise<void> {
    const prior = this.#groups;
    let done!: () => void;
    this.#groups = new Promise<void>((resolve) => (done = resolve));
    await prior;
    try {
      await this.#snapshotGroup(disks, name);
    } finally {
      done();
    }
  }

  async #snapshotGroup(disks: readonly string[], name: string): Promise<void> {
    const heads = (): Held[] => disks.map((d) => {
      const h = this.#held.get(d);
      if (h === undefined || !this.isHead(d) || h.replica.role !== 'head') throw new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.#o.nodeId} is not the head of ${d}`);
      return h;
    });
    // A client's snapshot waits while a replica of its disk copies in (the copy would miss it):
    // wait for every disk first, and close the holds only in a turn when none does, so the
    // group's ops never wait for a copy while every disk's clients wait for them.
    let hs = heads();
    for (let busy = hs.find((h) => h.replica.barriersWait); busy !== undefined; busy = hs.find((h) => h.replica.barriersWait)) {
      await busy.replica.barriersOpen();
      hs = heads();
    }
    const holds: Hold[] = hs.map((h) => h.replica.hold());
    const release = (): void => holds.forEach((x) => x.release());
    let taken = 0;
    const allTaken = (): void => {
      if (++taken === hs.length) release();
    };
    const ops = hs.map((h, i) => h.replica.submit({ kind: 'snapshot', name }, { hold: holds[i], taken: allTaken }));
    // Released once every snapshot op has its id, or as soon as one fails.
    const results = await Promise.allSettled(ops.map((p) => p.catch((err: unknown) => {
      release();
      throw err;
    })));
    release();
    const failed = results.find((r) => r.status === 'rejected');
    if (failed === undefined) return;
    for (const [i, r] of results.entries()) {
      if (r.status === 'fulfilled') await hs[i].replica.submit({ kind: 'snapshot-delete', name }).catch(() => {});
    }
    throw failed.reason;
  }

  /** Takes part in a disk as its record says now; runs after any reconcile of it still running. */
  reconcile(name: string): void {
    if (this.#closed) return;
    if (this.#reconciling.has(name)) {
      this.#again.add(name);
      return;
    }
    const run = this.#reconcile(name)
      .catch((err: unknown) => this.#o.log.warn(`disk ${name}: ${(err as Error).message}`, { disk: name }))
      .finally(() => {
        this.#reconciling.delete(name);
        if (this.#again.delete(name)) this.reconcile(name);
      });
    this.#reconciling.set(name, run);
  }

  async #reconcile(name: string): Promise<void> {
    const me = this.#o.nodeId;
    const vd = this.#o.coord.disk(name);
    let held = this.#held.get(name);
    if (vd === null) {
      // Deleted: the replica goes, and the local copy with it.
      if (held !== undefined) await this.#letGo(held, 'the disk was deleted');
      await this.#dropCopy(name, 'the disk was deleted');
      return;
    }
    const r = vd.record;
    const ids = r.chain.map((e) => e.node);
    const entry = r.chain.find((e) => e.node === me);
    if (held !== undefined) {
      // Fenced (docs/cluster.md, "Epochs, ownership and fencing"): out of the chain; or a head at
      // an older epoch that another node heads now, whose unacknowledged ops must fail rather than
      // count as done downstream; or a replica back from away (healthy when it left, or copying in
      // then: `since` is newer than its join), whose copy must go back to its base before it takes
      // the stream. The copy stays, as the base of a later catch-up.
      const why =
        entry === undefined ? `not in the chain of epoch ${r.epoch}`
        : held.servingEpoch !== null && ids[0] !== me ? `${ids[0]} heads it at epoch ${r.epoch}`
        : entry.state !== 'healthy' && held.joinedEpoch === null ? `it rejoins at epoch ${r.epoch}, ${entry.state}`
        : entry.state !== 'healthy' && (entry.since ?? 0) > held.joinedEpoch! ? `it left while copying in and rejoins at epoch ${entry.since}, ${entry.state}`
        : null;
      if (why !== null) {
        await this.#letGo(held, why);
        held = undefined;
      }
    }
    if (entry === undefined) {
      // Out of the chain: the copy stays as the base of a later catch-up while the record lists
      // this node away, else (moved elsewhere, drained, forgotten) it is deleted.
      if (!r.away.some((a) => a.node === me)) await this.#dropCopy(name, 'this node holds no replica of it any more');
      return;
    }
    const stale = this.#drops.get(name);
    if (stale !== undefined) {
      if (held === undefined && entry.state === 'healthy' && this.#hasCopy(name)) {
        // Named healthy while an old copy waits to be deleted: a new disk of that name (a disk
        // starts healthy; a replica placed here again copies in over the old copy instead). It
        // must not read the old disk's data: the old copy goes first.
        await this.#dropCopy(name, stale.reason);
        if (this.#drops.has(name)) throw new ClusterError(ClusterErrorCode.REPLICA_IO, `${me} holds an older copy named ${name} that it cannot delete yet (${this.#drops.get(name)!.error}); it takes part in the new disk once that copy is deleted`);
      } else {
        // The copy stays: this node takes part again (copying in over it as it joins).
        this.#drops.delete(name);
      }
    }
    let h = held;
    if (entry.state !== 'healthy' && h === undefined) {
      // Joining to copy in: a fresh replica over a copy prepared first (no volume open on it).
      const joinedBase = await this.#prepareJoin(r, entry.base ?? null);
      h = await this.#hold(r);
      h.joinedEpoch = r.epoch;
      h.joinedBase = joinedBase;
    }
    h ??= await this.#hold(r);
    if (entry.state === 'healthy') h.joinedEpoch = null;
    if (h.replica.epoch < r.epoch) h.replica.configure(this.#config(r));
    if (ids[0] === me && h.servingEpoch !== r.epoch) await this.#becomeHead(h, vd);
    if (entry.state !== 'healthy' && h.copying === null) {
      h.copying = this.#copyIn(h, h.joinedBase).finally(() => (h.copying = null));
    }
  }

  /** The chain config of a record. */
  #config(r: DiskRecord): ChainConfig {
    return { epoch: r.epoch, chain: r.chain.map((e) => e.node), catchingUp: r.chain.filter((e) => e.state !== 'healthy').map((e) => e.node) };
  }

  /** Opens (creating if missing) this node's copy of a disk and its replica. */
  async #hold(r: DiskRecord): Promise<Held> {
    const store = this.#o.store;
    if (!store.listDisks().some((d) => d.name === r.name)) {
      if (r.origin !== null) {
        // A clone is placed where its origin is: each replica clones its own copy of the snapshot, nothing moves.
        const [disk, snap] = r.origin.split('@');
        if (!store.listSnapshots(disk).some((s) => s.name === snap)) throw new ClusterError(ClusterErrorCode.DISK_NOT_FOUND, `disk ${r.name} is a clone of ${r.origin}, which this node does not hold`);
        this.#copies.add(r.name);
        await store.cloneDisk(disk, snap, r.name);
      } else {
        this.#copies.add(r.name);
        await store.createDisk(r.name, r.sizeBytes);
      }
    }
    const existing = this.#held.get(r.name);
    if (existing !== undefined) return existing;
    const local = new EngineReplicaStore(store, r.name);
    const replica = new ChainReplica({
      disk: r.name,
      node: this.#o.nodeId,
      store: local,
      transport: this.#transport(),
      clock: this.#o.hlc,
      onTrouble: (t) => {
        if (t.kind === 'stale') this.reconcile(r.name);
        else if (t.kind === 'failed') this.#o.log.warn(`disk ${r.name}: ${t.successor} could not apply an op: ${t.error.message}`, { disk: r.name });
      },
    });
    const h: Held = { name: r.name, local, replica, servingEpoch: null, joinedEpoch: null, copying: null, joinedBase: null, syncs: 0, syncedAtOps: 0, syncing: false, syncNext: null };
    this.#held.set(r.name, h);
    return h;
  }

  /**
   * Before a replica copying in takes its first op: its copy goes back to `base` (a sync
   * snapshot it shares with the healthy replicas), dropping what it had past it; without one it
   * starts empty (a full copy then writes every byte of the disk, so a copy that cannot be
   * deleted, still open somewhere, only loses its snapshots). Resolves to the base it went back
   * to, or null.
   */
  async #prepareJoin(r: DiskRecord, base: string | null): Promise<string | null> {
    const store = this.#o.store;
    const exists = store.listDisks().some((d) => d.name === r.name);
    const snaps = exists ? store.listSnapshots(r.name).map((s) => s.name) : [];
    let reverted: string | null = null;
    if (base !== null && snaps.includes(base)) {
      await store.revertDisk(r.name, base);
      reverted = base;
    } else if (exists) {
      try {
        await store.deleteDisk(r.name);
      } catch {
        for (const s of snaps) await store.deleteSnapshot(r.name, s);
      }
    }
    if (!store.listDisks().some((d) => d.name === r.name)) {
      this.#copies.add(r.name);
      await store.createDisk(r.name, r.sizeBytes);
    }
    if (store.getDisk(r.name).sizeBytes !== r.sizeBytes) await store.resizeDisk(r.name, r.sizeBytes);
    // Without the base here (a wiped or new node), only a full copy makes it whole.
    return reverted;
  }

  /**
   * Stops taking part as `h`: its pending ops fail (a client of this node as head gets EIO), a
   * copy in stops, and once every local apply queued has finished the copy is left as it is.
   */
  async #letGo(h: Held, why: string): Promise<void> {
    if (h.servingEpoch !== null || h.replica.pendingOps > 0) this.#o.log.info(`disk ${h.name}: fenced at epoch ${h.replica.epoch}: ${why}`, { disk: h.name });
    h.replica.fence(why);
    this.#drop(h);
    await h.copying?.catch(() => {});
    await h.replica.settled();
  }

  /** The head's volume of a disk, serving while this node heads it (docs/cluster.md, "Leases and liveness"). */
  #headVolume(disk: string, replica: ChainReplica): ReplicatedVolume {
    return new ReplicatedVolume(replica, this.#o.store.openVolume(disk), { leaseValid: () => this.#o.coord.leaseValid(), named: () => this.#named(disk), pool: this.#writes });
  }

  #drop(h: Held): void {
    h.gateway?.close();
    h.replica.close();
    h.local.close();
    this.#held.delete(h.name);
  }

  /**
   * Becomes the head at the record's epoch: takes the owner key (waiting while an old head's lease
   * lasts), configures every member, tail first, then serves, and puts the epoch's sync snapshot
   * through the chain.
   */
  async #becomeHead(h: Held, vd: VersionedDisk): Promise<void> {
    const r = vd.record;
    const me = this.#o.nodeId;
    const still = (): boolean => {
      const now = this.#o.coord.disk(r.name);
      return !this.#closed && now !== null && now.record.epoch === r.epoch && now.record.chain[0]?.node === me;
    };
    for (;;) {
      if (!still()) return;
      const { taken, owner } = await this.#o.coord.takeOwner(r.name, r.epoch);
      if (taken || owner?.node === me) break;
      await pause(500);
    }
    const cfg = this.#config(r);
    for (const node of [...cfg.chain].reverse()) {
      if (node === me) continue;
      for (let attempt = 0; ; attempt++) {
        if (!still()) return;
        try {
          await this.#o.pool.request(node, MessageType.CONFIGURE, { disk: r.name, epoch: r.epoch, rev: this.#o.coord.revision, hlc: this.#o.hlc(), chain: [...cfg.chain], sizeBytes: r.sizeBytes, catchingUp: [...(cfg.catchingUp ?? [])] });
          break;
        } catch (err) {
          if (attempt % 10 === 0) this.#o.log.info(`disk ${r.name}: waiting for ${node} to take epoch ${r.epoch}: ${(err as Error).message}`, { disk: r.name });
          await pause(200);
        }
      }
    }
    if (h.replica.epoch < r.epoch) h.replica.configure(cfg);
    h.servingEpoch = r.epoch;
    h.syncs = 0;
    this.#o.log.info(`disk ${r.name}: head at epoch ${r.epoch}, chain ${cfg.chain.join(' > ')}`, { disk: r.name });
    // Not awaited: the snapshot may need the next reconcile of this disk to complete (a replica
    // that took a newer epoch refuses it until this head is configured at that epoch and resends it).
    this.#syncInBackground(h, r, true);
  }

  #syncInBackground(h: Held, r: DiskRecord, epoch: boolean): void {
    this.#takeSync(h, r, epoch).catch((err: unknown) => this.#o.log.warn(`disk ${r.name}: sync point not recorded: ${(err as Error).message}`, { disk: r.name }));
  }

  /** A sync snapshot of each disk this node heads that was written since its last one. */
  #periodicSyncs(): void {
    for (const h of this.#held.values()) {
      const vd = this.#o.coord.disk(h.name);
      if (vd === null || h.syncing || !this.isHead(h.name) || h.replica.submitted === h.syncedAtOps) continue;
      // Not while a replica copies in: its source is the record's sync point, which a new one would delete.
      if (vd.record.chain.some((e) => e.state !== 'healthy')) continue;
      this.#syncInBackground(h, vd.record, false);
    }
  }

  /** Puts a sync snapshot through the chain, then drops sync snapshots nobody needs and names it in the record. */
  async #takeSync(h: Held, r: DiskRecord, epoch: boolean): Promise<void> {
    if (h.syncing) {
      // An epoch's own sync point is never skipped: a replica copying in waits for it.
      if (epoch) h.syncNext = r;
      return;
    }
    h.syncing = true;
    try {
      for (let next: DiskRecord | null = r; next !== null; next = h.syncNext, h.syncNext = null) {
        if (this.#held.get(h.name) !== h || h.servingEpoch !== next.epoch) continue;
        await this.#takeSyncNow(h, next);
      }
    } finally {
      h.syncing = false;
    }
  }

  async #takeSyncNow(h: Held, r: DiskRecord): Promise<void> {
    const name = syncName(r.epoch, h.syncs++);
    const ops = h.replica.submitted;
    try {
      await h.replica.submit({ kind: 'snapshot', name }, { internal: true });
    } catch (err) {
      this.#o.log.warn(`disk ${r.name}: sync snapshot ${name} not taken: ${(err as Error).message}`, { disk: r.name });
      return;
    }
    h.syncedAtOps = ops + 1;
    this.#syncPoints++;
    const keep = new Set<string>([name]);
    for (const e of r.chain) if (e.base !== undefined) keep.add(e.base);
    for (const a of r.away) if (a.base !== null) keep.add(a.base);
    for (const s of this.#o.store.listSnapshots(r.name)) {
      if (!s.name.startsWith(SYNC_PREFIX) || keep.has(s.name)) continue;
      await h.replica.submit({ kind: 'snapshot-delete', name: s.name }, { internal: true }).catch(() => {});
    }
    // The record names the newest sync point, for the base of a replica that leaves later.
    for (let attempt = 0; attempt < 5; attempt++) {
      const now = this.#o.coord.disk(r.name);
      if (now === null || now.record.epoch !== r.epoch || now.record.sync === name) return;
      try {
        await this.#o.coord.updateDisk({ ...now.record, sync: name }, now.modRevision);
        return;
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.CONFLICT) throw err;
      }
    }
  }

  /**
   * Copies this replica's data in from the healthy replicas' newest sync snapshot: the ranges
   * changed since `base`, or everything without one; then says so in the record (healthy, a new
   * epoch). Runs again from the start if a source or the sync point goes away meanwhile.
   */
  async #copyIn(h: Held, base: string | null): Promise<void> {
    const name = h.name;
    for (let attempt = 0; !this.#closed && this.#held.get(name) === h; attempt++) {
      const vd = this.#o.coord.disk(name);
      const entry = vd?.record.chain.find((e) => e.node === this.#o.nodeId);
      if (vd === null || entry === undefined || entry.state === 'healthy') return;
      const r = vd.record;
      const sources = r.chain.filter((e) => e.state === 'healthy').map((e) => e.node);
      // A sync snapshot the head took after this replica joined: the record's, once it is of a later epoch.
      const sync = r.sync;
      if (sync === null || h.joinedEpoch === null || syncEpoch(sync) < h.joinedEpoch || sources.length === 0) {
        await pause(200);
        continue;
      }
      try {
        const started = performance.now();
        const { copied, full } = await this.#copyFrom(h, r, sources, sync, base);
        await h.local.volume.flush();
        h.replica.copyInDone();
        const s = (performance.now() - started) / 1000;
        this.#o.log.info(`disk ${name}: copied in ${copied} bytes from ${sources.join(', ')} (${full ? 'full copy' : `changes since ${base}`}) in ${s.toFixed(2)} s, ${(copied / s / 1e6).toFixed(1)} MB/s`, { disk: name });
        await this.#markHealthy(name);
        return;
      } catch (err) {
        if (attempt % 5 === 0) this.#o.log.info(`disk ${name}: copy in from ${sync} interrupted, starting again: ${(err as Error).message}`, { disk: name });
        await pause(500);
      }
    }
  }

  /** The copy itself: ranges dealt round-robin to the sources, a few at a time. Resolves to the bytes copied, and whether it was a full copy. */
  async #copyFrom(h: Held, r: DiskRecord, sources: string[], sync: string, base: string | null): Promise<{ copied: number; full: boolean }> {
    const ask = (node: string, offset: number, length: number, since: string | null) =>
      this.#o.pool.request(node, MessageType.EXTENTS, { disk: r.name, epoch: r.epoch, rev: this.#o.coord.revision, hlc: this.#o.hlc(), snapshot: sync, since, offset, length });
    // What to copy: the ranges changed since base, or all of the disk (allocated ranges as data, the rest as zeroes).
    const size = r.sizeBytes;
    const first = sources[0];
    let ranges: Array<[number, number, boolean]>;
    const changed = base === null ? null : (await ask(first, 0, size, base)).body.extents;
    const allocated = (await ask(first, 0, size, null)).body.extents;
    // Too much changed since the base (more than half of what the disk holds): a full copy reads
    // less than the changes would, block for block, and is as right (it writes every byte).
    const total = (xs: Array<[number, number]>): number => xs.reduce((n, [, l]) => n + l, 0);
    const full = !(changed !== null && total(changed) <= total(allocated) / 2);
    if (!full) {
      ranges = changed.map(([o, l]) => [o, l, true]);
    } else {
      if (changed !== null) this.#o.log.info(`disk ${r.name}: ${total(changed)} bytes changed since ${base}, more than half of the ${total(allocated)} the disk holds: a full copy instead`, { disk: r.name });
      ranges = [];
      let at = 0;
      for (const [o, l] of allocated) {
        if (o > at) ranges.push([at, o - at, false]);
        ranges.push([o, l, true]);
        at = o + l;
      }
      if (at < size) ranges.push([at, size - at, false]);
    }
    const chunks: Array<[number, number, boolean]> = [];
    for (const [o, l, data] of ranges) {
      if (!data) chunks.push([o, l, false]);
      else for (let a = o; a < o + l; a += COPY_CHUNK_BYTES) chunks.push([a, Math.min(COPY_CHUNK_BYTES, o + l - a), true]);
    }
    let next = 0;
    let copied = 0;
    const rate = this.#o.copyBytesPerSecond ?? 100 * 1024 * 1024;
    const started = performance.now();
    const worker = async (w: number): Promise<void> => {
      for (let i = next++; i < chunks.length; i = next++) {
        const [offset, length, data] = chunks[i];
        if (!data) {
          await h.replica.copyIn(offset, length, null);
          continue;
        }
        const source = sources[(i + w) % sources.length];
        const res = await this.#o.pool.request(source, MessageType.READ_SNAP, { disk: r.name, epoch: r.epoch, rev: this.#o.coord.revision, hlc: this.#o.hlc(), snapshot: sync, offset, length });
        try {
          await h.replica.copyIn(offset, length, res.payload ?? Buffer.alloc(length));
        } finally {
          res.release();
        }
        copied += length;
        this.#copiedBytes += length;
        // The rate limit: no faster than `rate` on average since the start.
        const ahead = (copied / rate) * 1000 - (performance.now() - started);
        if (ahead > 0) await pause(ahead);
      }
    };
    await Promise.all(Array.from({ length: COPY_PARALLEL }, (_, w) => worker(w)));
    return { copied, full };
  }

  /** Marks this node's entry healthy in the record, at a new epoch. */
  async #markHealthy(name: string): Promise<void> {
    for (;;) {
      const vd = this.#o.coord.disk(name);
      if (vd === null) return;
      const r = vd.record;
      if (!r.chain.some((e) => e.node === this.#o.nodeId && e.state !== 'healthy')) return;
      const chain = r.chain.map((e) => (e.node === this.#o.nodeId ? { node: e.node, state: 'healthy' as const } : e));
      // Healthy replicas first, in their order: the head stays the head.
      chain.sort((a, b) => Number(a.state !== 'healthy') - Number(b.state !== 'healthy'));
      try {
        const rev = await this.#o.coord.updateDisk({ ...r, epoch: r.epoch + 1, chain }, vd.modRevision);
        await this.#o.coord.reach(rev).catch(() => {});
        return;
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.CONFLICT) throw err;
      }
    }
  }

  #transport(): ChainTransport {
    return {
      forward: async (node: string, msg: OpMessage) => {
        const { op } = msg;
        const scoped = { disk: msg.disk, epoch: msg.epoch, rev: this.#o.coord.revision, hlc: this.#o.hlc(), id: [msg.id[0], msg.id[1]] as [number, number], prev: msg.prev === null ? null : ([msg.prev[0], msg.prev[1]] as [number, number]), restart: msg.restart };
        if (op.kind === 'write') {
          await this.#o.pool.request(node, MessageType.OP, { ...scoped, kind: 'write', offset: op.offset, fua: op.fua }, op.data);
        } else {
          await this.#o.pool.request(node, MessageType.OP, { ...scoped, ...op } as OpBody);
        }
      },
    };
  }

  #gatewayHost(): GatewayHost {
    return {
      head: (disk): HeadView | null => {
        const vd = this.#o.coord.disk(disk);
        const head = vd?.record.chain[0];
        return vd === null || head === undefined ? null : { node: head.node, epoch: vd.record.epoch, sizeBytes: vd.record.sizeBytes, rev: this.#o.coord.revision };
      },
      gone: (disk) => this.#o.coord.disk(disk) === null,
      io: async (node, body, payload) => {
        if (node === this.#o.nodeId) return this.#io({ ...body, hlc: this.#o.hlc() } as IoBody, payload);
        const res = await this.#o.pool.request(node, MessageType.IO, { ...body, hlc: this.#o.hlc() } as IoBody, payload ?? undefined);
        return { body: res.body, payload: res.payload };
      },
      pause,
    };
  }

  // Peer handlers. What the engine refuses becomes REPLICA_IO with the engine's code; the rest of
  // the cluster's errors go as they are.

  async #onConfigure(req: PeerRequest<typeof MessageType.CONFIGURE>): Promise<PeerReply<typeof MessageType.CONFIGURE>> {
    const b = req.body;
    // The head's cache may be ahead of ours: catch up with its view of the disk's record, then
    // take part as the record says. Only the record: a revision a shared etcd's other prefixes
    // moved would otherwise keep this waiting for a change of this cluster's keys.
    await this.#o.coord.reachDisk(b.disk, b.rev, 5000).catch(() => {});
    this.reconcile(b.disk);
    await this.#reconciling.get(b.disk);
    const h = this.#held.get(b.disk);
    if (h === undefined) throw new ClusterError(ClusterErrorCode.DISK_NOT_FOUND, `${this.#o.nodeId} holds no replica of ${b.disk} at epoch ${b.epoch}`);
    if (h.replica.epoch < b.epoch) {
      await wrapEngine(() => Promise.resolve(h.replica.configure({ epoch: b.epoch, chain: b.chain, catchingUp: b.catchingUp ?? [] })));
    }
    if (h.replica.epoch > b.epoch) throw new ClusterError(ClusterErrorCode.STALE_EPOCH, `${b.disk}: epoch ${b.epoch} is older than ${h.replica.epoch} on ${this.#o.nodeId}`, { current: h.replica.epoch });
    const last = h.replica.lastId;
    return { body: { lastId: last === null ? null : [last[0], last[1]] } };
  }

  async #onOp(req: PeerRequest<typeof MessageType.OP>): Promise<PeerReply<typeof MessageType.OP>> {
    const b = req.body;
    const h = this.#held.get(b.disk);
    if (h === undefined) throw new ClusterError(ClusterErrorCode.DISK_NOT_FOUND, `${this.#o.nodeId} holds no replica of ${b.disk}`);
    const op = opOf(b, req.payload);
    // The payload's pooled memory goes back once the chain lets go of it, not when this answers.
    const release = op.kind === 'write' ? req.claim() : undefined;
    await wrapEngine(() => h.replica.receive({ disk: b.disk, epoch: b.epoch, id: b.id, prev: b.prev, restart: b.restart, op }, release));
    return { body: { disk: b.disk, epoch: b.epoch, id: b.id } };
  }

  async #onIo(req: PeerRequest<typeof MessageType.IO>): Promise<PeerReply<typeof MessageType.IO>> {
    return this.#io(req.body, req.payload);
  }

  async #io(b: IoBody, payload: Buffer | null): Promise<{ body: IoReply; payload: Buffer | null }> {
    if (!this.isHead(b.disk)) throw new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.#o.nodeId} is not the head of ${b.disk} now`);
    const h = this.#held.get(b.disk)!;
    h.gateway ??= this.#headVolume(h.name, h.replica);
    const v = h.gateway;
    return wrapEngine(async () => {
      switch (b.kind) {
        case 'read':
          return { body: {}, payload: await v.read(b.offset, b.length) };
        case 'write':
          await v.write(b.offset, payload!, { fua: b.fua });
          return { body: {}, payload: null };
        case 'zero':
          await v.writeZeroes(b.offset, b.length, { fua: b.fua, mayTrim: b.mayTrim });
          return { body: {}, payload: null };
        case 'trim':
          await v.trim(b.offset, b.length, { fua: b.fua });
          return { body: {}, payload: null };
        case 'flush':
          await v.flush();
          return { body: {}, payload: null };
        case 'block-status': {
          const runs = await v.blockStatus(b.offset, b.length);
          return { body: { allocation: runs.map((e) => [e.offset, e.length, (e.hole ? 1 : 0) | (e.zero ? 2 : 0)] as [number, number, number]) }, payload: null };
        }
        case 'changed-since': {
          const runs = await v.changedSince(b.snapshot, b.offset, b.length);
          return { body: { changes: runs.map((e) => [e.offset, e.length, e.changed ? 1 : 0] as [number, number, number]) }, payload: null };
        }
      }
    });
  }

  async #onExtents(req: PeerRequest<typeof MessageType.EXTENTS>): Promise<PeerReply<typeof MessageType.EXTENTS>> {
    const b = req.body;
    return wrapEngine(async () => {
      const v = this.#o.store.openVolume(b.disk, b.snapshot);
      try {
        const extents: Array<[number, number]> = [];
        const end = Math.min(b.offset + b.length, v.sizeBytes);
        if (b.since === null) {
          for (const e of await v.blockStatus(b.offset, end - b.offset)) if (!e.hole) extents.push([e.offset, e.length]);
        } else {
          for (const e of await v.changedSince(b.since, b.offset, end - b.offset)) if (e.changed) extents.push([e.offset, e.length]);
        }
        return { body: { extents } };
      } finally {
        v.close();
      }
    });
  }

  async #onReadSnap(req: PeerRequest<typeof MessageType.READ_SNAP>): Promise<PeerReply<typeof MessageType.READ_SNAP>> {
    const b = req.body;
    return wrapEngine(async () => {
      const v = this.#o.store.openVolume(b.disk, b.snapshot);
      // Read into pooled memory, given back once the answer is written.
      const buf = this.#reads.take(b.length);
      try {
        const payload = await v.read(b.offset, b.length, buf.subarray(0, b.length));
        return { payload, release: () => this.#reads.give(buf) };
      } catch (err) {
        this.#reads.give(buf);
        throw err;
      } finally {
        v.close();
      }
    });
  }

  /** Stops taking part: replicas close (their pending ops fail), copies stop. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#syncTimer !== null) clearInterval(this.#syncTimer);
    if (this.#dropTimer !== null) clearInterval(this.#dropTimer);
    this.#o.coord.off('disk', this.#onDisk);
    await Promise.all([...this.#reconciling.values()]);
    for (const h of [...this.#held.values()]) this.#drop(h);
  }
}

/** The chain op a request carries: its body without the fields every chain request has, a write's data added. */
function opOf(b: OpBody, payload: Buffer | null): ChainOp {
  const { disk: _disk, epoch: _epoch, rev: _rev, hlc: _hlc, id: _id, prev: _prev, restart: _restart, ...op } = b;
  // No copy of a write's data: the payload is a view of the frame's body, which the parser
  // filled for this frame alone and nothing reuses until the chain releases it (a copy was a
  // third of the middle's and tail's CPU time).
  return op.kind === 'write' ? { ...op, data: payload! } : op;
}

/** Runs `fn`; an EngineError becomes REPLICA_IO carrying the engine's code (a peer answers only ClusterErrors). */
async function wrapEngine<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof EngineError) throw new ClusterError(ClusterErrorCode.REPLICA_IO, err.message, { cause: err, engine: err.code });
    throw err;
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
