import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { Limit } from './spec.ts';

/** Limits of one peer connection, each way (defaults: spec.ts `Limit`). */
export interface PeerLimits {
  /** Requests sent and not yet answered; a sender beyond it waits, a receiver stops reading. */
  inflightRequestsMax: number;
  /**
   * Bytes in flight: request bodies plus the data a read asks back. A sender beyond it waits (one
   * request alone always goes); a receiver stops reading beyond it.
   */
  inflightBytesMax: number;
  /** Time from the TCP connection to the end of the handshake. */
  handshakeTimeoutMs: number;
}

/** The limits used where options say nothing. */
export const DEFAULT_PEER_LIMITS: Readonly<PeerLimits> = Object.freeze({
  inflightRequestsMax: Limit.INFLIGHT_REQUESTS_MAX,
  inflightBytesMax: Limit.INFLIGHT_BYTES_MAX,
  handshakeTimeoutMs: Limit.HANDSHAKE_TIMEOUT_MS,
});

/** The defaults overridden by `overrides`, each checked to be a positive integer. */
export function resolvePeerLimits(overrides: Partial<PeerLimits> = {}): PeerLimits {
  const limits: PeerLimits = { ...DEFAULT_PEER_LIMITS };
  for (const [key, value] of Object.entries(overrides) as [keyof PeerLimits, unknown][]) {
    if (!(key in DEFAULT_PEER_LIMITS)) throw new ClusterError(ClusterErrorCode.INVALID, `Unknown peer limit ${key}`);
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      throw new ClusterError(ClusterErrorCode.INVALID, `Peer limit ${key} must be a positive integer, got ${String(value)}`);
    }
    limits[key] = value;
  }
  return limits;
}

/** The versions a node speaks given `protocolMax` (TESSERA_PEER_PROTOCOL_MAX): `[min, max]`. */
export function versionRange(min: number, max: number, protocolMax?: number): [number, number] {
  if (protocolMax === undefined) return [min, max];
  if (!Number.isInteger(protocolMax) || protocolMax < min || protocolMax > max) {
    throw new ClusterError(ClusterErrorCode.INVALID, `Peer protocol max ${protocolMax} is outside the versions spoken, ${min}..${max}`);
  }
  return [min, protocolMax];
}
