/**
 * The incremental frame parser: takes chunks of any size and yields one whole frame at a time,
 * so the result never depends on how the stream was split. The header is decoded (and so
 * checked) as soon as its 32 bytes are in; the body is then filled, as it arrives, into one
 * buffer of exactly its size (a pooled one when large, given back by whoever used it),
 * and its CRC checked before the frame is yielded. While a large body is being filled, the
 * socket may read the rest straight into it (`directTarget`): no copy, no chunk per read.
 */
import { crc32 } from '../../native/index.ts';
import { ByteQueue } from '../../util/byte-queue.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { decodeHeader, type FrameHeader } from './codec.ts';
import { Header, Size } from './spec.ts';

/** One frame as parsed: its header and its whole body (CRC checked). */
export interface Frame {
  header: FrameHeader;
  body: Buffer;
  /** The pooled buffer `body` lies in, to give back once nothing uses the body; null when not pooled. */
  pooled: Buffer | null;
}

/** Where large bodies come from (flow's BufferPool has this shape). */
export interface BodyPool {
  /** A buffer of at least `length` bytes. */
  take(length: number): Buffer;
}

/** Bodies from this size up come from the pool (below, Node's own slab serves them cheaply). */
const POOLED_BYTES_MIN = 4096;
/** The rest of a body is read straight into it from this size up; below, reads go on into the shared buffer. */
const DIRECT_BYTES_MIN = 16 * 1024;
const EMPTY = Buffer.alloc(0);

/** Parses frames; throws ClusterError (CLUSTER_PROTOCOL) on a bad header or body CRC. */
export class FrameParser {
  readonly #queue = new ByteQueue();
  readonly #pool: BodyPool | null;
  #header: FrameHeader | null = null;
  #body: Buffer | null = null;
  #pooled: Buffer | null = null;
  #filled = 0;
  /** The last target handed to the socket, until the next push. */
  #direct: Buffer | null = null;

  /**
   * Largest body accepted, in bytes (at most Size.BODY_BYTES_MAX, which decodeHeader enforces):
   * the connection lowers it during the handshake, whose frames are small.
   */
  bodyBytesMax: number = Size.BODY_BYTES_MAX;

  /** `pool`: where large bodies come from; without, every body is allocated. */
  constructor(opts: { pool?: BodyPool } = {}) {
    this.#pool = opts.pool ?? null;
  }

  /** Bytes received and not yet part of a yielded frame (header bytes, a partial body). */
  get bufferedBytes(): number {
    return this.#queue.length + this.#filled;
  }

  /**
   * Adds bytes: kept as they are until retain() (the caller must not reuse them before), or,
   * when they are a read into the last directTarget(), counted where they landed.
   */
  push(chunk: Buffer): void {
    const direct = this.#direct;
    this.#direct = null;
    if (chunk.length === 0) return;
    if (direct !== null && chunk.buffer === direct.buffer && chunk.byteOffset === direct.byteOffset && chunk.length <= direct.length) {
      this.#filled += chunk.length;
      return;
    }
    this.#queue.push(chunk);
  }

  /** Copies the bytes pushed and not yet consumed, so the caller may reuse its buffers. */
  retain(): void {
    this.#queue.retain();
  }

  /**
   * Where the next read may land directly: the unfilled rest of a large body, once every byte
   * queued before it is consumed; else null (read into the caller's buffer and push it).
   */
  directTarget(): Buffer | null {
    this.#direct = null;
    const body = this.#body;
    if (body === null || this.#queue.length > 0 || body.length - this.#filled < DIRECT_BYTES_MIN) return null;
    this.#direct = body.subarray(this.#filled);
    return this.#direct;
  }

  /** The next complete frame, or null until more bytes arrive. */
  next(): Frame | null {
    if (this.#header === null) {
      if (this.#queue.length < Header.BYTES) return null;
      const header = decodeHeader(this.#queue.take(Header.BYTES));
      if (header.bodyBytes > this.bodyBytesMax) {
        throw new ClusterError(ClusterErrorCode.PROTOCOL, `Frame body of ${header.bodyBytes} bytes exceeds ${this.bodyBytesMax} here`);
      }
      this.#header = header;
      this.#filled = 0;
      const n = header.bodyBytes;
      if (n === 0) this.#body = EMPTY;
      else if (this.#pool !== null && n >= POOLED_BYTES_MIN) {
        this.#pooled = this.#pool.take(n);
        this.#body = this.#pooled.subarray(0, n);
      } else this.#body = n >= POOLED_BYTES_MIN ? Buffer.allocUnsafeSlow(n) : Buffer.allocUnsafe(n);
    }
    const header = this.#header;
    const body = this.#body!;
    if (this.#filled < body.length) this.#filled += this.#queue.takeInto(body, this.#filled, body.length - this.#filled);
    if (this.#filled < body.length) return null;
    const pooled = this.#pooled;
    this.#header = null;
    this.#body = null;
    this.#pooled = null;
    this.#filled = 0;
    const crc = body.length === 0 ? 0 : crc32(body) >>> 0;
    if (crc !== header.bodyCrc) {
      throw new ClusterError(ClusterErrorCode.PROTOCOL, `Bad frame body CRC 0x${crc.toString(16)}, expected 0x${header.bodyCrc.toString(16)}`);
    }
    return { header, body, pooled };
  }
}
