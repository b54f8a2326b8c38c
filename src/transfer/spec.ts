/**
 * The transfer protocol (docs/transfer.md, "Wire format"): every magic number, frame type, flag,
 * size, version, limit and service class in one place. Integers travel little endian. Nothing
 * here has behaviour; codec.ts turns it into bytes.
 */

/** "TSXF" as the first four bytes of every frame, read as a little-endian u32. */
export const MAGIC = 0x46585354;

/** Byte offsets and sizes of the 32-byte frame header. */
export const Header = {
  /** u32: MAGIC, so either side can tell a stream out of sync at once. */
  MAGIC: 0,
  /** u16: the frame type (FrameType). */
  TYPE: 4,
  /** u16: Flag bits; any bit not in Flag is a protocol error. */
  FLAGS: 6,
  /** u64: the sender's monotonic clock in µs as it wrote the frame; ACK echoes it. */
  SENT_US: 8,
  /** u32: 1, 2, 3 … per connection and direction, so an ACK can name the frame it answers. */
  SEQ: 16,
  /** u32: bytes of body after the header. */
  BODY_BYTES: 20,
  /** u32: CRC-32 of the body (0 for an empty body), checked once the body has arrived. */
  BODY_CRC: 24,
  /** u32: CRC-32 of bytes 0..27, so the header is trusted before its body is read. */
  HEADER_CRC: 28,
  /** Bytes in a header. */
  BYTES: 32,
} as const;

/** Frame types (u16). → sender to receiver, ← receiver to sender. */
export const FrameType = {
  /** → Handshake: `{versions: [min, max], nonce, auth}`. */
  HELLO: 0x01,
  /** ← Handshake: `{version, nonce, auth, proof?}` (the receiver's proof when both have a secret). */
  HELLO_OK: 0x02,
  /** → Handshake: `{proof}`, the sender's proof; only when both have a secret. */
  AUTH: 0x03,
  /** ← Handshake: `{}`, the sender's proof accepted. */
  AUTH_OK: 0x04,
  /** → Opens (or resumes) a transfer on the first connection: `OpenBody`. */
  OPEN: 0x10,
  /** ← `{chunks}` and, as payload, a bitmap of the chunks the receiver holds already (bit i of byte i>>3, LSB first). */
  OPENED: 0x11,
  /** → Designates another connection for an open transfer: `{transfer, class}`. */
  JOIN: 0x12,
  /** ← `{}`: the connection joined. */
  JOINED: 0x13,
  /** → Warm-up: `{}` and filler the receiver acknowledges and drops. */
  PRIME: 0x20,
  /** → Announces a sub-transfer whose DATA follows on this connection: `{chunk, offset, length, sha256}`. */
  CHUNK: 0x21,
  /** → `{chunk, offset}` and the file's bytes at `offset`, the next of its chunk. */
  DATA: 0x22,
  /** ← `{seq, echoUs, holdUs}`: a PRIME or DATA frame received and, for DATA, its bytes written. */
  ACK: 0x30,
  /** ← `{chunk}`: the chunk's bytes written and its SHA-256 matched. */
  CHUNK_OK: 0x31,
  /** ← `{chunk, rule}`: the chunk's bytes did not hash as announced; the sender sends it again. */
  CHUNK_BAD: 0x32,
  /** → `{sha256}`: every chunk confirmed; the whole file's SHA-256. */
  FINISH: 0x40,
  /** ← `{sha256}`: the file is in place under its name, verified. */
  DONE: 0x41,
} as const;

/** One of the FrameType values. */
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Flag bits (u16). */
export const Flag = {
  /** The body is `u32 meta bytes`, a msgpack map of that many bytes, then raw data to the end. */
  PAYLOAD: 1 << 0,
  /** The body is `{code, message}`: its sender closes the connection after this frame. */
  ERROR: 1 << 1,
} as const;

/** Every bit Flag defines. */
export const FLAGS_KNOWN = Flag.PAYLOAD | Flag.ERROR;

/** Sizes. */
export const Size = {
  /** Largest raw data of a frame accepted: 1 MiB. */
  PAYLOAD_BYTES_MAX: 1024 * 1024,
  /** Largest msgpack part of a frame: 4 KiB. */
  META_BYTES_MAX: 4 * 1024,
  /** Largest body. */
  BODY_BYTES_MAX: 1024 * 1024 + 4 * 1024,
  /** Largest frame body during the handshake. */
  HANDSHAKE_BODY_BYTES_MAX: 4 * 1024,
  /** DATA payload the sender cuts chunks into. */
  SEGMENT_BYTES: 256 * 1024,
  /** Default chunk (sub-transfer) size. */
  CHUNK_BYTES: 4 * 1024 * 1024,
  /** Smallest chunk size. */
  CHUNK_BYTES_MIN: 64 * 1024,
  /** Largest chunk size. */
  CHUNK_BYTES_MAX: 16 * 1024 * 1024,
  /** Most chunks in one file: OPENED's bitmap is then 1 MiB, the largest payload. */
  CHUNKS_MAX: 2 ** 23,
  /** Bytes of a handshake nonce. */
  NONCE_BYTES: 32,
  /** Bytes of an HMAC-SHA256 proof. */
  PROOF_BYTES: 32,
  /** Bytes of a SHA-256. */
  SHA256_BYTES: 32,
  /** Hex characters of a transfer id (16 bytes). */
  TRANSFER_ID_CHARS: 32,
  /** Longest file name, in UTF-8 bytes (as most file systems allow). */
  NAME_BYTES_MAX: 255,
} as const;

/** Protocol versions this code speaks. */
export const Version = {
  MIN: 1,
  MAX: 1,
} as const;

/** Limits. */
export const Limit = {
  /** Connections of one transfer. */
  CONNECTIONS_MAX: 16,
  /** Connections when the sender says nothing. */
  CONNECTIONS_DEFAULT: 4,
  /** Chunks an active connection holds sent or being sent and not yet confirmed. */
  CHUNKS_PER_CONNECTION: 2,
  /** Time from the TCP connection to the end of the handshake, either side. */
  HANDSHAKE_TIMEOUT_MS: 5_000,
  /** Time a TCP connect is given. */
  CONNECT_TIMEOUT_MS: 5_000,
  /** Transfers a receiver serves at once. */
  RECEIVER_TRANSFERS_MAX: 64,
  /** Connections a receiver holds at once. */
  RECEIVER_CONNECTIONS_MAX: 256,
  /** Bytes of writes a receiver queues for one transfer before it stops reading its sockets. */
  RECEIVER_QUEUED_BYTES_MAX: 64 * 1024 * 1024,
  /** Times a chunk that failed its hash is sent again. */
  CHUNK_RESENDS_MAX: 3,
  /** How long a sender keeps trying after a lost connection. */
  RETRY_MS_DEFAULT: 30_000,
  /**
   * How long a sender waits with frames in flight and no acknowledgement on any connection before
   * it gives the attempt up as lost and connects again: a link cut silently (no reset, no error)
   * leaves TCP retransmitting for ~15 min before a socket fails.
   */
  ACK_SILENCE_MS_MAX: 15_000,
  /** Priming: rounds a connection, bytes of the first round (each round doubles), bytes a connection, time. */
  PRIME_ROUNDS_MAX: 6,
  PRIME_FIRST_BYTES: 64 * 1024,
  PRIME_BYTES_MAX: 2 * 1024 * 1024,
  PRIME_MS_MAX: 1_000,
} as const;

/** Service classes and their DSCP code points (RFC 4594; docs/transfer.md, "Service classes and DSCP"). */
export const ServiceClass = {
  /** CS1: low-priority data. */
  bulk: 8,
  /** AF11: high-throughput data. */
  replication: 10,
  /** AF21: low-latency data. */
  interactive: 18,
} as const;

/** A service class name. */
export type ServiceClassName = keyof typeof ServiceClass;

const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([name, value]) => [value, name]));

/** The name of a frame type, `type N` for an unknown one: for rules and logs. */
export function typeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `type ${type}`;
}
