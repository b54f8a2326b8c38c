import { CodedError } from '../util/coded-error.ts';

/** Stable codes of EngineError. */
export const EngineErrorCode = {
  /** Unknown disk or snapshot. */
  NOT_FOUND: 'ENGINE_NOT_FOUND',
  /** A disk or snapshot of that name exists already. */
  EXISTS: 'ENGINE_EXISTS',
  /** A malformed argument: bad name, bad size, bad range. */
  INVALID: 'ENGINE_INVALID',
  /** The object is still needed (e.g. a disk with open volumes). */
  IN_USE: 'ENGINE_IN_USE',
  /**
   * A change of something read-only: a write to a snapshot view, any change of a store opened
   * read-only, or opening a store for writing on a read-only file system.
   */
  READ_ONLY: 'ENGINE_READ_ONLY',
  /** A request past the end of the disk. */
  OUT_OF_RANGE: 'ENGINE_OUT_OF_RANGE',
  /** The file system is full. */
  NO_SPACE: 'ENGINE_NO_SPACE',
  /** Stored data failed its checksum or structure check. */
  CORRUPT: 'ENGINE_CORRUPT',
  /**
   * The drive failed: a read (an I/O error, a truncated or missing segment), or, once the store
   * is failing, any write, flush or change (docs/engine.md, "A failing drive").
   */
  IO: 'ENGINE_IO',
  /** The store is closed or closing. */
  CLOSED: 'ENGINE_CLOSED',
  /** The operating system refused the store's files (permission denied) at open. */
  ACCESS: 'ENGINE_ACCESS',
} as const;

export type EngineErrorCodeValue = (typeof EngineErrorCode)[keyof typeof EngineErrorCode];

/** Where a read failed: the node logs it and counts it per disk (ENGINE_IO of a read). */
export interface ReadFault {
  disk: string;
  /** Byte offset in the disk where the part that could not be read starts. */
  offset: number;
  /** The bytes were read but fail their record's checksum (else the drive failed the read). */
  checksum: boolean;
}

/** The engine's one error class: what the world did wrong, with a stable code. */
export class EngineError extends CodedError<EngineErrorCodeValue> {
  /** Set on the ENGINE_IO of a failed read. */
  readonly readFault: ReadFault | null;
  constructor(code: EngineErrorCodeValue, message: string, options?: { cause?: unknown; readFault?: ReadFault }) {
    super(code, message, options);
    this.readFault = options?.readFault ?? null;
  }
}
