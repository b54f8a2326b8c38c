import { CodedError } from '../util/coded-error.ts';

/** Stable codes of FsReadError. */
export const FsReadErrorCode = {
  /** The image's metadata is inconsistent: a bad magic, an offset outside the volume, a cycle. */
  CORRUPT: 'FSREAD_CORRUPT',
  /** A feature this reader does not read (e.g. ext4 encryption, an unknown incompat flag). */
  UNSUPPORTED: 'FSREAD_UNSUPPORTED',
  /** A limit was exceeded: directory size, entries, depth, extents, path length. */
  LIMIT: 'FSREAD_LIMIT',
  /** The byte source failed or returned fewer bytes than asked. */
  IO: 'FSREAD_IO',
} as const;

/** One of the FsReadErrorCode values. */
export type FsReadErrorCodeValue = (typeof FsReadErrorCode)[keyof typeof FsReadErrorCode];

/** The filesystem readers' one error class: what a damaged or unusual image did, with a stable code. */
export class FsReadError extends CodedError<FsReadErrorCodeValue> {}

/** Shorthand for a CORRUPT error. */
export function corrupt(message: string): FsReadError {
  return new FsReadError(FsReadErrorCode.CORRUPT, message);
}
