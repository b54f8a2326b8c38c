/**
 * The incremental frame parser: takes chunks of any size and yields one whole frame at a time,
 * so the result never depends on how the stream was split. The header is decoded (and so
 * checked) as soon as its 32 bytes are in; the body is then copied, as it arrives, into one
 * buffer of exactly its size, and its CRC checked before the frame is yielded.
 */
import { crc32 } from '../../native/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { decodeHeader, type FrameHeader } from './codec.ts';
import { Header, Size } from './spec.ts';

/** One frame as parsed: its header and its whole body (CRC checked). */
export interface Frame {
  header: FrameHeader;
  body: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Parses frames; throws ClusterError (CLUSTER_PROTOCOL) on a bad header or body CRC. */
export class FrameParser {
  /** Chunks received and not yet consumed; the first from #offset on. */
  #chunks: Buffer[] = [];
  #offset = 0;
  #length = 0;
  #header: FrameHeader | null = null;
  #body: Buffer | null = null;
  #filled = 0;

  /**
   * Largest body accepted, in bytes (at most Size.BODY_BYTES_MAX, which decodeHeader enforces):
   * the connection lowers it during the handshake, whose frames are small.
   */
  bodyBytesMax: number = Size.BODY_BYTES_MAX;

  /** Bytes received and not yet part of a yielded frame (header bytes, a partial body). */
  get bufferedBytes(): number {
    return this.#length + this.#filled;
  }

  /** Adds bytes; the parser keeps `chunk` (the caller must not reuse it). */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The next complete frame, or null until more bytes arrive. */
  next(): Frame | null {
    if (this.#header === null) {
      if (this.#length < Header.BYTES) return null;
      const header = decodeHeader(this.#take(Header.BYTES));
      if (header.bodyBytes > this.bodyBytesMax) {
        throw new ClusterError(ClusterErrorCode.PROTOCOL, `Frame body of ${header.bodyBytes} bytes exceeds ${this.bodyBytesMax} here`);
      }
      this.#header = header;
      this.#body = header.bodyBytes === 0 ? EMPTY : Buffer.allocUnsafe(header.bodyBytes);
      this.#filled = 0;
    }
    const header = this.#header;
    const body = this.#body!;
    this.#filled += this.#copyInto(body, this.#filled);
    if (this.#filled < body.length) return null;
    this.#header = null;
    this.#body = null;
    this.#filled = 0;
    const crc = body.length === 0 ? 0 : crc32(body) >>> 0;
    if (crc !== header.bodyCrc) {
      throw new ClusterError(ClusterErrorCode.PROTOCOL, `Bad frame body CRC 0x${crc.toString(16)}, expected 0x${header.bodyCrc.toString(16)}`);
    }
    return { header, body };
  }

  /** The next n bytes (n <= #length): a view when they lie in one chunk, else one copy. */
  #take(n: number): Buffer {
    const first = this.#chunks[0];
    if (first.length - this.#offset >= n) {
      const view = first.subarray(this.#offset, this.#offset + n);
      this.#advance(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.#copyInto(out, 0);
    return out;
  }

  /** Copies queued bytes into `dst` from `at` until it is full or the queue empty; returns how many. */
  #copyInto(dst: Buffer, at: number): number {
    let copied = 0;
    while (at + copied < dst.length && this.#length > 0) {
      const chunk = this.#chunks[0];
      const n = Math.min(dst.length - at - copied, chunk.length - this.#offset);
      chunk.copy(dst, at + copied, this.#offset, this.#offset + n);
      copied += n;
      this.#advance(n);
    }
    return copied;
  }

  #advance(n: number): void {
    this.#offset += n;
    this.#length -= n;
    if (this.#offset === this.#chunks[0].length) {
      this.#chunks.shift();
      this.#offset = 0;
    }
  }
}
