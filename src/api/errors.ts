import { isBug } from '../util/bug.ts';
import { CodedError } from '../util/coded-error.ts';
import { BackupError, BackupErrorCode, type BackupErrorCodeValue } from '../backup/index.ts';
import { EngineError, EngineErrorCode } from '../engine/index.ts';
import type { EngineErrorCodeValue } from '../engine/index.ts';
import { HydrateError, HydrateErrorCode, type HydrateErrorCodeValue } from '../hydrate/index.ts';
import { ClusterError, ClusterErrorCode, type ClusterErrorCodeValue } from '../cluster/index.ts';
import { ApiErrorCode, type ApiErrorCodeValue } from './client/wire.ts';

// The codes are part of the wire format: declared with it (wire.ts), where clients find them.
export { ApiErrorCode, type ApiErrorCodeValue } from './client/wire.ts';

/** HTTP status of every ApiError code: the one place that decides it. */
const statusOfCode: Record<ApiErrorCodeValue, number> = {
  NOT_FOUND: 404,
  EXISTS: 409,
  INVALID: 400,
  IN_USE: 409,
  READ_ONLY: 409,
  OUT_OF_RANGE: 400,
  NO_SPACE: 507,
  CORRUPT: 500,
  IO_ERROR: 500,
  CLOSED: 503,
  BAD_REQUEST: 400,
  NO_ROUTE: 404,
  METHOD_NOT_ALLOWED: 405,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BUSY: 503,
  NOT_READY: 503,
  INTERNAL: 500,
  WRONG_PASSWORD: 403,
  REPOSITORY: 502,
  POLICY_UNMET: 409,
  ETCD_UNAVAILABLE: 503,
  UNAVAILABLE: 503,
  CANCELLED: 409,
  SOURCE: 502,
};

/** The wire code of every engine error code. */
const codeOfEngineCode: Record<EngineErrorCodeValue, ApiErrorCodeValue> = {
  [EngineErrorCode.NOT_FOUND]: ApiErrorCode.NOT_FOUND,
  [EngineErrorCode.EXISTS]: ApiErrorCode.EXISTS,
  [EngineErrorCode.INVALID]: ApiErrorCode.INVALID,
  [EngineErrorCode.IN_USE]: ApiErrorCode.IN_USE,
  [EngineErrorCode.READ_ONLY]: ApiErrorCode.READ_ONLY,
  [EngineErrorCode.OUT_OF_RANGE]: ApiErrorCode.OUT_OF_RANGE,
  [EngineErrorCode.NO_SPACE]: ApiErrorCode.NO_SPACE,
  [EngineErrorCode.CORRUPT]: ApiErrorCode.CORRUPT,
  [EngineErrorCode.IO]: ApiErrorCode.IO_ERROR,
  [EngineErrorCode.CLOSED]: ApiErrorCode.CLOSED,
  // Only opening a store meets it (a node does not start); should a request ever, it is the node's fault.
  [EngineErrorCode.ACCESS]: ApiErrorCode.INTERNAL,
};

/** The API's one error class: a request the server refuses, with a stable code. */
export class ApiError extends CodedError<ApiErrorCodeValue> {
  /** Extra response headers, e.g. `allow` of a 405. */
  readonly headers: Record<string, string>;
  constructor(code: ApiErrorCodeValue, message: string, options?: { cause?: unknown; headers?: Record<string, string> }) {
    super(code, message, options);
    this.headers = options?.headers ?? {};
  }

  /** HTTP status this error is sent with. */
  get status(): number {
    return statusOfCode[this.code];
  }
}

/** The wire code of every instant-restore error code. */
const codeOfHydrateCode: Record<HydrateErrorCodeValue, ApiErrorCodeValue> = {
  [HydrateErrorCode.INVALID]: ApiErrorCode.INVALID,
  [HydrateErrorCode.NOT_FOUND]: ApiErrorCode.NOT_FOUND,
  [HydrateErrorCode.EXISTS]: ApiErrorCode.EXISTS,
  [HydrateErrorCode.NEEDS_PASSWORD]: ApiErrorCode.IN_USE,
  [HydrateErrorCode.BUSY]: ApiErrorCode.IN_USE,
  [HydrateErrorCode.CORRUPT]: ApiErrorCode.CORRUPT,
  [HydrateErrorCode.CLOSED]: ApiErrorCode.CLOSED,
};

/** The wire code of every backup repository error code (the node reads repositories for instant restores). */
const codeOfClusterCode: Record<ClusterErrorCodeValue, ApiErrorCodeValue> = {
  [ClusterErrorCode.INVALID]: ApiErrorCode.INVALID,
  [ClusterErrorCode.ETCD_UNAVAILABLE]: ApiErrorCode.ETCD_UNAVAILABLE,
  // Start-up refusals: a request never meets them; should one, it is the node's fault.
  [ClusterErrorCode.NODE_LIVE]: ApiErrorCode.INTERNAL,
  [ClusterErrorCode.IDENTITY]: ApiErrorCode.INTERNAL,
  [ClusterErrorCode.NODE_NOT_FOUND]: ApiErrorCode.NOT_FOUND,
  [ClusterErrorCode.DISK_NOT_FOUND]: ApiErrorCode.NOT_FOUND,
  [ClusterErrorCode.DISK_EXISTS]: ApiErrorCode.EXISTS,
  [ClusterErrorCode.POLICY_UNMET]: ApiErrorCode.POLICY_UNMET,
  [ClusterErrorCode.STALE_EPOCH]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.EPOCH_AHEAD]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.OUT_OF_ORDER]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.PEER_UNAVAILABLE]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.NOT_HEAD]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.CONFLICT]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.PROTOCOL]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.AUTH_FAILED]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.NO_COMMON_VERSION]: ApiErrorCode.UNAVAILABLE,
  [ClusterErrorCode.REPLICA_IO]: ApiErrorCode.IO_ERROR,
  [ClusterErrorCode.LIMIT]: ApiErrorCode.BUSY,
  [ClusterErrorCode.CLOSED]: ApiErrorCode.CLOSED,
  // A peer's clock far ahead of ours: the cluster is misconfigured (NTP), not the request.
  [ClusterErrorCode.CLOCK_SKEW]: ApiErrorCode.UNAVAILABLE,
};

const codeOfBackupCode: Record<BackupErrorCodeValue, ApiErrorCodeValue> = {
  [BackupErrorCode.INVALID]: ApiErrorCode.INVALID,
  [BackupErrorCode.NOT_FOUND]: ApiErrorCode.NOT_FOUND,
  [BackupErrorCode.EXISTS]: ApiErrorCode.EXISTS,
  [BackupErrorCode.WRONG_PASSWORD]: ApiErrorCode.WRONG_PASSWORD,
  [BackupErrorCode.CORRUPT]: ApiErrorCode.REPOSITORY,
  [BackupErrorCode.UNSUPPORTED]: ApiErrorCode.INVALID,
  [BackupErrorCode.STORAGE]: ApiErrorCode.REPOSITORY,
};

/**
 * The error to send for anything a handler threw: the one place that decides it. Typed errors of
 * the subsystems the API speaks for keep their message (it is written for users) and map by code.
 * Other failures of the world (a system error such as a drive's EIO, a typed error without a wire
 * code) are 500 INTERNAL with a generic message, flagged `unexpected` so the server logs their
 * details. A bug (src/util/bug.ts: an assertion, a TypeError, any untyped error) is flagged `bug`:
 * the server does not answer it but logs its stack and crashes the node.
 */
export function toApiError(err: unknown): { error: ApiError; unexpected: boolean; bug: boolean } {
  if (err instanceof ApiError) return { error: err, unexpected: false, bug: false };
  if (err instanceof EngineError && Object.hasOwn(codeOfEngineCode, err.code)) {
    const code = codeOfEngineCode[err.code];
    // A corrupt store or a failing drive is worth a line in the log even though the client is told.
    return { error: new ApiError(code, err.message, { cause: err }), unexpected: code === ApiErrorCode.CORRUPT || code === ApiErrorCode.INTERNAL || code === ApiErrorCode.IO_ERROR, bug: false };
  }
  if (err instanceof HydrateError && Object.hasOwn(codeOfHydrateCode, err.code)) {
    return { error: new ApiError(codeOfHydrateCode[err.code], err.message, { cause: err }), unexpected: false, bug: false };
  }
  if (err instanceof ClusterError && Object.hasOwn(codeOfClusterCode, err.code)) {
    // What a remote store refused keeps its own code (a snapshot not found at the head is a 404 here too).
    const engine = err.engine !== null && Object.hasOwn(codeOfEngineCode, err.engine) ? codeOfEngineCode[err.engine as EngineErrorCodeValue] : null;
    const code = engine ?? codeOfClusterCode[err.code];
    return { error: new ApiError(code, err.message, { cause: err }), unexpected: code === ApiErrorCode.INTERNAL, bug: false };
  }
  if (err instanceof BackupError && Object.hasOwn(codeOfBackupCode, err.code)) {
    return { error: new ApiError(codeOfBackupCode[err.code], err.message, { cause: err }), unexpected: false, bug: false };
  }
  return { error: new ApiError(ApiErrorCode.INTERNAL, 'Internal error; see the node log', { cause: err }), unexpected: true, bug: isBug(err) };
}
