import { CodedError } from '../util/coded-error.ts';

/** Stable codes of TransferError (docs/transfer.md, "Errors"). */
export const TransferErrorCode = {
  /** The receiver cannot be reached: connect refused or timed out. */
  UNREACHABLE: 'TRANSFER_UNREACHABLE',
  /** The receiver has a secret and the sender none. */
  AUTH_REQUIRED: 'TRANSFER_AUTH_REQUIRED',
  /** A proof did not match: the two ends hold different secrets, or only one has one. */
  AUTH_FAILED: 'TRANSFER_AUTH_FAILED',
  /** The other end broke the protocol (bad frame, checksum, unexpected frame). */
  PROTOCOL: 'TRANSFER_PROTOCOL',
  /** The receiver's file system has no room for the file. */
  NO_SPACE: 'TRANSFER_NO_SPACE',
  /** Data did not hash as it should (after the resends allowed). */
  INTEGRITY: 'TRANSFER_INTEGRITY',
  /** The source file changed while it was being sent. */
  SOURCE_CHANGED: 'TRANSFER_SOURCE_CHANGED',
  /** A bad option, name or request. */
  INVALID: 'TRANSFER_INVALID',
  /** A limit was exceeded. */
  LIMIT: 'TRANSFER_LIMIT',
  /** The connection was lost and not regained within the retry deadline. */
  LOST: 'TRANSFER_LOST',
  /** A local read or write failed. */
  IO: 'TRANSFER_IO',
  /** No open transfer has this id (a JOIN after the receiver restarted). */
  UNKNOWN: 'TRANSFER_UNKNOWN',
  /** The transfer was closed or replaced by a newer attempt. */
  CLOSED: 'TRANSFER_CLOSED',
} as const;

/** One of the TransferErrorCode values. */
export type TransferErrorCodeValue = (typeof TransferErrorCode)[keyof typeof TransferErrorCode];

/** The transfer room's one error class. */
export class TransferError extends CodedError<TransferErrorCodeValue> {}

/** Codes after which a sender does not try again: retrying cannot help. */
export const FATAL_CODES: ReadonlySet<string> = new Set<string>([
  TransferErrorCode.AUTH_REQUIRED,
  TransferErrorCode.AUTH_FAILED,
  TransferErrorCode.PROTOCOL,
  TransferErrorCode.NO_SPACE,
  TransferErrorCode.INTEGRITY,
  TransferErrorCode.SOURCE_CHANGED,
  TransferErrorCode.INVALID,
  TransferErrorCode.LIMIT,
  TransferErrorCode.IO,
]);
