/** Public types of the volume engine. See docs/engine.md for the design and on-disk format. */

/** A disk as the engine reports it. */
export interface DiskInfo {
  /** Unique name; the NBD export name and the API's key. */
  name: string;
  /** Virtual size in bytes (a multiple of 512). */
  sizeBytes: number;
  /** Bytes of live data this disk's head references in the log (thin: only written data). */
  allocatedBytes: number;
  /** Names of this disk's snapshots, oldest first. */
  snapshots: string[];
  /** `DISK@SNAP` this disk was cloned from, if any (informational; the clone is independent). */
  origin: string | null;
  /** Creation time, ms since the epoch. */
  createdMs: number;
}

/** A snapshot as the engine reports it. */
export interface SnapshotInfo {
  /** Name, unique within its disk. */
  name: string;
  /** Disk the snapshot belongs to. */
  disk: string;
  /** Virtual size of the disk when the snapshot was taken. */
  sizeBytes: number;
  /** Log sequence number the snapshot stands at: every write with a lower number is in it. */
  seq: number;
  /** Creation time, ms since the epoch. */
  createdMs: number;
  /**
   * The hybrid logical clock's value when it was taken (docs/cluster.md, "Time"), as its decimal
   * integer: in a cluster the head's, the same on every replica. Null for a snapshot taken
   * without one (in a store older than stamps, or opened without a clock).
   */
  hlc: string | null;
}

/** One run of bytes with the same allocation state, for NBD `base:allocation`. */
export interface AllocationExtent {
  offset: number;
  length: number;
  /** No data stored: reads come from nowhere (NBD_STATE_HOLE). */
  hole: boolean;
  /** Reads return zeroes (NBD_STATE_ZERO). */
  zero: boolean;
}

/** One run of bytes that did or did not change since a reference point. */
export interface ChangeExtent {
  offset: number;
  length: number;
  changed: boolean;
}

/** Options of a write. */
export interface WriteOptions {
  /** Force unit access: durable before the promise resolves. */
  fua?: boolean;
}

/** Options of a write-zeroes. */
export interface ZeroOptions extends WriteOptions {
  /** The caller allows the range to be deallocated (NBD: NBD_CMD_FLAG_NO_HOLE not set). */
  mayTrim?: boolean;
}

/**
 * An open handle on a disk's head (read-write) or on a snapshot (read-only). Offsets and
 * lengths are bytes; any alignment is accepted and handled byte-exactly. Methods that return a
 * promise reject, never throw. Refusals are EngineErrors, the first that applies: a closed
 * volume ENGINE_CLOSED, a write, write-zeroes or trim of a read-only volume ENGINE_READ_ONLY,
 * an offset or length that is not a non-negative safe integer ENGINE_INVALID, a range past the
 * end ENGINE_OUT_OF_RANGE. Every implementation passes test/engine/volume-conformance.ts.
 */
export interface Volume {
  /** Disk name. */
  readonly disk: string;
  /** Snapshot name when this is a read-only snapshot view, else null. */
  readonly snapshot: string | null;
  readonly readOnly: boolean;
  /** Current virtual size (follows resizes of the disk). */
  readonly sizeBytes: number;
  /** Smallest I/O unit that avoids read-modify-write (the engine's block size). */
  readonly blockBytes: number;
  /**
   * The bytes of [offset, offset+length). With `into`, the engine may read into that buffer (it
   * does when `into` holds the whole blocks the range touches) and return a view of it, sparing
   * an allocation; the caller must not reuse `into` until it is done with the result.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Writes `data` at `offset`; `data` is not referenced once the promise settles (callers reuse it). */
  write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void>;
  writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  /** Deallocate: reads of the range return zeroes afterwards. */
  trim(offset: number, length: number, opts?: WriteOptions): Promise<void>;
  /** Everything acknowledged before this call (on any volume of the store) becomes durable. */
  flush(): Promise<void>;
  /** Allocation map of [offset, offset+length), runs in order, covering the range exactly. */
  blockStatus(offset: number, length: number): Promise<AllocationExtent[]>;
  /**
   * Which bytes of [offset, offset+length) differ in history from snapshot `sinceSnapshot` of
   * the same disk lineage (a block written after the snapshot counts as changed). Runs in
   * order, covering the range exactly. Tracked at 512-byte granularity.
   */
  changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]>;
  /** Release the handle. A second call does nothing; other handles on the disk go on. */
  close(): void;
}
