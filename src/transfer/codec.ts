/**
 * Pure codecs of the transfer protocol over Buffers (docs/transfer.md, "Wire format"): the frame
 * header, and bodies (a msgpack map, optionally followed by raw data). Decoding a header checks
 * everything a header alone can tell, so a body is never read on the word of a bad one.
 */
import { Packr } from 'msgpackr';
import { crc32 } from '../native/index.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import { Flag, FLAGS_KNOWN, Header, MAGIC, Size } from './spec.ts';

/** A decoded frame header. */
export interface FrameHeader {
  /** A FrameType value (not checked here: the gate knows which are acceptable). */
  type: number;
  flags: number;
  /** The sender's clock in µs as it wrote the frame. */
  sentUs: bigint;
  seq: number;
  bodyBytes: number;
  bodyCrc: number;
}

/** Standard msgpack (no record extension), maps as objects. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false });

function protocolError(message: string): TransferError {
  return new TransferError(TransferErrorCode.PROTOCOL, message);
}

/** The 32 bytes of a header, into `target` at `at`. */
export function encodeHeader(h: FrameHeader, target: Buffer = Buffer.allocUnsafe(Header.BYTES), at = 0): Buffer {
  target.writeUInt32LE(MAGIC, at + Header.MAGIC);
  target.writeUInt16LE(h.type, at + Header.TYPE);
  target.writeUInt16LE(h.flags, at + Header.FLAGS);
  target.writeBigUInt64LE(h.sentUs, at + Header.SENT_US);
  target.writeUInt32LE(h.seq >>> 0, at + Header.SEQ);
  target.writeUInt32LE(h.bodyBytes, at + Header.BODY_BYTES);
  target.writeUInt32LE(h.bodyCrc >>> 0, at + Header.BODY_CRC);
  target.writeUInt32LE(crc32(target.subarray(at, at + Header.HEADER_CRC)) >>> 0, at + Header.HEADER_CRC);
  return target;
}

/**
 * Decodes exactly 32 bytes. Throws TRANSFER_PROTOCOL on a bad magic, a bad header CRC, an
 * unknown flag or a body over Size.BODY_BYTES_MAX: the stream cannot be trusted past any of them.
 */
export function decodeHeader(buf: Buffer): FrameHeader {
  if (buf.length !== Header.BYTES) throw protocolError(`Frame header of ${buf.length} bytes, expected ${Header.BYTES}`);
  const magic = buf.readUInt32LE(Header.MAGIC);
  if (magic !== MAGIC) throw protocolError(`Bad frame magic 0x${magic.toString(16).padStart(8, '0')}: not a transfer peer`);
  const crc = buf.readUInt32LE(Header.HEADER_CRC);
  const expected = crc32(buf.subarray(0, Header.HEADER_CRC)) >>> 0;
  if (crc !== expected) throw protocolError(`Bad frame header CRC 0x${crc.toString(16)}, expected 0x${expected.toString(16)}`);
  const flags = buf.readUInt16LE(Header.FLAGS);
  if ((flags & ~FLAGS_KNOWN) !== 0) throw protocolError(`Unknown frame flags 0x${flags.toString(16)}`);
  const bodyBytes = buf.readUInt32LE(Header.BODY_BYTES);
  if (bodyBytes > Size.BODY_BYTES_MAX) throw protocolError(`Frame body of ${bodyBytes} bytes exceeds ${Size.BODY_BYTES_MAX}`);
  return {
    type: buf.readUInt16LE(Header.TYPE),
    flags,
    sentUs: buf.readBigUInt64LE(Header.SENT_US),
    seq: buf.readUInt32LE(Header.SEQ),
    bodyBytes,
    bodyCrc: buf.readUInt32LE(Header.BODY_CRC),
  };
}

/** A frame's body, encoded, waiting for its header (seq and time are set as it is written). */
export interface EncodedBody {
  /** Header.BYTES of room for the header, then the body's bytes before the payload. */
  head: Buffer;
  /** Raw data after `head`, not copied. */
  payload: Buffer | null;
  flags: number;
  bodyBytes: number;
  bodyCrc: number;
}

/**
 * Encodes a body: `meta` as a msgpack map (undefined: an empty body) and `payload` raw after a
 * u32 length of the map. Throws TRANSFER_LIMIT past Size.META_BYTES_MAX or Size.PAYLOAD_BYTES_MAX.
 */
export function encodeBody(meta: object | undefined, payload?: Buffer | null, extraFlags = 0): EncodedBody {
  const packed = meta === undefined ? null : packr.pack(meta);
  const metaBytes = packed?.length ?? 0;
  if (metaBytes > Size.META_BYTES_MAX) throw new TransferError(TransferErrorCode.LIMIT, `Frame fields of ${metaBytes} bytes exceed ${Size.META_BYTES_MAX}`);
  if (payload === undefined || payload === null) {
    const head = Buffer.allocUnsafe(Header.BYTES + metaBytes);
    if (packed !== null) packed.copy(head, Header.BYTES);
    return { head, payload: null, flags: extraFlags, bodyBytes: metaBytes, bodyCrc: metaBytes === 0 ? 0 : crc32(head.subarray(Header.BYTES)) >>> 0 };
  }
  if (payload.length > Size.PAYLOAD_BYTES_MAX) throw new TransferError(TransferErrorCode.LIMIT, `Payload of ${payload.length} bytes exceeds ${Size.PAYLOAD_BYTES_MAX}`);
  const head = Buffer.allocUnsafe(Header.BYTES + 4 + metaBytes);
  head.writeUInt32LE(metaBytes, Header.BYTES);
  if (packed !== null) packed.copy(head, Header.BYTES + 4);
  const bodyCrc = crc32(payload, crc32(head.subarray(Header.BYTES))) >>> 0;
  return { head, payload, flags: Flag.PAYLOAD | extraFlags, bodyBytes: 4 + metaBytes + payload.length, bodyCrc };
}

/** Fills the header room of `body` for `type`, `seq` and `sentUs`; returns the buffers to write, in order. */
export function sealFrame(type: number, seq: number, sentUs: bigint, body: EncodedBody): Buffer[] {
  encodeHeader({ type, flags: body.flags, sentUs, seq, bodyBytes: body.bodyBytes, bodyCrc: body.bodyCrc }, body.head, 0);
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

/** Decodes a body whose CRC was checked. Views of `body` are kept, not copies. */
export function decodeBody(flags: number, body: Buffer): DecodedBody {
  let metaBuf = body;
  let payload: Buffer | null = null;
  if ((flags & Flag.PAYLOAD) !== 0) {
    if (body.length < 4) return { meta: null, payload: null, malformed: `body of ${body.length} bytes has no room for its meta length` };
    const metaBytes = body.readUInt32LE(0);
    if (metaBytes > body.length - 4) return { meta: null, payload: null, malformed: `meta length ${metaBytes} exceeds the body's ${body.length - 4} bytes` };
    if (metaBytes > Size.META_BYTES_MAX) return { meta: null, payload: null, malformed: `meta of ${metaBytes} bytes exceeds ${Size.META_BYTES_MAX}` };
    metaBuf = body.subarray(4, 4 + metaBytes);
    payload = body.subarray(4 + metaBytes);
  } else if (body.length > Size.META_BYTES_MAX) {
    return { meta: null, payload: null, malformed: `meta of ${body.length} bytes exceeds ${Size.META_BYTES_MAX}` };
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

const knownCodes = new Set<string>(Object.values(TransferErrorCode));

/** The body of an error frame for `err`. */
export function errorBody(err: TransferError): EncodedBody {
  return encodeBody({ code: err.code, message: err.message }, null, Flag.ERROR);
}

/** The TransferError an error frame's body describes; a malformed one is TRANSFER_PROTOCOL. */
export function errorFromBody(body: DecodedBody): TransferError {
  const meta = body.meta;
  if (meta === null || typeof meta.code !== 'string' || typeof meta.message !== 'string') {
    return protocolError(`Malformed error frame from the peer${body.malformed === null ? '' : `: ${body.malformed}`}`);
  }
  if (!knownCodes.has(meta.code)) return protocolError(`The peer answered with an unknown error ${meta.code}: ${meta.message}`);
  return new TransferError(meta.code as TransferError['code'], meta.message.slice(0, 500));
}
