import { CodedError } from '../util/coded-error.ts';

/** Stable codes of BackupError. */
export const BackupErrorCode = {
  /** A malformed argument: bad path, bad range, bad option. */
  INVALID: 'BACKUP_INVALID',
  /** No such object, restore point, or repository. */
  NOT_FOUND: 'BACKUP_NOT_FOUND',
  /** A repository exists at that location already (init). */
  EXISTS: 'BACKUP_EXISTS',
  /** No key file opens with the password given. */
  WRONG_PASSWORD: 'BACKUP_WRONG_PASSWORD',
  /** Stored data failed its authentication, hash or structure check. */
  CORRUPT: 'BACKUP_CORRUPT',
  /** The repository's format version is not one this code reads. */
  UNSUPPORTED: 'BACKUP_UNSUPPORTED',
  /** The storage failed: I/O error, full disk, S3 error, unreachable endpoint. */
  STORAGE: 'BACKUP_STORAGE',
} as const;

/** One of the BackupErrorCode values. */
export type BackupErrorCodeValue = (typeof BackupErrorCode)[keyof typeof BackupErrorCode];

/** The backup subsystem's one error class: what the world did wrong, with a stable code. */
export class BackupError extends CodedError<BackupErrorCodeValue> {}
