/**
 * A node's part in the cluster through etcd (docs/cluster.md): the cluster record and its secret,
 * the node's lease and membership, the cache of the cluster's keys, the disk records and their
 * owners, and the controller election. Nothing here runs per I/O.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Lease } from 'etcd3';
import { Logger } from '../../observe/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import type { RttLookup } from '../placement.ts';
import { parseRttRecord, rttFromRecords } from '../rtt.ts';
import type { ClusterRecord, DiskRecord, LiveRecord, MemberRecord, OwnerRecord, RttRecord } from '../types.ts';
import { ClusterCache } from './cache.ts';
import type { CacheEntry } from './cache.ts';
import { EtcdClient } from './etcd.ts';
import type { EtcdRequestCounts } from './etcd.ts';
import { checkNodeId, etcdPrefixDefault, Keys } from './keys.ts';

/** Seconds a node's lease lives without a keep-alive unless `--lease-ttl` says otherwise. */
export const leaseTtlSDefault = 10;
/** How long a node tries to reach etcd at start before it gives up. */
export const connectTimeoutMsDefault = 5000;
/** How often `P/live/ID` is rewritten with the node's capacity, use and load. */
export const liveIntervalMsDefault = 30_000;
/** A candidate of rank R waits R times this before campaigning, so the best ranked usually wins. */
export const campaignDelayMsPerRank = 500;
/** The cluster secret's length in bytes. */
export const secretBytes = 32;
/** Slack taken off the lease's TTL when the node counts its own lease valid (docs/cluster.md, "Leases and liveness"). */
const leaseSlackMs = 1000;
/** Wait between two tries of re-granting a lost lease. */
const rejoinRetryMs = 1000;

/** Options of Coordinator.connect. */
export interface CoordinatorOptions {
  /** etcd client URLs (`--etcd`). */
  etcd: readonly string[];
  /** The node's id (`--node-id`). */
  nodeId: string;
  /** Key prefix (`--etcd-prefix`); default `/tessera/`. */
  prefix?: string;
  /** Lease TTL in seconds (`--lease-ttl`); default 10. */
  leaseTtlS?: number;
  /** The cluster secret the node was given (`--cluster-secret-file`), or none: take the cluster's, or make one. */
  secret?: Buffer | null;
  /** Bound on reaching etcd at start; default 5 s. */
  connectTimeoutMs?: number;
  /** Interval of the `P/live/ID` rewrite; default 30 s. */
  liveIntervalMs?: number;
  /** Keys a page of the cache's load of `P/` holds at most; default 500 (tests force fewer). */
  loadPageKeys?: number;
  log?: Logger;
}

/** What a node publishes of itself when it joins. */
export interface JoinOptions {
  zone: string;
  /** `HOST:PORT` each, as advertised. */
  api: string;
  nbd: string;
  peer: string;
  /** The Tessera version it runs. */
  version: string;
  /** Peer protocol versions it speaks. */
  protocol: [number, number];
  /** Its capacity, use and load now, for `P/live/ID`. */
  usage: () => { capacityBytes: number; usedBytes: number; load: number };
  /** Its hybrid logical clock now, for `P/live/ID`; default the wall clock in ms. */
  hlc?: () => string;
  /** Its rank as a controller candidate (0 first); asked before each campaign. Default 0. */
  rank?: () => number;
}

/** One node as `cluster status` shows it. */
export interface NodeView {
  id: string;
  state: 'up' | 'down';
  zone: string;
  api: string;
  nbd: string;
  peer: string;
  controller: boolean;
  capacityBytes: number;
  usedBytes: number;
}

/** A disk record with the revision it was last written at (what a change compares). */
export interface VersionedDisk {
  record: DiskRecord;
  modRevision: number;
}

/** What the coordinator tells the rest of the node. */
export interface CoordinatorEvents {
  'member-up': [id: string];
  'member-down': [id: string];
  disk: [name: string, disk: VersionedDisk | null];
  /** This node became (true) or stopped being (false) the controller. */
  'controller-change': [isController: boolean];
  /** The node's lease was lost (expired while it was paused or cut off); it joins again. */
  'lease-lost': [];
  /** The node joined (again) with a new lease. */
  joined: [leaseId: string];
}

/** The node's coordinator: connect (cluster record, cache), then join (lease, membership, election). */
export class Coordinator extends EventEmitter<CoordinatorEvents> {
  /** The node's id. */
  readonly nodeId: string;
  /** The cluster's id (from `P/cluster`). */
  readonly clusterId: string;
  /** The peer secret, 32 bytes. */
  readonly secret: Buffer;
  /** The lease TTL in seconds. */
  readonly leaseTtlS: number;
  /** The cluster's keys. */
  readonly keys: Keys;
  readonly #etcd: EtcdClient;
  readonly #cache: ClusterCache;
  readonly #log: Logger;
  readonly #liveIntervalMs: number;
  #join: JoinOptions | null = null;
  #lease: Lease | null = null;
  #leaseId: string | null = null;
  /** Leases this process held before the current one: a live key under one of them is its own. */
  #formerLeases = new Set<string>();
  #registered = false;
  /**
   * The revision of the node's last (re)join: until its cache has seen it, a node whose lease was
   * lost does not count its new lease valid, so that a head paused past its lease learns what
   * changed meanwhile (its disk moved to another head) before it serves anything.
   */
  #joinRevision = Infinity;
  #startedMs = Date.now();
  #joinedMs: number | null = null;
  /** Monotonic ms (performance.now()) of the send of the last keep-alive etcd answered. */
  #lastKeepAliveOkMs = -Infinity;
  #liveTimer: NodeJS.Timeout | null = null;
  #campaignTimer: NodeJS.Timeout | null = null;
  #isController = false;
  #rejoining: Promise<void> | null = null;
  #closed = false;

  private constructor(o: { nodeId: string; cluster: ClusterRecord; leaseTtlS: number; keys: Keys; etcd: EtcdClient; cache: ClusterCache; log: Logger; liveIntervalMs: number }) {
    super();
    this.nodeId = o.nodeId;
    this.clusterId = o.cluster.id;
    this.secret = Buffer.from(o.cluster.secret, 'base64');
    this.leaseTtlS = o.leaseTtlS;
    this.keys = o.keys;
    this.#etcd = o.etcd;
    this.#cache = o.cache;
    this.#log = o.log;
    this.#liveIntervalMs = o.liveIntervalMs;
    const c = this.#cache;
    c.on('member-up', (id) => this.emit('member-up', id));
    c.on('member-down', (id) => this.emit('member-down', id));
    c.on('disk', (name, e) => this.emit('disk', name, e === null ? null : versioned(e)));
    c.on('change', () => this.#checkController());
    c.on('resumed', () => this.#checkController());
  }

  /**
   * Reaches etcd (trying for `connectTimeoutMs`), loads the cluster's keys into the cache and
   * follows them, and takes the cluster record: creates it when this is the first node, or
   * checks that the secret given matches it.
   */
  static async connect(opts: CoordinatorOptions): Promise<Coordinator> {
    const nodeId = checkNodeId(opts.nodeId);
    const leaseTtlS = opts.leaseTtlS ?? leaseTtlSDefault;
    if (!Number.isInteger(leaseTtlS) || leaseTtlS < 2 || leaseTtlS > 3600) throw new ClusterError(ClusterErrorCode.INVALID, `invalid lease TTL ${leaseTtlS}: expected a whole number of seconds from 2 to 3600`);
    if (opts.secret != null && opts.secret.length !== secretBytes) throw new ClusterError(ClusterErrorCode.INVALID, `the cluster secret must be ${secretBytes} bytes, not ${opts.secret.length}`);
    if (opts.etcd.length === 0) throw new ClusterError(ClusterErrorCode.INVALID, 'no etcd URL given');
    const keys = new Keys(opts.prefix ?? etcdPrefixDefault);
    const log = (opts.log ?? Logger.silent()).child({ component: 'cluster' });
    const etcd = await EtcdClient.open(opts.etcd);
    let cache: ClusterCache;
    try {
      cache = new ClusterCache({ etcd, keys, log, pageKeys: opts.loadPageKeys });
    } catch (err) {
      etcd.close();
      throw err;
    }
    try {
      await loadWithin(cache, opts.connectTimeoutMs ?? connectTimeoutMsDefault, opts.etcd);
      const cluster = await takeClusterRecord({ etcd, cache, keys, secret: opts.secret ?? null });
      cache.follow();
      log.info(`connected to etcd: cluster ${cluster.id} under ${keys.root}`, { revision: cache.revision });
      return new Coordinator({ nodeId, cluster, leaseTtlS, keys, etcd, cache, log, liveIntervalMs: opts.liveIntervalMs ?? liveIntervalMsDefault });
    } catch (err) {
      await cache.close();
      etcd.close();
      throw err;
    }
  }

  /** etcd requests made so far, by kind. */
  get requests(): Readonly<EtcdRequestCounts> {
    return this.#etcd.requests;
  }

  /** The cache's revision: the cluster-map version. */
  get revision(): number {
    return this.#cache.revision;
  }

  /** The cache of the cluster's keys (read-only use). */
  get cache(): ClusterCache {
    return this.#cache;
  }

  /** Whether this node is the controller now. */
  get isController(): boolean {
    return this.#isController;
  }

  /** The controller's node id, or null while there is none. */
  get controller(): string | null {
    return this.#cache.controller;
  }

  /** The current lease's id, or null before joining and while re-joining. */
  get leaseId(): string | null {
    return this.#registered ? this.#leaseId : null;
  }

  /**
   * Until when (monotonic ms, as performance.now()) the node counts its lease valid:
   * `lastKeepAliveOk + TTL − 1 s`. Past it, a head must stop serving (docs/cluster.md).
   */
  leaseValidUntilMs(): number {
    return this.#lastKeepAliveOkMs + this.leaseTtlS * 1000 - leaseSlackMs;
  }

  /** Whether the node's own lease is valid by its monotonic clock. */
  leaseValid(): boolean {
    return this.#registered && this.#cache.revision >= this.#joinRevision && performance.now() < this.leaseValidUntilMs();
  }

  /**
   * Joins: takes a lease, writes `P/members/ID` and `P/live/ID` in one transaction (refused with
   * NODE_LIVE when the id is live under another lease), keeps the lease alive, rewrites
   * `P/live/ID` every 30 s and campaigns for controller after `rank × 500 ms`.
   */
  async join(opts: JoinOptions): Promise<void> {
    if (this.#join !== null) throw new Error('join() called twice');
    this.#join = opts;
    this.#joinedMs = this.#cache.json<MemberRecord>(`members/${this.nodeId}`)?.joinedMs ?? Date.now();
    await this.#register();
    this.#liveTimer = setInterval(() => void this.#rewriteLive(), this.#liveIntervalMs).unref();
  }

  /** Every member, up or down, by id. */
  nodes(): NodeView[] {
    const controller = this.#cache.controller;
    return this.#cache.under('members/').flatMap((e) => {
      const m = parse<MemberRecord>(e);
      if (m === undefined) return [];
      const live = this.#cache.json<LiveRecord>(`live/${m.id}`);
      return [{
        id: m.id,
        state: live === undefined ? 'down' : 'up',
        zone: m.zone,
        api: m.api,
        nbd: m.nbd,
        peer: m.peer,
        controller: controller === m.id,
        capacityBytes: live?.capacityBytes ?? 0,
        usedBytes: live?.usedBytes ?? 0,
      } satisfies NodeView];
    });
  }

  /** Every member record with its revision, up or down. */
  members(): Array<{ record: MemberRecord; modRevision: number; up: boolean; live: LiveRecord | null }> {
    return this.#cache.under('members/').flatMap((e) => {
      const m = parse<MemberRecord>(e);
      if (m === undefined) return [];
      const live = this.#cache.json<LiveRecord>(`live/${m.id}`) ?? null;
      return [{ record: m, modRevision: e.modRevision, up: live !== null, live }];
    });
  }

  /** Marks a member draining (`node drain`): NODE_NOT_FOUND for an unknown id; CONFLICT when another change won. */
  async drainMember(id: string): Promise<void> {
    const m = this.members().find((x) => x.record.id === id);
    if (m === undefined) throw new ClusterError(ClusterErrorCode.NODE_NOT_FOUND, `no node ${id} in the cluster`);
    if (m.record.state === 'draining') return;
    const key = this.keys.member(id);
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Mod', value: m.modRevision }], success: [{ put: key, value: JSON.stringify({ ...m.record, state: 'draining' }) }], failure: [{ get: key }] });
    if (!r.succeeded) throw this.#conflict(`member ${id}`, m.modRevision, r.gets[0] ?? null);
    await this.#cache.reach(r.revision).catch(() => {});
  }

  /** Forgets a member (`node rm`): its member record goes; the caller checked it holds nothing. */
  async removeMember(id: string): Promise<void> {
    const m = this.members().find((x) => x.record.id === id);
    if (m === undefined) throw new ClusterError(ClusterErrorCode.NODE_NOT_FOUND, `no node ${id} in the cluster`);
    const key = this.keys.member(id);
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Mod', value: m.modRevision }], success: [{ delete: key }], failure: [{ get: key }] });
    if (!r.succeeded) throw this.#conflict(`member ${id}`, m.modRevision, r.gets[0] ?? null);
    await this.#cache.reach(r.revision).catch(() => {});
  }

  /** A disk record from the cache, or null. */
  disk(name: string): VersionedDisk | null {
    const e = this.#cache.get(`disks/${name}`);
    return e === undefined ? null : versioned(e);
  }

  /** Every disk record in the cache, by name. */
  disks(): VersionedDisk[] {
    return this.#cache.under('disks/').map(versioned);
  }

  /** Creates a disk record; DISK_EXISTS when one has the name. Resolves to its revision. */
  async createDisk(record: DiskRecord): Promise<number> {
    const key = this.keys.disk(record.name);
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Create', value: 0 }], success: [{ put: key, value: JSON.stringify(record) }] });
    if (!r.succeeded) throw new ClusterError(ClusterErrorCode.DISK_EXISTS, `disk ${record.name} exists in the cluster`);
    return r.revision;
  }

  /**
   * Writes a disk record if it is still at `modRevision`; CONFLICT when another change won.
   * `dropOwner` deletes `P/owners/NAME` in the same transaction (a lease broken by an operator:
   * the old owner's key, its lease still alive, must not keep the new head waiting).
   */
  async updateDisk(record: DiskRecord, modRevision: number, opts: { dropOwner?: boolean } = {}): Promise<number> {
    const key = this.keys.disk(record.name);
    const success = [{ put: key, value: JSON.stringify(record) }, ...(opts.dropOwner === true ? [{ delete: this.keys.owner(record.name) }] : [])];
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Mod', value: modRevision }], success, failure: [{ get: key }] });
    if (!r.succeeded) throw this.#conflict(record.name, modRevision, r.gets[0] ?? null);
    return r.revision;
  }

  /** Deletes a disk record if it is still at `modRevision`; CONFLICT when another change won. */
  async deleteDisk(name: string, modRevision: number): Promise<number> {
    const key = this.keys.disk(name);
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Mod', value: modRevision }], success: [{ delete: key }], failure: [{ get: key }] });
    if (!r.succeeded) throw this.#conflict(name, modRevision, r.gets[0] ?? null);
    return r.revision;
  }

  /**
   * Takes `P/owners/NAME` for this node at `epoch` if nobody holds it (under this node's lease,
   * so it goes with the node). Resolves to whether it was taken and who holds it now.
   */
  async takeOwner(name: string, epoch: number): Promise<{ taken: boolean; owner: OwnerRecord | null }> {
    const lease = this.leaseId;
    if (lease === null) throw new ClusterError(ClusterErrorCode.NOT_HEAD, `cannot take disk ${name}: node ${this.nodeId} holds no lease now`);
    const key = this.keys.owner(name);
    const mine: OwnerRecord = { node: this.nodeId, epoch };
    const r = await this.#etcd.txn({ compare: [{ key, target: 'Create', value: 0 }], success: [{ put: key, value: JSON.stringify(mine), lease }], failure: [{ get: key }] });
    if (r.succeeded) return { taken: true, owner: mine };
    const kv = r.gets[0] ?? null;
    return { taken: false, owner: kv === null ? null : (JSON.parse(kv.value.toString()) as OwnerRecord) };
  }

  /**
   * The owner of a disk as the cache holds it (`P/owners/NAME`), with the seconds its lease has
   * left, asked of etcd (one request; null when there is no owner or its lease is gone).
   */
  async owner(name: string): Promise<{ owner: OwnerRecord | null; ttlSeconds: number | null }> {
    const e = this.#cache.get(`owners/${name}`);
    const owner = e === undefined ? null : (parse<OwnerRecord>(e) ?? null);
    if (e === undefined || owner === null || e.lease === '0') return { owner, ttlSeconds: null };
    return { owner, ttlSeconds: await this.#etcd.leaseTtl(e.lease) };
  }

  /** Resolves once the cache has seen revision `revision` (e.g. of a change this node made). */
  reach(revision: number, timeoutMs?: number): Promise<void> {
    return this.#cache.reach(revision, timeoutMs);
  }

  /**
   * Resolves once the cache holds disk `name`'s record as etcd had it at revision `revision` or
   * later (ClusterCache.reachKey): at most one etcd range when the cache is behind `revision`.
   */
  reachDisk(name: string, revision: number, timeoutMs?: number): Promise<void> {
    return this.#cache.reachKey(`disks/${name}`, revision, timeoutMs);
  }

  /** Leaves: stops the timers, revokes the lease (the node is down at once), closes the client. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#liveTimer !== null) clearInterval(this.#liveTimer);
    if (this.#campaignTimer !== null) clearTimeout(this.#campaignTimer);
    this.#setController(false);
    const lease = this.#lease;
    this.#lease = null;
    this.#registered = false;
    if (lease !== null) {
      lease.removeAllListeners('lost');
      await this.#etcd.revoke(lease).catch((err) => this.#log.warn(`could not revoke the node's lease; its keys go when it expires: ${(err as Error).message}`));
    }
    await this.#cache.close();
    this.#etcd.close();
  }

  /** Takes a lease and writes the member and live keys in one transaction, then campaigns. */
  async #register(): Promise<void> {
    const j = this.#join!;
    const askedMs = performance.now();
    const lease = this.#etcd.lease(this.leaseTtlS);
    let leaseId: string;
    try {
      leaseId = await lease.grant();
    } catch (err) {
      lease.release();
      throw this.#etcd.unavailable(err, 'a lease grant');
    }
    this.#lease = lease;
    this.#leaseId = leaseId;
    this.#lastKeepAliveOkMs = askedMs;
    let firedMs = askedMs;
    lease.on('keepaliveFired', () => (firedMs = performance.now()));
    lease.on('keepaliveSucceeded', () => (this.#lastKeepAliveOkMs = firedMs));
    lease.on('lost', (err) => this.#onLeaseLost(lease, err));

    const member: MemberRecord = { id: this.nodeId, zone: j.zone, api: j.api, nbd: j.nbd, peer: j.peer, state: this.#cache.json<MemberRecord>(`members/${this.nodeId}`)?.state ?? 'active', joinedMs: this.#joinedMs! };
    const memberKey = this.keys.member(this.nodeId);
    const liveKey = this.keys.live(this.nodeId);
    const puts = [{ put: memberKey, value: JSON.stringify(member) }, { put: liveKey, value: JSON.stringify(this.#liveRecord()), lease: leaseId }];
    // A live key or candidate key left under a lease this process held before is its own: replace them.
    const former = [...this.#formerLeases].map((id) => ({ delete: this.keys.candidate(id) }));
    try {
      let r = await this.#etcd.txn({ compare: [{ key: liveKey, target: 'Version', value: 0 }], success: [...puts, ...former], failure: [{ get: liveKey }] });
      const holder = r.gets[0] ?? null;
      if (!r.succeeded && holder !== null && (holder.lease === leaseId || this.#formerLeases.has(holder.lease))) {
        r = await this.#etcd.txn({ compare: [{ key: liveKey, target: 'Mod', value: holder.modRevision }], success: [...puts, ...former], failure: [{ get: liveKey }] });
      }
      if (!r.succeeded) throw this.#liveElsewhere(r.gets[0] ?? null);
      this.#joinRevision = r.revision;
      this.#registered = true;
      await this.#cache.reach(r.revision).catch(() => {});
    } catch (err) {
      lease.removeAllListeners('lost');
      await this.#etcd.revoke(lease).catch(() => {});
      this.#lease = null;
      throw err;
    }
    this.#log.info(`joined the cluster as ${this.nodeId}`, { lease: leaseId, ttlS: this.leaseTtlS });
    this.emit('joined', leaseId);
    this.#scheduleCampaign();
  }

  /** NODE_LIVE, naming where the live node serves and since when. */
  #liveElsewhere(holder: { value: Buffer } | null): ClusterError {
    const live = holder === null ? undefined : (JSON.parse(holder.value.toString()) as LiveRecord);
    const api = this.#cache.json<MemberRecord>(`members/${this.nodeId}`)?.api ?? '?';
    const since = live === undefined ? '?' : new Date(live.startedMs).toISOString();
    return new ClusterError(ClusterErrorCode.NODE_LIVE, `node ${this.nodeId} is already live in the cluster (api=${api}, since ${since})`);
  }

  #conflict(name: string, expected: number, now: { modRevision: number } | null): ClusterError {
    const state = now === null ? 'deleted' : `at revision ${now.modRevision}`;
    return new ClusterError(ClusterErrorCode.CONFLICT, `disk ${name} changed meanwhile: expected revision ${expected}, it is ${state}`);
  }

  #liveRecord(): LiveRecord {
    const j = this.#join!;
    const u = j.usage();
    return { id: this.nodeId, startedMs: this.#startedMs, version: j.version, protocol: j.protocol, capacityBytes: u.capacityBytes, usedBytes: u.usedBytes, load: u.load, hlc: j.hlc?.() ?? String(Date.now()) };
  }

  /**
   * Publishes this node's summary of round trips (`P/rtt/ID`, under its lease): one put.
   * Resolves to whether it was put (not while the node holds no lease).
   */
  async publishRtt(record: RttRecord): Promise<boolean> {
    const lease = this.leaseId;
    if (lease === null || this.#closed) return false;
    await this.#etcd.put(this.keys.rtt(this.nodeId), JSON.stringify(record), lease);
    return true;
  }

  /** This node's `P/rtt/ID` as the cache holds it under its current lease, or null (none yet, or it went with a lease lost). */
  publishedRtt(): RttRecord | null {
    const e = this.#cache.get(`rtt/${this.nodeId}`);
    if (e === undefined || this.leaseId === null || e.lease !== this.leaseId) return null;
    return parseRttRecord(e.text) ?? null;
  }

  /** Every node's published round trips by zone: node → record. A malformed or older record counts as none. */
  rtts(): Record<string, RttRecord> {
    const out: Record<string, RttRecord> = {};
    for (const e of this.#cache.under('rtt/')) {
      const record = parseRttRecord(e.text);
      if (record !== undefined) out[e.key.slice(e.key.lastIndexOf('/') + 1)] = record;
    }
    return out;
  }

  /** The round trip between two members from the published records (rttFromRecords), for placement. */
  rttLookup(): RttLookup {
    const zones = new Map(this.members().map((m) => [m.record.id, m.record.zone]));
    return rttFromRecords(this.rtts(), (id) => zones.get(id));
  }

  async #rewriteLive(): Promise<void> {
    const lease = this.leaseId;
    if (lease === null || this.#closed) return;
    try {
      await this.#etcd.put(this.keys.live(this.nodeId), JSON.stringify(this.#liveRecord()), lease);
    } catch (err) {
      this.#log.debug(`could not rewrite the live record: ${(err as Error).message}`);
    }
  }

  #scheduleCampaign(): void {
    const rank = Math.max(0, Math.floor(this.#join!.rank?.() ?? 0));
    const leaseId = this.#leaseId!;
    this.#campaignTimer = setTimeout(() => {
      this.#campaignTimer = null;
      void this.#campaign(leaseId);
    }, rank * campaignDelayMsPerRank);
    this.#campaignTimer.unref();
  }

  /**
   * Puts this node's candidate key under its own lease: etcd's election recipe (the keys etcd3's
   * `Election` writes), with the node's lease rather than a second one, so that campaigning
   * costs one transaction and no keep-alives. The oldest candidate key is the controller.
   */
  async #campaign(leaseId: string): Promise<void> {
    const key = this.keys.candidate(leaseId);
    while (!this.#closed && this.#leaseId === leaseId && this.#registered) {
      try {
        await this.#etcd.txn({ kind: 'election', compare: [{ key, target: 'Create', value: 0 }], success: [{ put: key, value: this.nodeId, lease: leaseId }] });
        return;
      } catch (err) {
        this.#log.debug(`campaign failed, trying again: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, rejoinRetryMs));
      }
    }
  }

  #checkController(): void {
    const leader = this.#cache.leaderEntry();
    this.#setController(!this.#closed && this.#registered && leader !== null && leader.lease === this.#leaseId && leader.text === this.nodeId);
  }

  #setController(on: boolean): void {
    if (on === this.#isController) return;
    this.#isController = on;
    this.#log.info(on ? 'this node is the controller' : 'this node is no longer the controller');
    this.emit('controller-change', on);
  }

  /** The lease expired (or etcd was out of reach past it): join again with a new one. */
  #onLeaseLost(lease: Lease, err: Error): void {
    if (this.#closed || lease !== this.#lease) return;
    this.#log.warn(`the node's lease was lost (${err.message}); joining again`);
    this.#registered = false;
    this.#joinRevision = Infinity;
    this.#formerLeases.add(this.#leaseId!);
    this.#lease = null;
    if (this.#campaignTimer !== null) clearTimeout(this.#campaignTimer);
    this.#checkController();
    this.emit('lease-lost');
    // etcd may still hold it (it was out of reach, not expired): let it go, best effort.
    void this.#etcd.revoke(lease).catch(() => {});
    this.#rejoining ??= (async () => {
      while (!this.#closed && !this.#registered) {
        try {
          await this.#register();
        } catch (e) {
          this.#log.debug(`joining again failed: ${(e as Error).message}`);
          await new Promise((resolve) => setTimeout(resolve, rejoinRetryMs));
        }
      }
      this.#rejoining = null;
    })();
  }
}

function parse<T>(e: CacheEntry): T | undefined {
  try {
    return JSON.parse(e.text) as T;
  } catch {
    return undefined;
  }
}

/** Disk records parsed once per cache entry (a head asks for its record at every write), frozen since shared. */
const parsedDisks = new WeakMap<CacheEntry, VersionedDisk>();

function versioned(e: CacheEntry): VersionedDisk {
  let v = parsedDisks.get(e);
  if (v === undefined) {
    v = deepFreeze({ record: JSON.parse(e.text) as DiskRecord, modRevision: e.modRevision });
    parsedDisks.set(e, v);
  }
  return v;
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Loads the cache, trying again until `ms` passed; then ETCD_UNAVAILABLE naming the URLs tried. */
async function loadWithin(cache: ClusterCache, ms: number, urls: readonly string[]): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      await cache.load();
      return;
    } catch (err) {
      if (performance.now() + 250 >= deadline) {
        const why = ((err as ClusterError).cause as Error | undefined)?.message ?? (err as Error).message;
        throw new ClusterError(ClusterErrorCode.ETCD_UNAVAILABLE, `cannot reach etcd at ${urls.join(', ')} (tried for ${Math.round(ms / 1000)} s): ${why}`, { cause: err });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** The cluster record: created by the first node (put-if-absent), else read and checked against the secret given. */
async function takeClusterRecord(o: { etcd: EtcdClient; cache: ClusterCache; keys: Keys; secret: Buffer | null }): Promise<ClusterRecord> {
  let record = o.cache.json<ClusterRecord>('cluster');
  if (record === undefined) {
    const mine: ClusterRecord = { id: randomUUID(), createdMs: Date.now(), secret: (o.secret ?? randomBytes(secretBytes)).toString('base64') };
    const r = await o.etcd.txn({ compare: [{ key: o.keys.cluster, target: 'Create', value: 0 }], success: [{ put: o.keys.cluster, value: JSON.stringify(mine) }], failure: [{ get: o.keys.cluster }] });
    record = r.succeeded ? mine : (JSON.parse(r.gets[0]!.value.toString()) as ClusterRecord);
  }
  if (o.secret !== null && !Buffer.from(record.secret, 'base64').equals(o.secret)) {
    throw new ClusterError(ClusterErrorCode.AUTH_FAILED, `the cluster secret given does not match the secret of cluster ${record.id} under ${o.keys.root}`);
  }
  return record;
}
