import { CodedError } from '../util/coded-error.ts';

/** Stable codes of ObjstoreError. */
export const ObjstoreErrorCode = {
  /** A malformed argument: bad path, bad prefix, bad range, bad option or location. */
  INVALID: 'OBJSTORE_INVALID',
  /** No such object, or no such bucket. */
  NOT_FOUND: 'OBJSTORE_NOT_FOUND',
  /** The storage failed: I/O error, full disk, S3 error, unreachable endpoint. */
  STORAGE: 'OBJSTORE_STORAGE',
} as const;

/** One of the ObjstoreErrorCode values. */
export type ObjstoreErrorCodeValue = (typeof ObjstoreErrorCode)[keyof typeof ObjstoreErrorCode];

/** The object stores' one error class: what the storage or the caller did wrong, with a stable code. */
export class ObjstoreError extends CodedError<ObjstoreErrorCodeValue> {}
