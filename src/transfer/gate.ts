/**
 * The receiver's one gate (docs/transfer.md, "Wire format"): each frame a sender may send after
 * the handshake is decided here, in pure functions that return the request to act on or the
 * rule it broke, a sentence naming the value (`"DATA past its chunk: offset … > …"`). Code past
 * the gate trusts what it was given.
 */
import { TransferErrorCode, type TransferErrorCodeValue } from './errors.ts';
import { FrameType, Limit, ServiceClass, Size, typeName, type ServiceClassName } from './spec.ts';

/** A refused frame: the error code to send and the rule it broke. */
export interface Rejection {
  code: TransferErrorCodeValue;
  rule: string;
}

/** An OPEN past the gate. */
export interface OpenRequest {
  transfer: string;
  name: string;
  sizeBytes: number;
  chunkBytes: number;
  chunks: number;
  className: ServiceClassName;
  /** A code point the sender asked for explicitly, else undefined: the receiver's mapping of the class. */
  dscp: number | undefined;
  connections: number;
}

/** A JOIN past the gate. */
export interface JoinRequest {
  transfer: string;
  className: ServiceClassName;
  dscp: number | undefined;
}

/** A CHUNK past the gate. */
export interface ChunkRequest {
  chunk: number;
  offset: number;
  length: number;
  sha256: Buffer;
}

/** What the gate knows of a connection's transfer when it judges CHUNK and DATA. */
export interface DataContext {
  sizeBytes: number;
  chunkBytes: number;
  chunks: number;
  /** The chunk whose DATA this connection is receiving, and the offset its next DATA must have; null between chunks. */
  open: { chunk: number; next: number; end: number } | null;
}

function reject(rule: string, code: TransferErrorCodeValue = TransferErrorCode.PROTOCOL): Rejection {
  return { code, rule };
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Whether `name` may be a file's name in the receiver's directory; null, or the rule it breaks. */
export function nameRule(name: unknown): string | null {
  if (typeof name !== 'string' || name === '') return 'the name must be a non-empty string';
  if (Buffer.byteLength(name) > Size.NAME_BYTES_MAX) return `the name is longer than ${Size.NAME_BYTES_MAX} bytes`;
  if (name.includes('/') || name.includes('\0')) return `the name ${JSON.stringify(name)} holds a '/' or a NUL: a file name, not a path, is sent`;
  if (name === '.' || name === '..') return `the name ${JSON.stringify(name)} is not a file's`;
  if (name.startsWith('.tessera-transfer')) return 'names starting with .tessera-transfer are the receiver\'s own';
  return null;
}

/** Whether `id` is a transfer id: 32 lowercase hex characters. */
export function isTransferId(id: unknown): id is string {
  return typeof id === 'string' && id.length === Size.TRANSFER_ID_CHARS && /^[0-9a-f]+$/.test(id);
}

function classOf(value: unknown): ServiceClassName | null {
  return typeof value === 'string' && Object.hasOwn(ServiceClass, value) ? (value as ServiceClassName) : null;
}

/** The first frame after the handshake: OPEN or JOIN. */
export function checkFirst(type: number, meta: Record<string, unknown> | null, malformed: string | null): { open: OpenRequest } | { join: JoinRequest } | Rejection {
  if (type !== FrameType.OPEN && type !== FrameType.JOIN) return reject(`Expected OPEN or JOIN after the handshake, got ${typeName(type)}`);
  if (meta === null) return reject(`Malformed ${typeName(type)}: ${malformed ?? 'no body'}`);
  if (!isTransferId(meta.transfer)) return reject(`${typeName(type)}: transfer must be ${Size.TRANSFER_ID_CHARS} hex characters`);
  const className = classOf(meta.class);
  if (className === null) return reject(`${typeName(type)}: class must be one of ${Object.keys(ServiceClass).join(', ')}, got ${String(meta.class)}`, TransferErrorCode.INVALID);
  const dscp = meta.dscp ?? undefined;
  if (dscp !== undefined && (!isUint(dscp) || dscp > 63)) return reject(`${typeName(type)}: dscp must be 0 to 63, got ${String(dscp)}`, TransferErrorCode.INVALID);
  if (type === FrameType.JOIN) return { join: { transfer: meta.transfer, className, dscp } };
  const bad = nameRule(meta.name);
  if (bad !== null) return reject(`OPEN: ${bad}`, TransferErrorCode.INVALID);
  const { sizeBytes, chunkBytes, connections } = meta;
  if (!isUint(sizeBytes)) return reject('OPEN: sizeBytes must be a whole number of bytes');
  if (!isUint(chunkBytes) || chunkBytes < Size.CHUNK_BYTES_MIN || chunkBytes > Size.CHUNK_BYTES_MAX || chunkBytes % 4096 !== 0) {
    return reject(`OPEN: chunkBytes ${String(chunkBytes)} is not a multiple of 4096 from ${Size.CHUNK_BYTES_MIN} to ${Size.CHUNK_BYTES_MAX}`, TransferErrorCode.INVALID);
  }
  const chunks = Math.ceil(sizeBytes / chunkBytes);
  if (chunks > Size.CHUNKS_MAX) return reject(`OPEN: ${chunks} chunks of ${chunkBytes} bytes exceed ${Size.CHUNKS_MAX}`, TransferErrorCode.LIMIT);
  if (!isUint(connections) || connections < 1 || connections > Limit.CONNECTIONS_MAX) {
    return reject(`OPEN: connections ${String(connections)} is outside 1..${Limit.CONNECTIONS_MAX}`, TransferErrorCode.LIMIT);
  }
  return { open: { transfer: meta.transfer, name: meta.name as string, sizeBytes, chunkBytes, chunks, className, dscp, connections } };
}

/** A CHUNK: a chunk of this file, its true offset and length, a SHA-256, and none open on the connection. */
export function checkChunk(ctx: DataContext, meta: Record<string, unknown> | null): ChunkRequest | Rejection {
  if (meta === null) return reject('Malformed CHUNK');
  const { chunk, offset, length, sha256 } = meta;
  if (!isUint(chunk) || chunk >= ctx.chunks) return reject(`CHUNK ${String(chunk)} is not a chunk of this file (0..${ctx.chunks - 1})`);
  const expectedOffset = chunk * ctx.chunkBytes;
  const expectedLength = Math.min(ctx.chunkBytes, ctx.sizeBytes - expectedOffset);
  if (offset !== expectedOffset || length !== expectedLength) {
    return reject(`CHUNK ${chunk} at offset ${String(offset)} length ${String(length)}, expected offset ${expectedOffset} length ${expectedLength}`);
  }
  if (!Buffer.isBuffer(sha256) || sha256.length !== Size.SHA256_BYTES) return reject(`CHUNK ${chunk}: sha256 must be ${Size.SHA256_BYTES} bytes`);
  if (ctx.open !== null) return reject(`CHUNK ${chunk} while chunk ${ctx.open.chunk} is still open on this connection`);
  return { chunk, offset: expectedOffset, length: expectedLength, sha256 };
}

/** A DATA: the next bytes of the chunk open on this connection. */
export function checkData(ctx: DataContext, meta: Record<string, unknown> | null, payload: Buffer | null): { chunk: number; offset: number } | Rejection {
  if (meta === null) return reject('Malformed DATA');
  if (payload === null || payload.length === 0) return reject('DATA without bytes');
  const { chunk, offset } = meta;
  if (ctx.open === null) return reject(`DATA of chunk ${String(chunk)} without its CHUNK`);
  if (chunk !== ctx.open.chunk) return reject(`DATA of chunk ${String(chunk)} while chunk ${ctx.open.chunk} is open`);
  if (offset !== ctx.open.next) return reject(`DATA at offset ${String(offset)}, expected ${ctx.open.next}: a chunk's bytes come in order`);
  if (ctx.open.next + payload.length > ctx.open.end) {
    return reject(`DATA past its chunk: offset ${ctx.open.next} + ${payload.length} > ${ctx.open.end}`);
  }
  return { chunk: ctx.open.chunk, offset: ctx.open.next };
}
