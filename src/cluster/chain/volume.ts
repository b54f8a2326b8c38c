/**
 * The Volume clients of a replicated disk get at its head (docs/cluster.md, "Replication: the
 * chain"): reads, block status and changes come from the head's own copy; writes, zeroes, trims
 * and flushes go through the chain and complete once every replica has them. Requests are
 * validated here, once, before they enter the chain, in the order of the Volume contract.
 */
import { EngineError, EngineErrorCode } from '../../engine/index.ts';
import type { AllocationExtent, ChangeExtent, Volume, WriteOptions, ZeroOptions } from '../../engine/index.ts';
import { checkVolumeRequest } from './volume-check.ts';
import type { BufferPool } from '../../flow/index.ts';
import { ClusterError } from '../errors.ts';
import type { ChainOp } from './ops.ts';
import type { ChainReplica } from './replica.ts';

/** A handle on a replicated disk at its head. */
export class ReplicatedVolume implements Volume {
  readonly disk: string;
  readonly snapshot = null;
  readonly readOnly = false;
  readonly #replica: ChainReplica;
  /** The head's own handle on its copy: reads, and the size. */
  readonly #local: Volume;
  readonly #leaseValid: () => boolean;
  readonly #named: () => boolean;
  readonly #pool: BufferPool | null;
  #closed = false;

  /**
   * `named`: whether the node's view of the disk record still names it the head (when not, it
   * serves nothing); `leaseValid`: whether its etcd lease still holds. Past its lease (etcd down,
   * or this node cut off from it) writes go on, since the chain refuses a replaced head's ops,
   * but a read first puts a flush through the chain: acknowledged by every replica at this
   * node's epoch, no other head can have taken writes (docs/cluster.md, "Leases and liveness").
   */
  constructor(replica: ChainReplica, local: Volume, opts: { leaseValid?: () => boolean; named?: () => boolean; pool?: BufferPool } = {}) {
    this.disk = local.disk;
    this.#replica = replica;
    this.#local = local;
    this.#leaseValid = opts.leaseValid ?? (() => true);
    this.#named = opts.named ?? (() => true);
    this.#pool = opts.pool ?? null;
  }

  /** Refuses when another node heads the disk as far as this node knows. */
  #checkNamed(): void {
    if (!this.#named()) throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}": this node does not head it now; another node does`);
  }

  /** Before a read past the lease: the chain confirms no other head took over. */
  async #checkLease(): Promise<void> {
    this.#checkNamed();
    if (this.#leaseValid()) return;
    try {
      await this.#replica.submit({ kind: 'flush' });
    } catch (err) {
      throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}": this node's lease in etcd ran out and its chain did not confirm it still heads the disk: ${(err as Error).message}`, { cause: err });
    }
  }

  get sizeBytes(): number {
    return this.#local.sizeBytes;
  }

  get blockBytes(): number {
    return this.#local.blockBytes;
  }

  #check(offset: number, length: number): void {
    checkVolumeRequest(this.#closed, offset, length, this.sizeBytes);
  }

  /** Sends an op down the chain; what the cluster fails with, the client sees as an I/O error. */
  async #submit(op: ChainOp, release?: () => void): Promise<void> {
    try {
      this.#checkNamed();
    } catch (err) {
      release?.();
      throw err;
    }
    try {
      await this.#replica.submit(op, { release });
    } catch (err) {
      if (err instanceof ClusterError) throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}": ${err.message}`, { cause: err });
      throw err;
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.#check(offset, length);
    await this.#checkLease();
    try {
      return await this.#replica.read(offset, length, into);
    } catch (err) {
      if (err instanceof ClusterError) throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}": ${err.message}`, { cause: err });
      throw err;
    }
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.#check(offset, data.length);
    if (data.length === 0) return;
    // The chain may hold the op past the caller's reuse of `data` (a forward still queued when
    // the op fails), so it gets its own copy: a pooled buffer, given back once the chain lets go
    // of it (a fresh buffer per write made the collector a fifth of the head's time).
    const pool = this.#pool;
    const own = pool === null ? Buffer.allocUnsafeSlow(data.length) : pool.take(data.length);
    data.copy(own);
    await this.#submit({ kind: 'write', offset, data: own.subarray(0, data.length), fua: opts.fua === true }, pool === null ? undefined : () => pool.give(own));
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    this.#check(offset, length);
    if (length === 0) return;
    await this.#submit({ kind: 'zero', offset, length, fua: opts.fua === true, mayTrim: opts.mayTrim === true });
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    this.#check(offset, length);
    if (length === 0) return;
    await this.#submit({ kind: 'trim', offset, length, fua: opts.fua === true });
  }

  async flush(): Promise<void> {
    if (this.#closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    await this.#submit({ kind: 'flush' });
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    this.#check(offset, length);
    await this.#checkLease();
    return this.#local.blockStatus(offset, length);
  }

  async changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    this.#check(offset, length);
    await this.#checkLease();
    return this.#local.changedSince(sinceSnapshot, offset, length);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#local.close();
  }
}
