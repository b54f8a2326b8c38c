/**
 * Pure codecs of the peer protocol over Buffers: the frame header, and bodies (a msgpack map,
 * optionally followed by raw data). Decoding a header checks everything a header alone can tell,
 * so a body is never read on the word of a bad one.
 */
import { Packr } from 'msgpackr';
import { crc32 } from '../../native/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { Flag, FLAGS_KNOWN, Header, MAGIC, Size } from './spec.ts';

/** A decoded frame header. */
export interface FrameHeader {
  /** A MessageType value (not checked here: the gate knows which are acceptable). */
  type: number;
  /** Flag bits. */
  flags: number;
  requestId: bigint;
  bodyBytes: number;
  /** CRC-32 of the body. */
  bodyCrc: number;
}

/** Standard msgpack (no record extension), maps as objects, int64 as bigint (HLC values). */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint', moreTypes: false, bundleStrings: false });

function protocolError(message: string): ClusterError {
  return new ClusterError(ClusterErrorCode.PROTOCOL, message);
}

/** The 32 bytes of a header (at `target[at..]` if given). */
export function encodeHeader(h: FrameHeader, target: Buffer = Buffer.allocUnsafe(Header.BYTES), at = 0): Buffer {
  target.writeUInt32LE(MAGIC, at + Header.MAGIC);
  target.writeUInt16LE(h.type, at + Header.TYPE);
  target.writeUInt16LE(h.flags, at + Header.FLAGS);
  target.writeBigUInt64LE(h.requestId, at + Header.REQUEST_ID);
  target.writeUInt32LE(h.bodyBytes, at + Header.BODY_BYTES);
  target.writeUInt32LE(h.bodyCrc >>> 0, at + Header.BODY_CRC);
  target.writeUInt32LE(0, at + Header.RESERVED);
  target.writeUInt32LE(crc32(target.subarray(at, at + Header.HEADER_CRC)) >>> 0, at + Header.HEADER_CRC);
  return target;
}

/**
 * Decodes exactly 32 bytes. Throws CLUSTER_PROTOCOL on a bad magic, a bad header CRC, a nonzero
 * reserved field, an unknown flag or a body over Size.BODY_BYTES_MAX: the stream cannot be
 * trusted past any of them.
 */
export function decodeHeader(buf: Buffer): FrameHeader {
  if (buf.length !== Header.BYTES) throw protocolError(`Frame header of ${buf.length} bytes, expected ${Header.BYTES}`);
  const magic = buf.readUInt32LE(Header.MAGIC);
  if (magic !== MAGIC) throw protocolError(`Bad frame magic 0x${magic.toString(16).padStart(8, '0')}`);
  const crc = buf.readUInt32LE(Header.HEADER_CRC);
  const expected = crc32(buf.subarray(0, Header.HEADER_CRC)) >>> 0;
  if (crc !== expected) throw protocolError(`Bad frame header CRC 0x${crc.toString(16)}, expected 0x${expected.toString(16)}`);
  if (buf.readUInt32LE(Header.RESERVED) !== 0) throw protocolError('Frame header reserved field is not 0');
  const flags = buf.readUInt16LE(Header.FLAGS);
  if ((flags & ~FLAGS_KNOWN) !== 0) throw protocolError(`Unknown frame flags 0x${flags.toString(16)}`);
  const bodyBytes = buf.readUInt32LE(Header.BODY_BYTES);
  if (bodyBytes > Size.BODY_BYTES_MAX) throw protocolError(`Frame body of ${bodyBytes} bytes exceeds ${Size.BODY_BYTES_MAX}`);
  return {
    type: buf.readUInt16LE(Header.TYPE),
    flags,
    requestId: buf.readBigUInt64LE(Header.REQUEST_ID),
    bodyBytes,
    bodyCrc: buf.readUInt32LE(Header.BODY_CRC),
  };
}

/** A body ready to send: `head` holds the header's room, then the meta part; `payload` follows it raw. */
export interface EncodedBody {
  /** Header.BYTES of room for the header, then the body's bytes before the payload. */
  head: Buffer;
  payload: Buffer | null;
  /** Flag.PAYLOAD when there is a payload. */
  flags: number;
  bodyBytes: number;
  bodyCrc: number;
}

/**
 * Encodes a body: `meta` as a msgpack map (undefined: an empty body), and `payload` raw after a
 * u32 length of the map. Throws CLUSTER_LIMIT when the meta part beside a payload exceeds
 * Size.META_BYTES_MAX, the payload Size.PAYLOAD_BYTES_MAX or the body Size.BODY_BYTES_MAX.
 */
export function encodeBody(meta: object | undefined, payload?: Buffer | null): EncodedBody {
  const packed = meta === undefined ? null : packr.pack(meta);
  if (payload === undefined || payload === null) {
    const bodyBytes = packed?.length ?? 0;
    if (bodyBytes > Size.BODY_BYTES_MAX) throw new ClusterError(ClusterErrorCode.LIMIT, `Message body of ${bodyBytes} bytes exceeds ${Size.BODY_BYTES_MAX}`);
    const head = Buffer.allocUnsafe(Header.BYTES + bodyBytes);
    if (packed !== null) packed.copy(head, Header.BYTES);
    return { head, payload: null, flags: 0, bodyBytes, bodyCrc: bodyBytes === 0 ? 0 : crc32(head.subarray(Header.BYTES)) >>> 0 };
  }
  const metaBytes = packed?.length ?? 0;
  if (metaBytes > Size.META_BYTES_MAX) throw new ClusterError(ClusterErrorCode.LIMIT, `Message fields of ${metaBytes} bytes exceed ${Size.META_BYTES_MAX}`);
  if (payload.length > Size.PAYLOAD_BYTES_MAX) throw new ClusterError(ClusterErrorCode.LIMIT, `Payload of ${payload.length} bytes exceeds ${Size.PAYLOAD_BYTES_MAX}`);
  const head = Buffer.allocUnsafe(Header.BYTES + 4 + metaBytes);
  head.writeUInt32LE(metaBytes, Header.BYTES);
  if (packed !== null) packed.copy(head, Header.BYTES + 4);
  const bodyCrc = crc32(payload, crc32(head.subarray(Header.BYTES))) >>> 0;
  return { head, payload, flags: Flag.PAYLOAD, bodyBytes: 4 + metaBytes + payload.length, bodyCrc };
}

/** A whole frame as the buffers to write, in order (the payload is not copied). */
export function encodeFrame(type: number, flags: number, requestId: bigint, body: EncodedBody): Buffer[] {
  encodeHeader({ type, flags: flags | body.flags, requestId, bodyBytes: body.bodyBytes, bodyCrc: body.bodyCrc }, body.head, 0);
  return body.payload === null || body.payload.length === 0 ? [body.head] : [body.head, body.payload];
}

/** A body as decoded: never thrown, so the gate can name what was wrong. */
export interface DecodedBody {
  /** The msgpack map (an empty body reads as `{}`); null when malformed. */
  meta: Record<string, unknown> | null;
  /** The raw data after the map (Flag.PAYLOAD), else null. */
  payload: Buffer | null;
  /** What is wrong with the body, or null. */
  malformed: string | null;
}

/** Decodes a body whose CRC was checked. A view of `body` is kept, not copied. */
export function decodeBody(flags: number, body: Buffer): DecodedBody {
  let metaBuf = body;
  let payload: Buffer | null = null;
  if ((flags & Flag.PAYLOAD) !== 0) {
    if (body.length < 4) return { meta: null, payload: null, malformed: `body of ${body.length} bytes has no room for its meta length` };
    const metaBytes = body.readUInt32LE(0);
    if (metaBytes > body.length - 4) return { meta: null, payload: null, malformed: `meta length ${metaBytes} exceeds the body's ${body.length - 4} bytes` };
    metaBuf = body.subarray(4, 4 + metaBytes);
    payload = body.subarray(4 + metaBytes);
  }
  if (metaBuf.length === 0) return { meta: {}, payload, malformed: null };
  let meta: unknown;
  try {
    meta = packr.unpack(metaBuf);
  } catch (err) {
    return { meta: null, payload, malformed: `not msgpack: ${(err as Error).message}` };
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || Buffer.isBuffer(meta) || meta instanceof Date) {
    return { meta: null, payload, malformed: 'not a msgpack map' };
  }
  return { meta: meta as Record<string, unknown>, payload, malformed: null };
}

const knownCodes = new Set<string>(Object.values(ClusterErrorCode));

/**
 * An error frame: with `response`, the error answer to request `requestId` of `type`; without,
 * a notice (request id 0) that the sender is closing the connection for `err`.
 */
export function encodeErrorFrame(type: number, requestId: bigint, err: ClusterError, response: boolean): Buffer[] {
  const body: { code: string; message: string; current?: number; engine?: string } = { code: err.code, message: err.message };
  if (err.current !== null) body.current = err.current;
  if (err.engine !== null) body.engine = err.engine;
  return encodeFrame(type, Flag.ERROR | (response ? Flag.RESPONSE : 0), requestId, encodeBody(body));
}

/** The ClusterError an error body describes; a malformed body or an unknown code is a CLUSTER_PROTOCOL error. */
export function errorFromBody(body: DecodedBody): ClusterError {
  const meta = body.meta;
  if (meta === null || typeof meta.code !== 'string' || typeof meta.message !== 'string') {
    return protocolError(`Malformed error body from the peer${body.malformed === null ? '' : `: ${body.malformed}`}`);
  }
  if (!knownCodes.has(meta.code)) return protocolError(`The peer answered with an unknown error ${meta.code}: ${meta.message}`);
  const current = typeof meta.current === 'number' && Number.isSafeInteger(meta.current) ? meta.current : undefined;
  const engine = typeof meta.engine === 'string' && /^ENGINE_[A-Z_]{1,40}$/.test(meta.engine) ? meta.engine : undefined;
  return new ClusterError(meta.code as ClusterError['code'], meta.message, { current, engine });
}
