/**
 * The NBD wire protocol as this server speaks it: every magic number, code, flag and size, in one
 * place. Values follow the NBD protocol document (NetworkBlockDevice/nbd doc/proto.md). All
 * integers travel big-endian. Nothing here has behaviour; codec.ts turns it into bytes.
 */

/** Magic numbers that open messages, so either side can tell a stream out of sync. */
export const Magic = {
  /** First 8 bytes the server sends: ASCII "NBDMAGIC". */
  NBDMAGIC: 0x4e42444d41474943n,
  /** Second 8 bytes of the newstyle greeting and first 8 bytes of every option request: "IHAVEOPT". */
  IHAVEOPT: 0x49484156454f5054n,
  /** First 8 bytes of every fixed-newstyle option reply. */
  OPTION_REPLY: 0x0003e889045565a9n,
  /** First 4 bytes of every transmission request. */
  REQUEST: 0x25609513,
  /** First 4 bytes of a simple reply. */
  SIMPLE_REPLY: 0x67446698,
  /** First 4 bytes of a structured reply chunk. */
  STRUCTURED_REPLY: 0x668e33ef,
} as const;

/** Handshake flags the server sends after the greeting magics (16 bits). */
export const HandshakeFlag = {
  /** The server speaks fixed newstyle: options get replies, unknown options are not fatal. */
  FIXED_NEWSTYLE: 1 << 0,
  /** The server can leave out the 124 zero bytes after NBD_OPT_EXPORT_NAME. */
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags the client answers with (32 bits). Any other bit set means: close. */
export const ClientFlag = {
  /** The client speaks fixed newstyle; this server refuses clients that do not. */
  FIXED_NEWSTYLE: 1 << 0,
  /** The client does not want the 124 zero bytes after NBD_OPT_EXPORT_NAME. */
  NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags: what an export supports, sent with its size (16 bits). */
export const TransmissionFlag = {
  /** Always set: the flags field is meaningful. */
  HAS_FLAGS: 1 << 0,
  /** The export refuses writes, trims and zeroes. */
  READ_ONLY: 1 << 1,
  /** NBD_CMD_FLUSH is supported. */
  SEND_FLUSH: 1 << 2,
  /** NBD_CMD_FLAG_FUA is supported. */
  SEND_FUA: 1 << 3,
  /** The export behaves like a spinning disk (never set by Tessera). */
  ROTATIONAL: 1 << 4,
  /** NBD_CMD_TRIM is supported. */
  SEND_TRIM: 1 << 5,
  /** NBD_CMD_WRITE_ZEROES is supported. */
  SEND_WRITE_ZEROES: 1 << 6,
  /** NBD_CMD_FLAG_DF is supported on reads (not offered by Tessera). */
  SEND_DF: 1 << 7,
  /** Flush and FUA on one connection cover writes acknowledged on every connection. */
  CAN_MULTI_CONN: 1 << 8,
  /** NBD_CMD_RESIZE (experimental; not offered). */
  SEND_RESIZE: 1 << 9,
  /** NBD_CMD_CACHE is supported (not offered). */
  SEND_CACHE: 1 << 10,
  /** NBD_CMD_FLAG_FAST_ZERO is supported on write-zeroes. */
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Option types a client sends during the handshake (32 bits). */
export const Option = {
  /** Choose an export and enter transmission; errors can only be signalled by closing. */
  EXPORT_NAME: 1,
  /** End the handshake; the server replies with an ACK and closes. */
  ABORT: 2,
  /** List the exports: one NBD_REP_SERVER per export, then an ACK. */
  LIST: 3,
  /** Withdrawn; never used. */
  PEEK_EXPORT: 4,
  /** Upgrade to TLS (not supported: answered NBD_REP_ERR_UNSUP). */
  STARTTLS: 5,
  /** Describe an export (NBD_REP_INFO replies) without entering transmission. */
  INFO: 6,
  /** Like INFO, then enter transmission after the final ACK. */
  GO: 7,
  /** Use structured replies in transmission. */
  STRUCTURED_REPLY: 8,
  /** List metadata contexts matching queries. */
  LIST_META_CONTEXT: 9,
  /** Select the metadata contexts NBD_CMD_BLOCK_STATUS reports. */
  SET_META_CONTEXT: 10,
  /** 64-bit request and reply headers (not supported: answered NBD_REP_ERR_UNSUP). */
  EXTENDED_HEADERS: 11,
} as const;

/** Bit 31 marks an option reply type as an error. */
export const OPTION_REPLY_ERROR_BIT = 0x80000000;

/** Option reply types (32 bits). Errors have bit 31 set and may carry a message string. */
export const OptionReply = {
  /** The option succeeded, or the last reply of a list. No data. */
  ACK: 1,
  /** One export of NBD_OPT_LIST: u32 name length, name, optional description. */
  SERVER: 2,
  /** One piece of export information for NBD_OPT_INFO/GO: u16 info type, then its data. */
  INFO: 3,
  /** One metadata context: u32 context id, name. */
  META_CONTEXT: 4,
  /** The option is unknown to this server. */
  ERR_UNSUP: 0x80000001,
  /** The option is known and valid but policy forbids it. */
  ERR_POLICY: 0x80000002,
  /** The option is known but its data are malformed. */
  ERR_INVALID: 0x80000003,
  /** The option is not supported on this platform. */
  ERR_PLATFORM: 0x80000004,
  /** TLS must be negotiated first (never sent: this server has no TLS). */
  ERR_TLS_REQD: 0x80000005,
  /** The export named does not exist. */
  ERR_UNKNOWN: 0x80000006,
  /** The server is shutting down. */
  ERR_SHUTDOWN: 0x80000007,
  /** The export needs the client to honour block sizes (never sent). */
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  /** The request or its reply is too large to process. */
  ERR_TOO_BIG: 0x80000009,
} as const;

/** Information types in NBD_OPT_INFO/GO requests and NBD_REP_INFO replies (16 bits). */
export const Info = {
  /** u64 export size, u16 transmission flags. Always sent. */
  EXPORT: 0,
  /** The export's canonical name. */
  NAME: 1,
  /** A human-readable description. */
  DESCRIPTION: 2,
  /** u32 minimum, u32 preferred, u32 maximum block size. */
  BLOCK_SIZE: 3,
} as const;

/** Command types of transmission requests (16 bits). */
export const Command = {
  /** Read length bytes at offset. */
  READ: 0,
  /** Write the length-byte payload at offset. */
  WRITE: 1,
  /** Disconnect once in-flight requests are answered. No reply. */
  DISC: 2,
  /** Make every write already acknowledged durable. */
  FLUSH: 3,
  /** Deallocate a range; it reads as zeroes afterwards on Tessera. */
  TRIM: 4,
  /** Prefetch a range (not supported: EINVAL). */
  CACHE: 5,
  /** Write zeroes to a range without a payload. */
  WRITE_ZEROES: 6,
  /** Report metadata context states for a range (structured replies only). */
  BLOCK_STATUS: 7,
  /** Resize the export (experimental; not supported: EINVAL). */
  RESIZE: 8,
} as const;

/** Command flags of transmission requests (16 bits). */
export const CommandFlag = {
  /** Force unit access: durable before the reply. */
  FUA: 1 << 0,
  /** On write-zeroes: do not deallocate the range. */
  NO_HOLE: 1 << 1,
  /** On read: at most one content chunk (not offered). */
  DF: 1 << 2,
  /** On block status: one extent per context is enough. */
  REQ_ONE: 1 << 3,
  /** On write-zeroes: fail fast rather than write zeroes slowly. */
  FAST_ZERO: 1 << 4,
  /** On block status with extended headers: payload present (not offered). */
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Flags of a structured reply chunk (16 bits). */
export const ReplyFlag = {
  /** This is the last chunk of the reply. */
  DONE: 1 << 0,
} as const;

/** Bit 15 marks a structured reply chunk type as an error chunk. */
export const REPLY_TYPE_ERROR_BIT = 0x8000;

/** Structured reply chunk types (16 bits). */
export const ReplyType = {
  /** Nothing; only as the final chunk. Length 0. */
  NONE: 0,
  /** u64 offset, then data bytes of a read. */
  OFFSET_DATA: 1,
  /** u64 offset, u32 length of a run that reads as zeroes. */
  OFFSET_HOLE: 2,
  /** u32 context id, then (u32 length, u32 flags) descriptors. */
  BLOCK_STATUS: 5,
  /** u32 errno, u16 message length, message. */
  ERROR: 0x8001,
  /** u32 errno, u16 message length, message, u64 offset the error applies to. */
  ERROR_OFFSET: 0x8002,
} as const;

/** Error numbers of replies. Fixed by the protocol, independent of the host's errno values. */
export const Errno = {
  /** Success. */
  OK: 0,
  /** Operation not permitted: writes to a read-only export. */
  EPERM: 1,
  /** Input/output error: the storage failed. */
  EIO: 5,
  /** Out of memory (avoided). */
  ENOMEM: 12,
  /** Invalid argument: bad command, flags, range or length. */
  EINVAL: 22,
  /** No space: a write past the end, or storage full. */
  ENOSPC: 28,
  /** Value too large (unused: DF is not offered). */
  EOVERFLOW: 75,
  /** Operation not supported (unused). */
  ENOTSUP: 95,
  /** The server is shutting down: the client should disconnect. */
  ESHUTDOWN: 108,
} as const;

/** States of the `base:allocation` metadata context. */
export const AllocationState = {
  /** No data is stored for the run. */
  HOLE: 1 << 0,
  /** The run reads as zeroes. */
  ZERO: 1 << 1,
} as const;

/** States of the `tessera:changed-since:SNAP` and `qemu:dirty-bitmap:SNAP` contexts. */
export const ChangeState = {
  /** The run changed since the snapshot (a dirty-bitmap "dirty" bit). */
  CHANGED: 1 << 0,
} as const;

/** Names of the metadata contexts and their namespaces. */
export const MetaContext = {
  /** The standard allocation context. */
  BASE_ALLOCATION: 'base:allocation',
  /** Namespace of the standard contexts. */
  BASE_NAMESPACE: 'base:',
  /** Prefix of Tessera's changed-since contexts; the snapshot name follows. */
  TESSERA_CHANGED_SINCE: 'tessera:changed-since:',
  /** Namespace of Tessera's contexts. */
  TESSERA_NAMESPACE: 'tessera:',
  /** Prefix of qemu's dirty-bitmap contexts, answered as an alias of changed-since. */
  QEMU_DIRTY_BITMAP: 'qemu:dirty-bitmap:',
  /** Namespace of qemu's contexts. */
  QEMU_NAMESPACE: 'qemu:',
} as const;

/** Fixed sizes in bytes. */
export const Size = {
  /** Server greeting: NBDMAGIC, IHAVEOPT, u16 handshake flags. */
  GREETING: 18,
  /** Client flags. */
  CLIENT_FLAGS: 4,
  /** Option request header: IHAVEOPT, u32 option, u32 data length. */
  OPTION_HEADER: 16,
  /** Option reply header: magic, u32 option, u32 reply type, u32 data length. */
  OPTION_REPLY_HEADER: 20,
  /** NBD_OPT_EXPORT_NAME reply without its zero padding: u64 size, u16 flags. */
  EXPORT_NAME_REPLY: 10,
  /** The zero padding after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
  EXPORT_NAME_ZEROES: 124,
  /** Request header: magic, u16 flags, u16 type, u64 cookie, u64 offset, u32 length. */
  REQUEST_HEADER: 28,
  /** Simple reply header: magic, u32 error, u64 cookie. */
  SIMPLE_REPLY_HEADER: 16,
  /** Structured reply chunk header: magic, u16 flags, u16 type, u64 cookie, u32 length. */
  STRUCTURED_REPLY_HEADER: 20,
  /** One block status descriptor: u32 length, u32 flags. */
  BLOCK_DESCRIPTOR: 8,
  /** Longest string (export name, context name, message) the protocol allows. */
  STRING_MAX: 4096,
} as const;
