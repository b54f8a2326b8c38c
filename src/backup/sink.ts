/** Where a restore writes: a file, or a disk of a node. */
export interface RestoreSink {
  /** Writes the bytes of one chunk at `offset`. */
  write(data: Buffer, offset: number): Promise<void>;
  /**
   * Makes [offset, offset + length) read as zeroes (runs of zero chunks). Absent when the target
   * reads as zeroes already (a new file or disk): zero chunks are then left alone.
   */
  zero?(offset: number, length: number): Promise<void>;
}
