/**
 * One node's part in one disk's chain (docs/cluster.md, "Replication: the chain"): as head it
 * takes ops from clients and gives them ids; as head or middle it forwards each op to its
 * successor as it arrives and applies it to its own copy; an op is done here when both are
 * done (the tail: when it is applied). Ops forwarded and not yet acknowledged stay pending and
 * are resent to whichever node follows this one after a chain change or a lost link, so a chain
 * change loses nothing acknowledged. No I/O of its own: the store and the transport are given.
 */
import assert from 'node:assert/strict';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { compareIds, idText, orderOf, payloadBytes } from './ops.ts';
import type { ChainOp, OpId, OpMessage } from './ops.ts';
import { OrderQueue } from './order.ts';
import { RangeSet } from './ranges.ts';

/** A replica's own copy of the disk. */
export interface ReplicaStore {
  /** The unit ops are ordered by (the engine's block). */
  readonly blockBytes: number;
  /** Applies an op to this copy; resolves once done (durable for a flush, or a write with fua). */
  apply(op: ChainOp): Promise<void>;
  /** Reads bytes of the copy (the head serves reads); `into` as Volume.read takes it. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
}

/** How a replica reaches the next node of a chain. */
export interface ChainTransport {
  /**
   * Sends an op to `node` and resolves once that node acknowledged it (it and every node after it
   * hold it). Sends to one node are delivered in call order while a connection lasts. Rejects with
   * a ClusterError: STALE_EPOCH (`current` set), PEER_UNAVAILABLE, OUT_OF_ORDER, or what the
   * receiver answered.
   */
  forward(node: string, msg: OpMessage): Promise<void>;
}

/** A chain as a disk record gives it. */
export interface ChainConfig {
  epoch: number;
  /** Node ids, head first. */
  chain: readonly string[];
  /**
   * Nodes of the chain still copying their data in (catching up or rebuilding, docs/cluster.md
   * "Failure, catch-up and rebuild"). A node configured as one of them for the first time joins
   * without the ops before: it takes the stream from the first (re)sending that reaches it, and
   * copies the rest in. While there are any, a head holds snapshots, reverts and resizes that
   * clients ask for (a replica copying in could not make them whole) until a configuration
   * without them.
   */
  catchingUp?: readonly string[];
}

/** What went wrong on the link to the successor, for the owner to act on. */
export interface LinkTrouble {
  disk: string;
  successor: string;
  /** `stale`: the successor holds a newer epoch (`current`); `unavailable`: the link is down; `failed`: it refused the op otherwise. */
  kind: 'stale' | 'unavailable' | 'failed';
  current: number | null;
  error: Error;
}

/** The role of this node in a disk's chain. */
export type ChainRole = 'head' | 'middle' | 'tail' | 'none';

/** Limits of a replica. */
export interface ReplicaLimits {
  /** Ops a head admits at once; beyond, submit waits (backpressure). */
  opsInFlightMax: number;
  /** Payload bytes a head admits at once. */
  bytesInFlightMax: number;
  /** Wait before resending to a successor that could not take an op. */
  retryMs: number;
}

/** Timers a replica uses (a simulation gives its own, for determinism). */
export interface ReplicaTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: ReplicaTimers = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Defaults: the peer protocol's in-flight limits (docs/cluster.md, "Limits"). */
export const replicaLimitsDefault: ReplicaLimits = { opsInFlightMax: 1024, bytesInFlightMax: 64 * 1024 * 1024, retryMs: 200 };

/** An op received or submitted and not yet done here. */
interface Pending {
  id: OpId;
  key: string;
  op: ChainOp;
  /** Resolves when the successor acknowledged it (at once when there is none). */
  ackDownstream: () => void;
  failDownstream: (err: Error) => void;
  downstreamSettled: boolean;
  done: Promise<void>;
  /** The local apply has finished (done or failed). */
  localSettled: boolean;
  /** Forwards of it whose transport promise has not settled: each may still hold its data. */
  sending: number;
  /** Called once nothing here uses the op's data any more (see Release). */
  release: Release | null;
}

/**
 * Told once nothing in a replica uses a write's data any more: applied here (or failed), settled
 * downstream, and every forward of it settled (a forward's frame may hold the data until then).
 * The owner of the data's memory gives it back then; an op that never gets there (a forward
 * stuck on a hung peer) leaves it to the garbage collector.
 */
export type Release = () => void;

/**
 * Ops held at a head's admission (ChainReplica.hold): a group snapshot's cut across several
 * disks. Only ops submitted with this hold pass it; `release()` lets the others go, in order.
 */
export interface Hold {
  release(): void;
}

/** A deferred promise, settled from outside. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** One node's replica of one disk in its chain. */
export class ChainReplica {
  readonly disk: string;
  readonly node: string;
  readonly #store: ReplicaStore;
  readonly #transport: ChainTransport;
  readonly #limits: ReplicaLimits;
  readonly #onTrouble: (t: LinkTrouble) => void;
  readonly #timers: ReplicaTimers;
  readonly #clock: (() => bigint) | null;
  readonly #queue = new OrderQueue();
  /** Ops not yet done here, in stream order (a Map keeps insertion order). */
  readonly #ops = new Map<string, Pending>();
  #epoch = 0;
  #chain: readonly string[] = [];
  #successor: string | null = null;
  /** Bumped at every configure: acknowledgements of forwards from an older one do not count. */
  #gen = 0;
  /** The last op id taken into the stream here (received, or assigned as head). */
  #last: OpId | null = null;
  /** The id of the op last sent to the successor, and whether the next send starts a (re)sending. */
  #lastSent: OpId | null = null;
  #restartNext = true;
  /** The next n a head assigns in its epoch. */
  #nextN = 1;
  #fenced: string | null = null;
  #submitted = 0;
  /** Copying in: the bytes live ops wrote since this replica joined, which copies must not overwrite. */
  #live: RangeSet | null = null;
  #catchingUp: readonly string[] = [];
  /** Configured as copying in, and not configured otherwise since. */
  #joining = false;
  /** Client barrier ops held while a replica of the chain copies in. */
  readonly #held: Array<() => void> = [];
  /** The hold that ops wait at before admission (ChainReplica.hold), and the submits waiting there. */
  #hold: Hold | null = null;
  readonly #holdWaiting: Array<() => void> = [];
  #retry: unknown = null;
  #closed = false;
  /** A head's admitted ops and bytes, and submits waiting for room, in order. */
  #inFlightOps = 0;
  #inFlightBytes = 0;
  readonly #waiting: Array<{ bytes: number; go: () => void }> = [];

  /**
   * `clock`: the node's hybrid logical clock; as head, it stamps each snapshot as the snapshot
   * enters the chain (docs/cluster.md, "Time"). Without one, snapshots go down unstamped.
   */
  constructor(opts: { disk: string; node: string; store: ReplicaStore; transport: ChainTransport; limits?: Partial<ReplicaLimits>; onTrouble?: (t: LinkTrouble) => void; timers?: ReplicaTimers; clock?: () => bigint }) {
    this.#timers = opts.timers ?? realTimers;
    this.#clock = opts.clock ?? null;
    this.disk = opts.disk;
    this.node = opts.node;
    this.#store = opts.store;
    this.#transport = opts.transport;
    this.#limits = { ...replicaLimitsDefault, ...opts.limits };
    this.#onTrouble = opts.onTrouble ?? (() => {});
  }

  /** The newest epoch accepted. */
  get epoch(): number {
    return this.#epoch;
  }

  /** This node's place in the chain as last configured. */
  get role(): ChainRole {
    const i = this.#chain.indexOf(this.node);
    if (i < 0 || this.#fenced !== null) return 'none';
    if (i === 0) return 'head';
    return i === this.#chain.length - 1 ? 'tail' : 'middle';
  }

  /** The last op id taken into the stream here. */
  get lastId(): OpId | null {
    return this.#last;
  }

  /** Ops a head took from clients and itself since it was made (sync snapshots count too). */
  get submitted(): number {
    return this.#submitted;
  }

  /** Ops not yet done here. */
  get pendingOps(): number {
    return this.#ops.size;
  }

  /**
   * Takes a new chain (an epoch not older than the one held; the same one again is a no-op):
   * from now on ops of older epochs are refused. Pending ops are resent to the new successor
   * (it skips those it has), or, with no successor any more, count as acknowledged downstream.
   */
  configure(cfg: ChainConfig): void {
    this.#assertOpen();
    if (cfg.epoch < this.#epoch) throw this.#stale(cfg.epoch);
    if (cfg.epoch === this.#epoch && sameChain(cfg.chain, this.#chain)) return;
    const newEpoch = cfg.epoch !== this.#epoch;
    this.#epoch = cfg.epoch;
    this.#chain = [...cfg.chain];
    this.#gen++;
    this.#fenced = null;
    this.#catchingUp = [...(cfg.catchingUp ?? [])];
    if (!this.#catchingUp.includes(this.node)) {
      this.#joining = false;
      this.#live = null;
    } else if (!this.#joining) {
      this.#joining = true;
      this.#last = null;
      this.#live = new RangeSet();
    }
    if (this.#catchingUp.length === 0) for (const go of this.#held.splice(0)) go();
    const i = this.#chain.indexOf(this.node);
    if (i < 0) {
      this.#fence(`not in the chain of epoch ${cfg.epoch}`);
      return;
    }
    // A head numbers its ops from 1 in each epoch; ids compare by epoch first.
    if (newEpoch) this.#nextN = 1;
    this.#successor = this.#chain[i + 1] ?? null;
    this.#clearRetry();
    if (this.#successor === null) {
      for (const p of this.#ops.values()) settleDownstream(p, null);
    } else {
      this.#resendAll();
    }
  }

  /**
   * An op from the predecessor. Resolves when it is done here and downstream (the acknowledgement);
   * rejects with STALE_EPOCH for an older epoch, OUT_OF_ORDER for a gap or an epoch not configured
   * yet. An op taken before is not applied again: its acknowledgement follows the first's.
   */
  receive(msg: OpMessage, release?: Release): Promise<void> {
    const result = this.#receive(msg, release);
    // Not taken (refused, or taken before): nothing here holds this message's data.
    if (result.taken !== true) release?.();
    return result.done;
  }

  #receive(msg: OpMessage, release: Release | undefined): { done: Promise<void>; taken?: true } {
    const refuse = (err: Error): { done: Promise<void> } => ({ done: Promise.reject(err) });
    if (this.#closed) return refuse(new ClusterError(ClusterErrorCode.CLOSED, `the replica of ${this.disk} on ${this.node} is closed`));
    if (msg.epoch < this.#epoch) return refuse(this.#stale(msg.epoch));
    if (msg.epoch > this.#epoch) return refuse(new ClusterError(ClusterErrorCode.OUT_OF_ORDER, `${this.disk}: epoch ${msg.epoch} is not configured on ${this.node} yet (it holds ${this.#epoch})`));
    if (this.role === 'head' || this.role === 'none') return refuse(new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.disk}: ${this.node} takes no ops from a predecessor in epoch ${this.#epoch} (role ${this.role})`));
    const last = this.#last;
    if (last !== null && compareIds(msg.id, last) <= 0) {
      return { done: this.#ops.get(idText(msg.id))?.done ?? Promise.resolve() };
    }
    if (!msg.restart && (last === null || msg.prev === null || compareIds(msg.prev, last) !== 0)) {
      const after = msg.prev === null ? 'nothing' : idText(msg.prev);
      return refuse(new ClusterError(ClusterErrorCode.OUT_OF_ORDER, `${this.disk}: op ${idText(msg.id)} comes after ${after}, but the last op ${this.node} took is ${last === null ? 'none' : idText(last)}`));
    }
    return { done: this.#take(msg.id, msg.op, release ?? null), taken: true };
  }

  /**
   * A client's op at the head: given the next id (a snapshot also its stamp, in the same turn, so
   * stamps rise with ids), forwarded and applied; resolves once every replica of the chain has it.
   * Waits while the head's in-flight limits are reached, and while a hold other than `hold` is
   * on (ChainReplica.hold). `release` is called once nothing here uses a write's data (Release),
   * at once if the op is refused; `taken` once the op has its place in the stream (its id).
   */
  async submit(op: ChainOp, opts: { internal?: boolean; release?: Release; hold?: Hold; taken?: () => void } = {}): Promise<void> {
    let release = opts.release ?? null;
    try {
      await this.#submit(op, opts, () => {
        const r = release;
        release = null;
        return r;
      });
    } finally {
      release?.();
    }
  }

  /** submit's work; `takeRelease` hands the op's Release over to the stream when it is taken. */
  async #submit(op: ChainOp, opts: { internal?: boolean; hold?: Hold; taken?: () => void }, takeRelease: () => Release | null): Promise<void> {
    this.#assertHead();
    // The head's own sync snapshot (`internal`) goes at once; a client's snapshot waits for copies in to end.
    while (opts.internal !== true && orderOf(op, this.#store.blockBytes).kind === 'barrier' && this.#catchingUp.length > 0) {
      await new Promise<void>((go) => this.#held.push(go));
      this.#assertHead();
    }
    // Checked in the same turn as the admission below, so an op that passes is admitted (and so
    // taken) ahead of the hold's own ops, which are submitted after it closed.
    while (this.#hold !== null && this.#hold !== opts.hold) {
      await new Promise<void>((go) => this.#holdWaiting.push(go));
      this.#assertHead();
    }
    const bytes = payloadBytes(op);
    await this.#admit(bytes);
    try {
      this.#assertHead();
      const id: OpId = [this.#epoch, this.#nextN++];
      this.#submitted++;
      const done = this.#take(id, op.kind === 'snapshot' && this.#clock !== null ? { ...op, stamp: this.#clock() } : op, takeRelease());
      opts.taken?.();
      await done;
    } finally {
      this.#release(bytes);
    }
  }

  /** A client's read at the head. */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.#assertHead();
    return this.#store.read(offset, length, into);
  }

  /**
   * Holds, from now until `release()`, every op submitted at this head except those submitted
   * with this hold: clients' writes, flushes, snapshots, reverts and the head's own sync
   * snapshots. Ops admitted before go on. One hold at a time (the node runs one group snapshot
   * at a time); a fenced or closed replica lets the held ops go (they then fail).
   */
  hold(): Hold {
    this.#assertHead();
    assert.equal(this.#hold, null, 'one hold at a time');
    const hold: Hold = {
      release: () => {
        if (this.#hold !== hold) return;
        this.#hold = null;
        for (const go of this.#holdWaiting.splice(0)) go();
      },
    };
    this.#hold = hold;
    return hold;
  }

  /** Whether a client's snapshot, revert or resize would wait now: a replica of the chain copies in. */
  get barriersWait(): boolean {
    return this.#catchingUp.length > 0;
  }

  /** Resolves once clients' snapshots need not wait (no replica copies in), or the replica is fenced or closed. */
  barriersOpen(): Promise<void> {
    if (this.#catchingUp.length === 0 || this.#closed || this.#fenced !== null) return Promise.resolve();
    return new Promise<void>((go) => this.#held.push(go));
  }

  /** Whether this replica is copying its data in (configured `fresh` and listed catching up). */
  get copyingIn(): boolean {
    return this.#live !== null;
  }

  /**
   * Copies bytes in from a source's sync snapshot: written wherever no live op wrote since this
   * replica joined (`data` null: zeroes there). Ordered with live ops on the same blocks.
   */
  copyIn(offset: number, length: number, data: Buffer | null): Promise<void> {
    if (this.#closed) return Promise.reject(new ClusterError(ClusterErrorCode.CLOSED, `the replica of ${this.disk} on ${this.node} is closed`));
    if (this.#live === null) return Promise.reject(new ClusterError(ClusterErrorCode.INVALID, `${this.disk}: ${this.node} is not copying in`));
    assert.ok(data === null || data.length === length);
    const order = orderOf({ kind: 'trim', offset, length, fua: false }, this.#store.blockBytes);
    return this.#queue.run(order, async () => {
      const live = this.#live;
      // Closed meanwhile: the copy may be reverted for another join; nothing of this one lands.
      if (live === null || this.#closed) return;
      for (const [a, b] of live.gaps(offset, offset + length)) {
        if (data === null) await this.#store.apply({ kind: 'zero', offset: a, length: b - a, fua: false, mayTrim: true });
        else await this.#store.apply({ kind: 'write', offset: a, data: data.subarray(a - offset, b - offset), fua: false });
      }
    });
  }

  /** The copy in is complete (and flushed): live ops need not be tracked any more. */
  copyInDone(): void {
    this.#live = null;
  }

  /**
   * Stops serving as head or replica of this disk until configured again: pending ops fail with
   * NOT_HEAD (their clients get an error; the data they carried is discarded at catch-up).
   */
  fence(reason: string): void {
    this.#fence(reason);
  }

  /** Resolves once every op taken so far is done here (or failed). */
  async idle(): Promise<void> {
    await Promise.all([...this.#ops.values()].map((p) => p.done.catch(() => {})));
  }

  /**
   * Resolves once every local apply queued so far has finished (done or failed), whatever became
   * of the ops downstream: a fenced or closed replica's copy is still until then, so it can be
   * reverted safely.
   */
  settled(): Promise<void> {
    return this.#queue.idle();
  }

  /** Stops: pending ops fail with CLOSED, retries stop. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearRetry();
    const err = new ClusterError(ClusterErrorCode.CLOSED, `the replica of ${this.disk} on ${this.node} is closed`);
    for (const p of this.#ops.values()) settleDownstream(p, err);
    for (const go of this.#held.splice(0)) go();
    this.#hold?.release();
    for (const w of this.#waiting.splice(0)) {
      this.#inFlightOps++;
      this.#inFlightBytes += w.bytes;
      w.go();
    }
  }

  /** Takes an op into the stream: applied here in order, forwarded, done when both are. */
  #take(id: OpId, op: ChainOp, release: Release | null): Promise<void> {
    this.#last = id;
    const key = idText(id);
    const down = deferred();
    const order = orderOf(op, this.#store.blockBytes);
    const live = this.#live;
    if (live !== null && order.kind === 'range') {
      const [start, end] = op.kind === 'write' ? [op.offset, op.offset + op.data.length] : op.kind === 'zero' || op.kind === 'trim' ? [op.offset, op.offset + op.length] : [0, 0];
      live.add(start, end);
    }
    // Copying in, a snapshot here would hold a partial copy: the ones that reach it are sync
    // snapshots (clients' wait at the head), which it does not need; it takes the next one whole.
    const skip = live !== null && (op.kind === 'snapshot' || op.kind === 'snapshot-delete');
    const local = this.#queue.run(order, () => (skip ? Promise.resolve() : this.#store.apply(op)));
    const p: Pending = {
      id,
      key,
      op,
      ackDownstream: down.resolve,
      failDownstream: down.reject,
      downstreamSettled: false,
      done: Promise.all([local, down.promise]).then(() => {}),
      localSettled: false,
      sending: 0,
      release,
    };
    this.#ops.set(key, p);
    void p.done.then(
      () => this.#ops.delete(key),
      () => this.#ops.delete(key),
    );
    if (release !== null) {
      const settled = (): void => {
        p.localSettled = true;
        maybeRelease(p);
      };
      local.then(settled, settled);
    }
    if (this.#successor === null) settleDownstream(p, null);
    else this.#send(p);
    return p.done;
  }

  /** Forwards a pending op to the current successor; its acknowledgement counts only if the configuration did not change meanwhile. */
  #send(p: Pending): void {
    const successor = this.#successor;
    assert.ok(successor !== null);
    const gen = this.#gen;
    const restart = this.#restartNext;
    const prev = restart ? null : this.#lastSent;
    this.#restartNext = false;
    this.#lastSent = p.id;
    p.sending++;
    this.#transport.forward(successor, { disk: this.disk, epoch: this.#epoch, id: p.id, prev, restart, op: p.op }).then(
      () => {
        p.sending--;
        if (gen === this.#gen) settleDownstream(p, null);
        maybeRelease(p);
      },
      (err: unknown) => {
        p.sending--;
        if (gen === this.#gen && !p.downstreamSettled) this.#forwardFailed(successor, p, err instanceof Error ? err : new Error(String(err)));
        maybeRelease(p);
      },
    );
  }

  #forwardFailed(successor: string, p: Pending, err: Error): void {
    const code = (err as ClusterError).code;
    if (code === ClusterErrorCode.STALE_EPOCH) {
      // The successor moved on: the owner learns the new chain and configures this replica (or fences it).
      this.#onTrouble({ disk: this.disk, successor, kind: 'stale', current: (err as ClusterError).current, error: err });
      return;
    }
    if (code === ClusterErrorCode.PEER_UNAVAILABLE || code === ClusterErrorCode.OUT_OF_ORDER || code === ClusterErrorCode.EPOCH_AHEAD || code === ClusterErrorCode.CLOSED || code === ClusterErrorCode.DISK_NOT_FOUND) {
      this.#onTrouble({ disk: this.disk, successor, kind: 'unavailable', current: null, error: err });
      this.#scheduleResend();
      return;
    }
    // The successor could not apply it (its drive, its space): the op fails; the owner evicts that replica.
    this.#onTrouble({ disk: this.disk, successor, kind: 'failed', current: null, error: err });
    settleDownstream(p, err);
  }

  #scheduleResend(): void {
    if (this.#retry !== null || this.#closed) return;
    this.#retry = this.#timers.set(() => {
      this.#retry = null;
      if (this.#successor !== null && this.#fenced === null && !this.#closed) this.#resendAll();
    }, this.#limits.retryMs);
  }

  #clearRetry(): void {
    if (this.#retry !== null) this.#timers.clear(this.#retry);
    this.#retry = null;
  }

  /** Resends every op not acknowledged downstream, oldest first; the successor skips what it has. */
  #resendAll(): void {
    this.#restartNext = true;
    for (const p of this.#ops.values()) if (!p.downstreamSettled) this.#send(p);
  }

  #fence(reason: string): void {
    this.#fenced = reason;
    this.#clearRetry();
    const err = new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.disk}: ${this.node} was fenced: ${reason}`);
    for (const p of this.#ops.values()) settleDownstream(p, err);
    for (const go of this.#held.splice(0)) go();
    this.#hold?.release();
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClusterError(ClusterErrorCode.CLOSED, `the replica of ${this.disk} on ${this.node} is closed`);
  }

  #assertHead(): void {
    this.#assertOpen();
    if (this.#fenced !== null) throw new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.disk}: ${this.node} was fenced: ${this.#fenced}`);
    if (this.role !== 'head') throw new ClusterError(ClusterErrorCode.NOT_HEAD, `${this.disk}: ${this.node} is not the head in epoch ${this.#epoch}`);
  }

  #stale(epoch: number): ClusterError {
    return new ClusterError(ClusterErrorCode.STALE_EPOCH, `${this.disk}: epoch ${epoch} is older than ${this.#epoch} on ${this.node}`, { current: this.#epoch });
  }

  #fits(bytes: number): boolean {
    return this.#inFlightOps < this.#limits.opsInFlightMax && (this.#inFlightBytes === 0 || this.#inFlightBytes + bytes <= this.#limits.bytesInFlightMax);
  }

  /** Waits, in order, until the op fits the head's in-flight limits, and counts it. */
  async #admit(bytes: number): Promise<void> {
    if (this.#waiting.length === 0 && this.#fits(bytes)) {
      this.#inFlightOps++;
      this.#inFlightBytes += bytes;
      return;
    }
    // Counted by #release when it wakes this one, so a submit woken later cannot overtake it.
    await new Promise<void>((go) => this.#waiting.push({ bytes, go }));
  }

  #release(bytes: number): void {
    this.#inFlightOps--;
    this.#inFlightBytes -= bytes;
    while (this.#waiting.length > 0 && (this.#closed || this.#fits(this.#waiting[0].bytes))) {
      const w = this.#waiting.shift()!;
      this.#inFlightOps++;
      this.#inFlightBytes += w.bytes;
      w.go();
    }
  }
}

/** Settles an op's downstream part once: acknowledged (null) or failed. */
function settleDownstream(p: Pending, err: Error | null): void {
  if (p.downstreamSettled) return;
  p.downstreamSettled = true;
  if (err === null) p.ackDownstream();
  else p.failDownstream(err);
  maybeRelease(p);
}

/** Calls an op's Release once nothing here uses its data: applied, settled downstream, no forward outstanding. */
function maybeRelease(p: Pending): void {
  if (p.release === null || !p.localSettled || !p.downstreamSettled || p.sending > 0) return;
  const release = p.release;
  p.release = null;
  release();
}

function sameChain(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
