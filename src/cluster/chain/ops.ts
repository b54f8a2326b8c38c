/**
 * What travels a disk's chain (docs/cluster.md, "Replication: the chain"): ops with ids, and how
 * each op orders against the others on a replica.
 */

/** An op's id: `[epoch, n]`, n counting from 1 within the epoch the head assigned it in. */
export type OpId = readonly [epoch: number, n: number];

/** Compares ids by epoch, then n. */
export function compareIds(a: OpId, b: OpId): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}

/** `E.n`, for logs and map keys. */
export function idText(id: OpId): string {
  return `${id[0]}.${id[1]}`;
}

/** An op that changes a disk, as every replica applies it. */
export type ChainOp =
  | { kind: 'write'; offset: number; data: Buffer; fua: boolean }
  | { kind: 'zero'; offset: number; length: number; fua: boolean; mayTrim: boolean }
  | { kind: 'trim'; offset: number; length: number; fua: boolean }
  | { kind: 'flush' }
  /**
   * `stamp`: the head's hybrid logical clock as the op entered the chain (docs/cluster.md,
   * "Time"), which every replica records as the snapshot's; absent from a head without a clock.
   */
  | { kind: 'snapshot'; name: string; stamp?: bigint }
  | { kind: 'snapshot-delete'; name: string }
  | { kind: 'revert'; snapshot: string }
  | { kind: 'resize'; sizeBytes: number };

/** An op on its way down the chain: the disk, the epoch the sender holds, the op's id. */
export interface OpMessage {
  disk: string;
  /** The sender's epoch of the disk: the fencing token. */
  epoch: number;
  id: OpId;
  /**
   * The op the sender sent this receiver just before this one, or null with `restart`. A receiver
   * takes an op only right after the one it names, so an op lost on the way is never skipped.
   */
  prev: OpId | null;
  /**
   * The first op of a (re)sending: the sender's oldest op not acknowledged by the receiver. What
   * came before it the receiver has, or (joining fresh) copies in.
   */
  restart: boolean;
  op: ChainOp;
}

/**
 * How an op orders on a replica:
 * - `range`: waits for earlier ops in flight whose bytes it overlaps, so overlapping ops land in
 *   stream order everywhere (the engine orders nothing else a replica could disagree on);
 * - `flush`: waits for every earlier op (it must cover them); later ops do not wait for it;
 * - `barrier` (snapshot, revert, resize): waits for every earlier op, and every later op waits
 *   for it, so it stands at the same point of the stream on every replica.
 */
export type OrderClass = { kind: 'range'; start: number; end: number } | { kind: 'flush' } | { kind: 'barrier' };

/** The order class of an op; byte ranges are widened to whole `blockBytes` blocks. */
export function orderOf(op: ChainOp, blockBytes: number): OrderClass {
  switch (op.kind) {
    case 'write':
      return range(op.offset, op.data.length, blockBytes);
    case 'zero':
    case 'trim':
      return range(op.offset, op.length, blockBytes);
    case 'flush':
      return { kind: 'flush' };
    default:
      return { kind: 'barrier' };
  }
}

function range(offset: number, length: number, blockBytes: number): OrderClass {
  const start = Math.floor(offset / blockBytes) * blockBytes;
  const end = Math.ceil((offset + length) / blockBytes) * blockBytes;
  return { kind: 'range', start, end };
}

/** Bytes of payload an op carries (what counts against in-flight limits). */
export function payloadBytes(op: ChainOp): number {
  return op.kind === 'write' ? op.data.length : 0;
}
