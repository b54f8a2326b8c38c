/**
 * The incremental frame parser: takes chunks of any size and yields one whole frame at a time,
 * so the result never depends on how the stream was split. The header is decoded (and so
 * checked) as soon as its 32 bytes are in, including its sequence number; the body is then
 * filled into one buffer of exactly its size and its CRC checked before the frame is yielded.
 */
import { crc32 } from '../native/index.ts';
import { ByteQueue } from '../util/byte-queue.ts';
import { decodeHeader, type FrameHeader } from './codec.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import { Header, Size } from './spec.ts';

/** One frame as parsed: its header and its whole body (CRC checked). */
export interface Frame {
  header: FrameHeader;
  body: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Parses frames; throws TransferError (TRANSFER_PROTOCOL) on a bad header, sequence or body CRC. */
export class FrameParser {
  readonly #queue = new ByteQueue();
  #header: FrameHeader | null = null;
  #body: Buffer | null = null;
  #filled = 0;
  /** The sequence number the next frame must carry. */
  #seq = 1;

  /** Largest body accepted: the connection lowers it during the handshake. */
  bodyBytesMax: number = Size.BODY_BYTES_MAX;

  /** Bytes received and not yet part of a yielded frame. */
  get bufferedBytes(): number {
    return this.#queue.length + this.#filled;
  }

  /** Adds bytes, kept as they are (the caller must not reuse them). */
  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  /** The next complete frame, or null until more bytes arrive. */
  next(): Frame | null {
    if (this.#header === null) {
      if (this.#queue.length < Header.BYTES) return null;
      const header = decodeHeader(this.#queue.take(Header.BYTES));
      if (header.bodyBytes > this.bodyBytesMax) {
        throw new TransferError(TransferErrorCode.PROTOCOL, `Frame body of ${header.bodyBytes} bytes exceeds ${this.bodyBytesMax} here`);
      }
      if (header.seq !== this.#seq) throw new TransferError(TransferErrorCode.PROTOCOL, `Frame sequence ${header.seq}, expected ${this.#seq}`);
      this.#seq = (this.#seq + 1) >>> 0;
      this.#header = header;
      this.#filled = 0;
      this.#body = header.bodyBytes === 0 ? EMPTY : Buffer.allocUnsafe(header.bodyBytes);
    }
    const header = this.#header;
    const body = this.#body!;
    if (this.#filled < body.length) this.#filled += this.#queue.takeInto(body, this.#filled, body.length - this.#filled);
    if (this.#filled < body.length) return null;
    this.#header = null;
    this.#body = null;
    this.#filled = 0;
    const crc = body.length === 0 ? 0 : crc32(body) >>> 0;
    if (crc !== header.bodyCrc) {
      throw new TransferError(TransferErrorCode.PROTOCOL, `Bad frame body CRC 0x${crc.toString(16)}, expected 0x${header.bodyCrc.toString(16)}`);
    }
    return { header, body };
  }
}
