/**
 * A replica's copy of a disk in the node's own store (docs/engine.md): ops of the chain become
 * the engine's writes, zeroes, trims, flushes, snapshots, reverts and resizes.
 */
import type { Store, Volume } from '../../engine/index.ts';
import type { ChainOp } from './ops.ts';
import type { ReplicaStore } from './replica.ts';

/** The disk `disk` of `store`, as a chain replica applies ops to it. */
export class EngineReplicaStore implements ReplicaStore {
  readonly blockBytes: number;
  readonly #store: Store;
  readonly #volume: Volume;
  readonly #disk: string;

  constructor(store: Store, disk: string) {
    this.#store = store;
    this.#disk = disk;
    this.#volume = store.openVolume(disk, null);
    this.blockBytes = this.#volume.blockBytes;
  }

  /** The handle ops go through (it follows reverts and resizes of the disk). */
  get volume(): Volume {
    return this.#volume;
  }

  async apply(op: ChainOp): Promise<void> {
    const v = this.#volume;
    switch (op.kind) {
      case 'write':
        return v.write(op.offset, op.data, { fua: op.fua });
      case 'zero':
        return v.writeZeroes(op.offset, op.length, { fua: op.fua, mayTrim: op.mayTrim });
      case 'trim':
        return v.trim(op.offset, op.length, { fua: op.fua });
      case 'flush':
        return v.flush();
      case 'snapshot':
        // The head's stamp, the same on every replica; none if it gave none (never this node's own).
        await this.#store.createSnapshot(this.#disk, op.name, { hlc: op.stamp ?? null });
        return;
      case 'snapshot-delete':
        // Idempotent on a replica: one that joined later never had the head's older sync snapshots.
        if (!this.#store.listSnapshots(this.#disk).some((s) => s.name === op.name)) return;
        await this.#store.deleteSnapshot(this.#disk, op.name);
        return;
      case 'revert':
        await this.#store.revertDisk(this.#disk, op.snapshot);
        return;
      case 'resize':
        await this.#store.resizeDisk(this.#disk, op.sizeBytes);
        return;
    }
  }

  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.#volume.read(offset, length, into);
  }

  close(): void {
    this.#volume.close();
  }
}
