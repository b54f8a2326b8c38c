/**
 * The bodies of the peer protocol's messages, as TypeScript sees them once the gate let them in
 * (docs/cluster.md, "Message families"). Control bodies are msgpack maps; data (a write's, a
 * read's answer) travels raw after the map (Flag.PAYLOAD), never inside it. HLC values are
 * `bigint` (msgpack int64): `wall ms << 16 | logical`.
 */

/** An op's id: `[epoch, n]`, `n` counting from 1 within the epoch the head assigned it in. */
export type OpId = [epoch: number, n: number];

/** A byte range `[offset, length]`. */
export type Extent = [offset: number, length: number];

/** Handshake, client → server. */
export interface HelloBody {
  /** Versions the client speaks, `[min, max]`. */
  versions: [number, number];
  /** The client's node id. */
  node: string;
  /** The cluster id the client belongs to. */
  cluster: string;
  /** Size.NONCE_BYTES random bytes. */
  nonce: Buffer;
}

/** Handshake, server → client: the version chosen and the server's proof. */
export interface HelloReply {
  version: number;
  /** The server's node id. */
  node: string;
  /** Size.NONCE_BYTES random bytes. */
  nonce: Buffer;
  /** HMAC-SHA256 of the transcript (handshake.ts `proofInput`) with role `server`. */
  proof: Buffer;
}

/** Handshake, client → server: the client's proof, role `client`. */
export interface AuthBody {
  proof: Buffer;
}

/** The body of an error response. */
export interface ErrorBody {
  /** A ClusterErrorCode value. */
  code: string;
  /** Sentence case, no final period. */
  message: string;
  /** With CLUSTER_STALE_EPOCH: the epoch the receiver holds. */
  current?: number;
  /** With CLUSTER_REPLICA_IO: the engine's error code of what the remote store refused. */
  engine?: string;
}

/** PING; `hlc` on version 2 and later only. */
export interface PingBody {
  hlc?: bigint;
}

/** PONG (PING's response); `hlc` on version 2 and later only. */
export interface PongBody {
  hlc?: bigint;
}

/** What every disk-scoped request carries. */
export interface DiskScoped {
  /** The disk's name. */
  disk: string;
  /** The disk's epoch as the sender knows it (the fencing token). */
  epoch: number;
  /** The sender's cluster-map revision: the etcd revision its cache is at. */
  rev: number;
  /** The sender's hybrid logical clock. */
  hlc: bigint;
}

/** CONFIGURE: the receiver's place in the disk's chain from `epoch` on. */
export interface ConfigureBody extends DiskScoped {
  /** The chain's node ids, head first. */
  chain: string[];
  /** The disk's size at this epoch. */
  sizeBytes: number;
  /** Nodes of the chain copying their data in (docs/cluster.md, "Failure, catch-up and rebuild"). */
  catchingUp?: string[];
}

/** CONFIGURE's answer: the last op id the receiver received, so its predecessor resends what is above. */
export interface ConfigureReply {
  lastId: OpId | null;
}

/** The kinds of op that travel down a chain, with what each needs besides DiskScoped and `id`. */
export type OpKind =
  /** The data is the payload; its length is the write's. */
  | { kind: 'write'; offset: number; fua: boolean }
  | { kind: 'zero'; offset: number; length: number; fua: boolean; mayTrim: boolean }
  | { kind: 'trim'; offset: number; length: number; fua: boolean }
  | { kind: 'flush' }
  /**
   * `stamp`: the head's HLC as the snapshot entered the chain, passed down unchanged (unlike
   * `hlc`, each sender's own); every replica records it. Optional: a head that does not stamp
   * (an older one) sends none, and a node that does not know the field passes it on with the op.
   */
  | { kind: 'snapshot'; name: string; stamp?: bigint }
  | { kind: 'snapshot-delete'; name: string }
  | { kind: 'revert'; snapshot: string }
  | { kind: 'resize'; sizeBytes: number };

/** OP: one changing op down the stream. */
export type OpBody = DiskScoped & {
  id: OpId;
  /** The op the sender sent this receiver just before (null with `restart`): nothing is skipped. */
  prev: OpId | null;
  /** The first op of a (re)sending: what came before it the receiver has, or copies in. */
  restart: boolean;
} & OpKind;

/** ACK: ops up to `id` are done on the sender and everything after it in the chain. */
export interface AckBody {
  disk: string;
  epoch: number;
  id: OpId;
}

/** The kinds of I/O a gateway sends a head. */
export type IoKind =
  /** Answered with the data as the response's payload. */
  | { kind: 'read'; offset: number; length: number }
  /** The data is the payload. */
  | { kind: 'write'; offset: number; fua: boolean }
  | { kind: 'zero'; offset: number; length: number; fua: boolean; mayTrim: boolean }
  | { kind: 'trim'; offset: number; length: number; fua: boolean }
  | { kind: 'flush' }
  /** Answered with `extents`: the allocated ranges. */
  | { kind: 'block-status'; offset: number; length: number }
  /** Answered with `extents`: the ranges changed since the snapshot. */
  | { kind: 'changed-since'; snapshot: string; offset: number; length: number };

/** IO: one I/O on a disk, sent to its head. */
export type IoBody = DiskScoped & IoKind;

/** IO's answer: empty, or the runs of block status or changed since (a read's data is the payload). */
export interface IoReply {
  /** Block status: `[offset, length, flags]`, flags bit 0 hole, bit 1 zero. */
  allocation?: Array<[offset: number, length: number, flags: number]>;
  /** Changed since: `[offset, length, changed 0|1]`. */
  changes?: Array<[offset: number, length: number, changed: number]>;
}

/** EXTENTS: the allocated ranges of `snapshot`, or those changed since `since`, within a range. */
export interface ExtentsBody extends DiskScoped {
  snapshot: string;
  since: string | null;
  offset: number;
  length: number;
}

/** EXTENTS' answer. */
export interface ExtentsReply {
  extents: Extent[];
}

/** READ_SNAP: bytes of a snapshot; answered with the data as payload. */
export interface ReadSnapBody extends DiskScoped {
  snapshot: string;
  offset: number;
  length: number;
}

/** The op kinds, in the order of docs/cluster.md's table. */
export const OP_KINDS = ['write', 'zero', 'trim', 'flush', 'snapshot', 'snapshot-delete', 'revert', 'resize'] as const;

/** The I/O kinds. */
export const IO_KINDS = ['read', 'write', 'zero', 'trim', 'flush', 'block-status', 'changed-since'] as const;
