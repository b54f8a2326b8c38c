import { NbdError, NbdErrorCode } from './errors.ts';

/** Limits that bound what one client can make the server hold or do. */
export interface NbdLimits {
  /** Largest read or write payload, in bytes; also the advertised maximum block size. */
  requestBytesMax: number;
  /** Requests in flight per connection; the server stops reading the socket beyond it. */
  inflightRequestsMax: number;
  /** Read and write payload bytes in flight per connection; the server stops reading beyond it. */
  inflightBytesMax: number;
  /** Largest option request during the handshake, in bytes; a larger one closes the connection. */
  optionBytesMax: number;
  /** Time a client has from connecting to entering transmission. */
  handshakeTimeoutMs: number;
  /** Connections open at once, handshaking or transmitting; more are closed on accept. */
  connectionsMax: number;
}

/** The limits used where NbdServerOptions.limits says nothing. */
export const DEFAULT_NBD_LIMITS: Readonly<NbdLimits> = Object.freeze({
  requestBytesMax: 32 * 1024 * 1024,
  inflightRequestsMax: 64,
  inflightBytesMax: 128 * 1024 * 1024,
  optionBytesMax: 64 * 1024,
  handshakeTimeoutMs: 30_000,
  connectionsMax: 1024,
});

/** Smallest and largest request size accepted as a limit: a sector, and 1 GiB. */
const REQUEST_BYTES_RANGE = [512, 2 ** 30] as const;

/** The defaults overridden by `overrides`, each checked to be a positive integer in range. */
export function resolveLimits(overrides: Partial<NbdLimits> = {}): NbdLimits {
  const limits: NbdLimits = { ...DEFAULT_NBD_LIMITS };
  for (const [key, value] of Object.entries(overrides) as [keyof NbdLimits, unknown][]) {
    if (!(key in DEFAULT_NBD_LIMITS)) throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `Unknown NBD limit ${key}`);
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `NBD limit ${key} must be a positive integer, got ${String(value)}`);
    }
    limits[key] = value;
  }
  const [low, high] = REQUEST_BYTES_RANGE;
  if (limits.requestBytesMax < low || limits.requestBytesMax > high) {
    throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `NBD limit requestBytesMax must be between ${low} and ${high}`);
  }
  if (limits.optionBytesMax < 1024) {
    // Below this, ordinary NBD_OPT_GO requests with a long export name would be refused.
    throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, 'NBD limit optionBytesMax must be at least 1024');
  }
  return limits;
}
