/**
 * The peer protocol as nodes speak it to each other (docs/cluster.md, "The peer protocol"):
 * every magic number, message type, flag, size, version and limit, in one place. Integers travel
 * little endian. Nothing here has behaviour; codec.ts turns it into bytes.
 */

/** "TSPR" as the first four bytes of every frame, read as a little-endian u32. */
export const MAGIC = 0x52505354;

/** Byte offsets and sizes of the 32-byte frame header. */
export const Header = {
  /** u32: MAGIC, so either side can tell a stream out of sync at once. */
  MAGIC: 0,
  /** u16: the message type (MessageType); a response carries its request's type. */
  TYPE: 4,
  /** u16: Flag bits; any bit not in Flag is a protocol error. */
  FLAGS: 6,
  /** u64: the request id the sender chose; a response carries its request's id. */
  REQUEST_ID: 8,
  /** u32: bytes of body after the header. */
  BODY_BYTES: 16,
  /** u32: CRC-32 of the body (0 for an empty body), checked once the body has arrived. */
  BODY_CRC: 20,
  /** u32: reserved, always 0. */
  RESERVED: 24,
  /** u32: CRC-32 of bytes 0..27, so the header is trusted before its body is read. */
  HEADER_CRC: 28,
  /** Bytes in a header. */
  BYTES: 32,
} as const;

/** Message types (u16). A response frame carries its request's type with Flag.RESPONSE set. */
export const MessageType = {
  /** Handshake, client → server: `HelloBody`; the response is `HelloReply` (the server's proof). */
  HELLO: 0x0001,
  /** Handshake, client → server: `AuthBody` (the client's proof); the response is empty. */
  AUTH: 0x0002,
  /** Control: `PingBody`; its response, PONG, is `PongBody`. Measures the round trip. */
  PING: 0x0010,
  /** Chain: a replica's new place in a disk's chain at an epoch (`ConfigureBody` → `ConfigureReply`). */
  CONFIGURE: 0x0100,
  /** Chain: one changing op down the stream (`OpBody`, with the data of a write) → `AckBody`. */
  OP: 0x0101,
  /** Chain: a successor acknowledging ops up to an id, unprompted (`AckBody`) → empty. */
  ACK: 0x0102,
  /** Gateway: one I/O on a disk, sent to its head (`IoBody`) → `IoReply`, with data for a read. */
  IO: 0x0200,
  /** Copy: allocated (or changed since `since`) ranges of a snapshot (`ExtentsBody` → `ExtentsReply`). */
  EXTENTS: 0x0300,
  /** Copy: bytes of a snapshot (`ReadSnapBody`) → the data, raw. */
  READ_SNAP: 0x0301,
} as const;

/** One of the MessageType values. */
export type MessageTypeValue = (typeof MessageType)[keyof typeof MessageType];

/** Flag bits (u16). */
export const Flag = {
  /** The frame answers the request of the same id. */
  RESPONSE: 1 << 0,
  /** With RESPONSE: the request failed; the body is an `ErrorBody`. Alone (request id 0): the sender is closing for a protocol error. */
  ERROR: 1 << 1,
  /** The body is `u32 meta bytes`, a msgpack map of that many bytes, then raw data to the end. */
  PAYLOAD: 1 << 2,
} as const;

/** Every bit Flag defines; a frame with another bit set is a protocol error. */
export const FLAGS_KNOWN = Flag.RESPONSE | Flag.ERROR | Flag.PAYLOAD;

/** Sizes. */
export const Size = {
  /** Largest raw data of one message (a write's data, a read's answer): 8 MiB. */
  PAYLOAD_BYTES_MAX: 8 * 1024 * 1024,
  /** Largest msgpack part of a message: 4 KiB (its fields, never data). */
  META_BYTES_MAX: 4 * 1024,
  /** Largest body: a payload and its meta part (the u32 meta length fits in the meta's allowance). */
  BODY_BYTES_MAX: 8 * 1024 * 1024 + 4 * 1024,
  /** Bytes of a handshake nonce. */
  NONCE_BYTES: 32,
  /** Bytes of an HMAC-SHA256 proof. */
  PROOF_BYTES: 32,
} as const;

/** Protocol versions this code speaks. */
export const Version = {
  /** Oldest spoken: every message type. */
  MIN: 1,
  /** Newest spoken: 2 adds the HLC to PING and PONG. */
  MAX: 2,
  /** The first version whose PING and PONG carry `hlc`. */
  PING_HLC: 2,
} as const;

/** The version each message type appeared in; a type unknown at the negotiated version is refused. */
export const TypeSince: Readonly<Record<MessageTypeValue, number>> = {
  [MessageType.HELLO]: 1,
  [MessageType.AUTH]: 1,
  [MessageType.PING]: 1,
  [MessageType.CONFIGURE]: 1,
  [MessageType.OP]: 1,
  [MessageType.ACK]: 1,
  [MessageType.IO]: 1,
  [MessageType.EXTENTS]: 1,
  [MessageType.READ_SNAP]: 1,
};

/** Limits of one connection, each way (PeerLimits overrides them, for tests). */
export const Limit = {
  /** Requests sent and not yet answered; a sender beyond it waits. */
  INFLIGHT_REQUESTS_MAX: 1024,
  /** Request body bytes sent and not yet answered; a sender beyond it waits. */
  INFLIGHT_BYTES_MAX: 64 * 1024 * 1024,
  /** Time from connecting to the end of the handshake, either side. */
  HANDSHAKE_TIMEOUT_MS: 5_000,
  /** Time a pool gives a TCP connect (the handshake then has its own deadline). */
  CONNECT_TIMEOUT_MS: 3_000,
} as const;

const TYPE_NAMES = new Map<number, string>(Object.entries(MessageType).map(([name, value]) => [value, name]));

/** The name of a message type, `type N` for an unknown one: for rules and logs. */
export function typeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `type ${type}`;
}
