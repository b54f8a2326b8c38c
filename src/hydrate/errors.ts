import { CodedError } from '../util/coded-error.ts';

/** Stable codes of HydrateError. */
export const HydrateErrorCode = {
  /** A malformed request: bad disk name, unknown environment variable, repository too large. */
  INVALID: 'HYDRATE_INVALID',
  /** No instant restore of that disk. */
  NOT_FOUND: 'HYDRATE_NOT_FOUND',
  /** The disk exists already, or a restore of it runs already. */
  EXISTS: 'HYDRATE_EXISTS',
  /** The restore waits for the repository password (after a node restart). */
  NEEDS_PASSWORD: 'HYDRATE_NEEDS_PASSWORD',
  /** The disk is being restored: the operation asked would see missing chunks. */
  BUSY: 'HYDRATE_BUSY',
  /** The state files in the data directory are damaged. */
  CORRUPT: 'HYDRATE_CORRUPT',
  /** The node is shutting down. */
  CLOSED: 'HYDRATE_CLOSED',
} as const;

/** One of the HydrateErrorCode values. */
export type HydrateErrorCodeValue = (typeof HydrateErrorCode)[keyof typeof HydrateErrorCode];

/** The instant restore subsystem's one error class. Repository failures stay BackupErrors. */
export class HydrateError extends CodedError<HydrateErrorCodeValue> {}
