/**
 * Pure encoders and decoders of NBD messages, both directions (the server's and, for tests and
 * tools, the client's). Encoders size the message first and allocate once. Decoders take exactly
 * the bytes of one message and reject anything else: they return null for malformed client data
 * the server answers with an error, and throw NbdError for a broken stream.
 */
import assert from 'node:assert/strict';
import { NbdError, NbdErrorCode } from './errors.ts';
import { Info, Magic, OptionReply, ReplyType, Size } from './protocol.ts';

/** A transmission request header as decoded. */
export interface RequestHeader {
  /** Command flags (CommandFlag bits). */
  flags: number;
  /** Command type (Command). */
  type: number;
  /** Opaque value the reply must echo ("handle" in older versions of the protocol). */
  cookie: bigint;
  /** Byte offset. Values past 2^53 lose precision but stay past the end of any export. */
  offset: number;
  /** Byte length. */
  length: number;
}

/** One block status descriptor. */
export interface BlockDescriptor {
  length: number;
  flags: number;
}

const TWO_POW_32 = 2 ** 32;

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_POW_32 + buf.readUInt32BE(at + 4);
}

function checkLength(buf: Buffer, expected: number, what: string): void {
  if (buf.length !== expected) {
    throw new NbdError(NbdErrorCode.PROTOCOL, `${what} is ${buf.length} bytes, expected ${expected}`);
  }
}

/** Decodes a protocol string: UTF-8 without NUL, at most Size.STRING_MAX bytes; null if not one. */
function decodeString(buf: Buffer): string | null {
  if (buf.length > Size.STRING_MAX || buf.includes(0)) return null;
  const text = buf.toString('utf8');
  // A round trip that changes the length means the bytes were not valid UTF-8.
  if (Buffer.byteLength(text) !== buf.length) return null;
  return text;
}

// ---------------------------------------------------------------------------------------------
// Handshake, server to client

/** The greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.GREETING);
  buf.writeBigUInt64BE(Magic.NBDMAGIC, 0);
  buf.writeBigUInt64BE(Magic.IHAVEOPT, 8);
  buf.writeUInt16BE(handshakeFlags, 16);
  return buf;
}

/** Decodes the greeting; returns the handshake flags. */
export function decodeGreeting(buf: Buffer): number {
  checkLength(buf, Size.GREETING, 'Greeting');
  if (buf.readBigUInt64BE(0) !== Magic.NBDMAGIC || buf.readBigUInt64BE(8) !== Magic.IHAVEOPT) {
    throw new NbdError(NbdErrorCode.PROTOCOL, 'Greeting has wrong magic (not a fixed newstyle server)');
  }
  return buf.readUInt16BE(16);
}

/** Allocates an option reply with room for `bodyBytes` of data after the header. */
function optionReply(option: number, replyType: number, bodyBytes: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.OPTION_REPLY_HEADER + bodyBytes);
  buf.writeBigUInt64BE(Magic.OPTION_REPLY, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(replyType >>> 0, 12);
  buf.writeUInt32BE(bodyBytes, 16);
  return buf;
}

/** An option reply without data (NBD_REP_ACK and friends). */
export function encodeOptionAck(option: number): Buffer {
  return optionReply(option, OptionReply.ACK, 0);
}

/** An error reply to an option, with a human-readable message. */
export function encodeOptionError(option: number, replyType: number, message: string): Buffer {
  assert.ok(replyType >= 0x80000000, 'option error reply type must have bit 31 set');
  const text = truncateUtf8(message, Size.STRING_MAX);
  const buf = optionReply(option, replyType, text.length);
  text.copy(buf, Size.OPTION_REPLY_HEADER);
  return buf;
}

/** NBD_REP_SERVER: one export of NBD_OPT_LIST. */
export function encodeRepServer(option: number, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const buf = optionReply(option, OptionReply.SERVER, 4 + nameBytes);
  buf.writeUInt32BE(nameBytes, Size.OPTION_REPLY_HEADER);
  buf.write(name, Size.OPTION_REPLY_HEADER + 4);
  return buf;
}

/** NBD_REP_INFO with NBD_INFO_EXPORT: size and transmission flags. */
export function encodeInfoExport(option: number, sizeBytes: number, transmissionFlags: number): Buffer {
  const buf = optionReply(option, OptionReply.INFO, 12);
  const at = Size.OPTION_REPLY_HEADER;
  buf.writeUInt16BE(Info.EXPORT, at);
  writeU64(buf, sizeBytes, at + 2);
  buf.writeUInt16BE(transmissionFlags, at + 10);
  return buf;
}

/** NBD_REP_INFO with NBD_INFO_NAME or NBD_INFO_DESCRIPTION: a string. */
export function encodeInfoString(option: number, infoType: number, text: string): Buffer {
  assert.ok(infoType === Info.NAME || infoType === Info.DESCRIPTION);
  const textBytes = Buffer.byteLength(text);
  const buf = optionReply(option, OptionReply.INFO, 2 + textBytes);
  buf.writeUInt16BE(infoType, Size.OPTION_REPLY_HEADER);
  buf.write(text, Size.OPTION_REPLY_HEADER + 2);
  return buf;
}

/** NBD_REP_INFO with NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum block size. */
export function encodeInfoBlockSize(option: number, minimum: number, preferred: number, maximum: number): Buffer {
  const buf = optionReply(option, OptionReply.INFO, 14);
  const at = Size.OPTION_REPLY_HEADER;
  buf.writeUInt16BE(Info.BLOCK_SIZE, at);
  buf.writeUInt32BE(minimum, at + 2);
  buf.writeUInt32BE(preferred, at + 6);
  buf.writeUInt32BE(maximum, at + 10);
  return buf;
}

/** NBD_REP_META_CONTEXT: a context id and its name. */
export function encodeRepMetaContext(option: number, contextId: number, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const buf = optionReply(option, OptionReply.META_CONTEXT, 4 + nameBytes);
  buf.writeUInt32BE(contextId, Size.OPTION_REPLY_HEADER);
  buf.write(name, Size.OPTION_REPLY_HEADER + 4);
  return buf;
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless agreed away. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(Size.EXPORT_NAME_REPLY + (noZeroes ? 0 : Size.EXPORT_NAME_ZEROES));
  writeU64(buf, sizeBytes, 0);
  buf.writeUInt16BE(transmissionFlags, 8);
  return buf;
}

/** Decoded option reply header. */
export interface OptionReplyHeader {
  option: number;
  replyType: number;
  length: number;
}

/** Decodes an option reply header. */
export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  checkLength(buf, Size.OPTION_REPLY_HEADER, 'Option reply header');
  if (buf.readBigUInt64BE(0) !== Magic.OPTION_REPLY) throw new NbdError(NbdErrorCode.PROTOCOL, 'Option reply has wrong magic');
  return { option: buf.readUInt32BE(8), replyType: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

/** Decodes the data of NBD_REP_SERVER; returns the export name. */
export function decodeRepServer(data: Buffer): string {
  if (data.length < 4 || data.readUInt32BE(0) > data.length - 4) throw new NbdError(NbdErrorCode.PROTOCOL, 'Malformed NBD_REP_SERVER');
  return data.toString('utf8', 4, 4 + data.readUInt32BE(0));
}

/** A decoded NBD_REP_INFO. */
export type InfoReply =
  | { type: typeof Info.EXPORT; sizeBytes: number; transmissionFlags: number }
  | { type: typeof Info.NAME | typeof Info.DESCRIPTION; text: string }
  | { type: typeof Info.BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: number };

/** Decodes the data of NBD_REP_INFO. */
export function decodeInfoReply(data: Buffer): InfoReply {
  if (data.length < 2) throw new NbdError(NbdErrorCode.PROTOCOL, 'Malformed NBD_REP_INFO');
  const type = data.readUInt16BE(0);
  switch (type) {
    case Info.EXPORT:
      checkLength(data, 12, 'NBD_INFO_EXPORT');
      return { type, sizeBytes: readU64(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case Info.NAME:
    case Info.DESCRIPTION:
      return { type, text: data.toString('utf8', 2) };
    case Info.BLOCK_SIZE:
      checkLength(data, 14, 'NBD_INFO_BLOCK_SIZE');
      return { type, minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default:
      return { type };
  }
}

/** Decodes the data of NBD_REP_META_CONTEXT. */
export function decodeRepMetaContext(data: Buffer): { contextId: number; name: string } {
  if (data.length < 4) throw new NbdError(NbdErrorCode.PROTOCOL, 'Malformed NBD_REP_META_CONTEXT');
  return { contextId: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}

/** Decodes the reply to NBD_OPT_EXPORT_NAME (10 bytes, or 134 with the zero padding). */
export function decodeExportNameReply(buf: Buffer): { sizeBytes: number; transmissionFlags: number } {
  if (buf.length !== Size.EXPORT_NAME_REPLY && buf.length !== Size.EXPORT_NAME_REPLY + Size.EXPORT_NAME_ZEROES) {
    throw new NbdError(NbdErrorCode.PROTOCOL, `Export name reply is ${buf.length} bytes`);
  }
  return { sizeBytes: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

// ---------------------------------------------------------------------------------------------
// Handshake, client to server

/** The client flags. */
export function encodeClientFlags(clientFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.CLIENT_FLAGS);
  buf.writeUInt32BE(clientFlags, 0);
  return buf;
}

/** Decodes the client flags. */
export function decodeClientFlags(buf: Buffer): number {
  checkLength(buf, Size.CLIENT_FLAGS, 'Client flags');
  return buf.readUInt32BE(0);
}

/** An option request: IHAVEOPT, option, data length, data. */
export function encodeOptionRequest(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(Size.OPTION_HEADER + data.length);
  buf.writeBigUInt64BE(Magic.IHAVEOPT, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, Size.OPTION_HEADER);
  return buf;
}

/** Decodes an option request header; throws on wrong magic (the stream cannot be trusted). */
export function decodeOptionHeader(buf: Buffer): { option: number; length: number } {
  checkLength(buf, Size.OPTION_HEADER, 'Option header');
  if (buf.readBigUInt64BE(0) !== Magic.IHAVEOPT) throw new NbdError(NbdErrorCode.PROTOCOL, 'Option request has wrong magic');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

/** The data of NBD_OPT_INFO/GO: export name and the information types wanted. */
export function encodeInfoRequestData(name: string, infoTypes: readonly number[]): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const buf = Buffer.allocUnsafe(4 + nameBytes + 2 + 2 * infoTypes.length);
  buf.writeUInt32BE(nameBytes, 0);
  buf.write(name, 4);
  let at = 4 + nameBytes;
  buf.writeUInt16BE(infoTypes.length, at);
  at += 2;
  for (const type of infoTypes) {
    buf.writeUInt16BE(type, at);
    at += 2;
  }
  return buf;
}

/** Decodes the data of NBD_OPT_INFO/GO; null if malformed. */
export function decodeInfoRequestData(data: Buffer): { name: string; infoTypes: number[] } | null {
  if (data.length < 6) return null;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return null;
  const name = decodeString(data.subarray(4, 4 + nameBytes));
  if (name === null) return null;
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) return null;
  const infoTypes: number[] = [];
  for (let i = 0, at = 6 + nameBytes; i < count; i++, at += 2) infoTypes.push(data.readUInt16BE(at));
  return { name, infoTypes };
}

/** The data of NBD_OPT_LIST/SET_META_CONTEXT: export name and queries. */
export function encodeMetaContextRequestData(name: string, queries: readonly string[]): Buffer {
  const nameBytes = Buffer.byteLength(name);
  let total = 4 + nameBytes + 4;
  for (const query of queries) total += 4 + Buffer.byteLength(query);
  const buf = Buffer.allocUnsafe(total);
  buf.writeUInt32BE(nameBytes, 0);
  let at = 4 + buf.write(name, 4);
  buf.writeUInt32BE(queries.length, at);
  at += 4;
  for (const query of queries) {
    const written = buf.write(query, at + 4);
    buf.writeUInt32BE(written, at);
    at += 4 + written;
  }
  assert.equal(at, total);
  return buf;
}

/** Decodes the data of NBD_OPT_LIST/SET_META_CONTEXT; null if malformed. */
export function decodeMetaContextRequestData(data: Buffer): { name: string; queries: string[] } | null {
  if (data.length < 8) return null;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 8) return null;
  const name = decodeString(data.subarray(4, 4 + nameBytes));
  if (name === null) return null;
  let at = 4 + nameBytes;
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query takes at least its 4-byte length: a larger count cannot fit.
  if (count > (data.length - at) / 4) return null;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - at < 4) return null;
    const queryBytes = data.readUInt32BE(at);
    at += 4;
    if (queryBytes > data.length - at) return null;
    const query = decodeString(data.subarray(at, at + queryBytes));
    if (query === null) return null;
    queries.push(query);
    at += queryBytes;
  }
  return at === data.length ? { name, queries } : null;
}

/** Decodes the data of NBD_OPT_EXPORT_NAME; null if not a valid string. */
export function decodeExportNameData(data: Buffer): string | null {
  return decodeString(data);
}

// ---------------------------------------------------------------------------------------------
// Transmission

/** A request header (its write payload, if any, follows separately). */
export function encodeRequestHeader(header: RequestHeader): Buffer {
  const buf = Buffer.allocUnsafe(Size.REQUEST_HEADER);
  buf.writeUInt32BE(Magic.REQUEST, 0);
  buf.writeUInt16BE(header.flags, 4);
  buf.writeUInt16BE(header.type, 6);
  buf.writeBigUInt64BE(header.cookie, 8);
  writeU64(buf, header.offset, 16);
  buf.writeUInt32BE(header.length, 24);
  return buf;
}

/** Decodes a request header; throws on wrong magic (the stream cannot be trusted). */
export function decodeRequestHeader(buf: Buffer): RequestHeader {
  checkLength(buf, Size.REQUEST_HEADER, 'Request header');
  const magic = buf.readUInt32BE(0);
  if (magic !== Magic.REQUEST) {
    throw new NbdError(NbdErrorCode.PROTOCOL, `Request has wrong magic 0x${magic.toString(16).padStart(8, '0')}`);
  }
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: readU64(buf, 16),
    length: buf.readUInt32BE(24),
  };
}

/** A simple reply header; a successful read's data follows it. */
export function encodeSimpleReply(cookie: bigint, errno: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.SIMPLE_REPLY_HEADER);
  buf.writeUInt32BE(Magic.SIMPLE_REPLY, 0);
  buf.writeUInt32BE(errno, 4);
  buf.writeBigUInt64BE(cookie, 8);
  return buf;
}

/** Decodes a simple reply header. */
export function decodeSimpleReply(buf: Buffer): { errno: number; cookie: bigint } {
  checkLength(buf, Size.SIMPLE_REPLY_HEADER, 'Simple reply');
  if (buf.readUInt32BE(0) !== Magic.SIMPLE_REPLY) throw new NbdError(NbdErrorCode.PROTOCOL, 'Simple reply has wrong magic');
  return { errno: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
}

/** Allocates a structured reply chunk with room for `extraBytes` after the chunk header. */
function chunk(cookie: bigint, flags: number, type: number, payloadBytes: number, extraBytes: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.STRUCTURED_REPLY_HEADER + extraBytes);
  buf.writeUInt32BE(Magic.STRUCTURED_REPLY, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  buf.writeBigUInt64BE(cookie, 8);
  buf.writeUInt32BE(payloadBytes, 16);
  return buf;
}

/** A structured chunk without payload (NBD_REPLY_TYPE_NONE). */
export function encodeNoneChunk(cookie: bigint, flags: number): Buffer {
  return chunk(cookie, flags, ReplyType.NONE, 0, 0);
}

/**
 * The head of an NBD_REPLY_TYPE_OFFSET_DATA chunk: chunk header and offset. The `dataBytes` of
 * data follow it separately, so a read's buffer is sent without copying.
 */
export function encodeOffsetDataHead(cookie: bigint, flags: number, offset: number, dataBytes: number): Buffer {
  assert.ok(dataBytes > 0 && dataBytes <= 0xffffffff - 8);
  const buf = chunk(cookie, flags, ReplyType.OFFSET_DATA, 8 + dataBytes, 8);
  writeU64(buf, offset, Size.STRUCTURED_REPLY_HEADER);
  return buf;
}

/** An NBD_REPLY_TYPE_OFFSET_HOLE chunk: `length` bytes at `offset` read as zeroes. */
export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  assert.ok(length > 0 && length <= 0xffffffff);
  const buf = chunk(cookie, flags, ReplyType.OFFSET_HOLE, 12, 12);
  writeU64(buf, offset, Size.STRUCTURED_REPLY_HEADER);
  buf.writeUInt32BE(length, Size.STRUCTURED_REPLY_HEADER + 8);
  return buf;
}

/** An error chunk: NBD_REPLY_TYPE_ERROR, or NBD_REPLY_TYPE_ERROR_OFFSET when `offset` is given. */
export function encodeErrorChunk(cookie: bigint, flags: number, errno: number, message: string, offset?: number): Buffer {
  assert.ok(errno !== 0, 'an error chunk needs a nonzero error');
  // The message length field is 16 bits; the protocol's string limit is smaller anyway.
  const text = truncateUtf8(message, Size.STRING_MAX);
  const tail = offset === undefined ? 0 : 8;
  const payloadBytes = 6 + text.length + tail;
  const type = offset === undefined ? ReplyType.ERROR : ReplyType.ERROR_OFFSET;
  const buf = chunk(cookie, flags, type, payloadBytes, payloadBytes);
  let at = Size.STRUCTURED_REPLY_HEADER;
  buf.writeUInt32BE(errno, at);
  buf.writeUInt16BE(text.length, at + 4);
  text.copy(buf, at + 6);
  at += 6 + text.length;
  if (offset !== undefined) writeU64(buf, offset, at);
  return buf;
}

/** An NBD_REPLY_TYPE_BLOCK_STATUS chunk: a context id and its descriptors. */
export function encodeBlockStatusChunk(cookie: bigint, flags: number, contextId: number, extents: readonly BlockDescriptor[]): Buffer {
  assert.ok(extents.length > 0, 'a block status chunk needs at least one descriptor');
  const payloadBytes = 4 + Size.BLOCK_DESCRIPTOR * extents.length;
  const buf = chunk(cookie, flags, ReplyType.BLOCK_STATUS, payloadBytes, payloadBytes);
  let at = Size.STRUCTURED_REPLY_HEADER;
  buf.writeUInt32BE(contextId, at);
  at += 4;
  for (const extent of extents) {
    assert.ok(extent.length > 0 && extent.length <= 0xffffffff);
    buf.writeUInt32BE(extent.length, at);
    buf.writeUInt32BE(extent.flags >>> 0, at + 4);
    at += 8;
  }
  return buf;
}

/** A decoded structured reply chunk header. */
export interface ChunkHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

/** Decodes a structured reply chunk header. */
export function decodeChunkHeader(buf: Buffer): ChunkHeader {
  checkLength(buf, Size.STRUCTURED_REPLY_HEADER, 'Structured reply header');
  if (buf.readUInt32BE(0) !== Magic.STRUCTURED_REPLY) throw new NbdError(NbdErrorCode.PROTOCOL, 'Structured reply has wrong magic');
  return { flags: buf.readUInt16BE(4), type: buf.readUInt16BE(6), cookie: buf.readBigUInt64BE(8), length: buf.readUInt32BE(16) };
}

/** Decodes the payload of an NBD_REPLY_TYPE_OFFSET_DATA chunk (offset and a view of the data). */
export function decodeOffsetData(payload: Buffer): { offset: number; data: Buffer } {
  if (payload.length < 9) throw new NbdError(NbdErrorCode.PROTOCOL, 'Offset data chunk shorter than 9 bytes');
  return { offset: readU64(payload, 0), data: payload.subarray(8) };
}

/** Decodes the payload of an NBD_REPLY_TYPE_OFFSET_HOLE chunk. */
export function decodeOffsetHole(payload: Buffer): { offset: number; length: number } {
  checkLength(payload, 12, 'Offset hole chunk');
  return { offset: readU64(payload, 0), length: payload.readUInt32BE(8) };
}

/** Decodes the payload of an error chunk of type `type`. */
export function decodeErrorChunk(type: number, payload: Buffer): { errno: number; message: string; offset?: number } {
  const tail = type === ReplyType.ERROR_OFFSET ? 8 : 0;
  if (payload.length < 6 + tail) throw new NbdError(NbdErrorCode.PROTOCOL, 'Error chunk too short');
  const messageBytes = payload.readUInt16BE(4);
  if (payload.length !== 6 + messageBytes + tail) throw new NbdError(NbdErrorCode.PROTOCOL, 'Error chunk length mismatch');
  const result: { errno: number; message: string; offset?: number } = {
    errno: payload.readUInt32BE(0),
    message: payload.toString('utf8', 6, 6 + messageBytes),
  };
  if (tail) result.offset = readU64(payload, 6 + messageBytes);
  return result;
}

/** Decodes the payload of an NBD_REPLY_TYPE_BLOCK_STATUS chunk. */
export function decodeBlockStatus(payload: Buffer): { contextId: number; extents: BlockDescriptor[] } {
  if (payload.length < 4 + Size.BLOCK_DESCRIPTOR || (payload.length - 4) % Size.BLOCK_DESCRIPTOR !== 0) {
    throw new NbdError(NbdErrorCode.PROTOCOL, `Block status chunk of ${payload.length} bytes`);
  }
  const extents: BlockDescriptor[] = [];
  for (let at = 4; at < payload.length; at += Size.BLOCK_DESCRIPTOR) {
    extents.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  }
  return { contextId: payload.readUInt32BE(0), extents };
}

/** UTF-8 bytes of `text`, cut to at most `maxBytes` without splitting a character. */
function truncateUtf8(text: string, maxBytes: number): Buffer {
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return bytes;
  let end = maxBytes;
  // Back up over continuation bytes (10xxxxxx) so the cut falls on a character boundary.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}
