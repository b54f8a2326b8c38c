/**
 * Incremental parsers of what a client sends: the handshake (client flags, then options) and the
 * transmission requests. They own a ByteQueue, accept chunks of any size, and hand out one whole
 * message at a time, so the result never depends on how the stream was split. They know no
 * policy beyond sizes: deciding what a message means is the caller's business.
 */
import { ByteQueue } from '../util/byte-queue.ts';
import { decodeClientFlags, decodeOptionHeader, decodeRequestHeader } from './codec.ts';
import type { RequestHeader } from './codec.ts';
import { Command, Size } from './protocol.ts';

/** What the handshake parser yields. */
export type HandshakeEvent =
  | { kind: 'flags'; clientFlags: number }
  | { kind: 'option'; option: number; data: Buffer }
  /** An option whose data exceed the limit; its data are not read (the connection must close). */
  | { kind: 'oversize'; option: number; length: number };

/** Parses the client's side of the handshake. */
export class HandshakeParser {
  readonly queue = new ByteQueue();
  readonly #optionBytesMax: number;
  #flagsSeen = false;
  #pending: { option: number; length: number } | null = null;

  constructor(opts: { optionBytesMax: number }) {
    this.#optionBytesMax = opts.optionBytesMax;
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** The next complete message, or null until more bytes arrive. Throws NbdError on bad magic. */
  next(): HandshakeEvent | null {
    if (!this.#flagsSeen) {
      if (this.queue.length < Size.CLIENT_FLAGS) return null;
      this.#flagsSeen = true;
      return { kind: 'flags', clientFlags: decodeClientFlags(this.queue.take(Size.CLIENT_FLAGS)) };
    }
    if (this.#pending === null) {
      if (this.queue.length < Size.OPTION_HEADER) return null;
      const header = decodeOptionHeader(this.queue.take(Size.OPTION_HEADER));
      if (header.length > this.#optionBytesMax) return { kind: 'oversize', option: header.option, length: header.length };
      this.#pending = header;
    }
    if (this.queue.length < this.#pending.length) return null;
    const { option, length } = this.#pending;
    this.#pending = null;
    return { kind: 'option', option, data: this.queue.take(length) };
  }
}

/** One transmission request as parsed. */
export interface ParsedRequest {
  header: RequestHeader;
  /** The write payload; null for other commands and for writes over the size limit. */
  payload: Buffer | null;
  /** The buffer from the parser's `alloc` that holds the payload, to be given back once used. */
  allocated: Buffer | null;
}

/** First buffer a write payload is copied into; it doubles as more of the payload arrives. */
const PAYLOAD_BYTES_FIRST = 256 * 1024;
/** The rest of a payload is read straight into its buffer from this much room up; below, into the shared buffer. */
const DIRECT_BYTES_MIN = 16 * 1024;

/**
 * Parses transmission requests. A write payload up to `requestBytesMax` is copied, as it arrives,
 * into a buffer from `alloc`, so the queue never holds more than the bytes after the last complete
 * header (the connection reuses the buffer the socket reads into, see ByteQueue.retain). That
 * buffer is taken when the first payload bytes arrive, at most PAYLOAD_BYTES_FIRST, and doubled
 * (copying what it holds, the old one going to `free`) as more arrive: a header alone makes the
 * server hold nothing, and a payload at most twice what was received plus 256 KiB. A payload over
 * the limit is dropped as it streams in (no memory held) and the request is yielded with a null
 * payload once the last payload byte has passed, keeping the stream in sync for the next header.
 */
export class RequestParser {
  readonly queue = new ByteQueue();
  readonly #requestBytesMax: number;
  #header: RequestHeader | null = null;
  /** Payload bytes of #header still to drop (oversize writes only). */
  #skipBytes = 0;
  /** The buffer #header's payload is being copied into (from #alloc), and how far it is filled. */
  #allocated: Buffer | null = null;
  #filled = 0;
  /** The last target handed to the socket (directTarget), until the next push. */
  #direct: Buffer | null = null;

  readonly #alloc: (n: number) => Buffer;
  readonly #free: (buf: Buffer) => void;

  /**
   * `alloc(n)` provides a buffer of at least n bytes for a write payload; `free` takes back one the
   * parser outgrew (a larger one took its bytes).
   */
  constructor(opts: { requestBytesMax: number; alloc?: (n: number) => Buffer; free?: (buf: Buffer) => void }) {
    this.#requestBytesMax = opts.requestBytesMax;
    this.#alloc = opts.alloc ?? Buffer.allocUnsafe;
    this.#free = opts.free ?? (() => {});
  }

  push(chunk: Buffer): void {
    const direct = this.#direct;
    this.#direct = null;
    if (direct !== null && chunk.length > 0 && chunk.buffer === direct.buffer && chunk.byteOffset === direct.byteOffset && chunk.length <= direct.length) {
      // A read that landed in the payload's own buffer (directTarget): counted where it is.
      this.#filled += chunk.length;
      return;
    }
    this.queue.push(chunk);
  }

  /**
   * Where the next read may land directly: the room left in the buffer a write's payload is being
   * filled into, once every byte queued before it is consumed; else null (read into the shared
   * buffer and push it). Saves the copy of a large payload out of the shared buffer.
   */
  directTarget(): Buffer | null {
    this.#direct = null;
    const header = this.#header;
    const allocated = this.#allocated;
    if (header === null || allocated === null || this.#skipBytes > 0 || this.queue.length > 0) return null;
    const end = Math.min(header.length, allocated.length);
    if (end - this.#filled < DIRECT_BYTES_MIN) return null;
    this.#direct = allocated.subarray(this.#filled, end);
    return this.#direct;
  }

  /** True between a write's header and the end of its payload. */
  get midRequest(): boolean {
    return this.#header !== null;
  }

  /** The next complete request, or null until more bytes arrive. Throws NbdError on bad magic. */
  next(): ParsedRequest | null {
    if (this.#header === null) {
      if (this.queue.length < Size.REQUEST_HEADER) return null;
      const header = decodeRequestHeader(this.queue.take(Size.REQUEST_HEADER));
      if (header.type !== Command.WRITE || header.length === 0) return { header, payload: null, allocated: null };
      this.#header = header;
      this.#skipBytes = header.length > this.#requestBytesMax ? header.length : 0;
      this.#allocated = null;
      this.#filled = 0;
    }
    const header = this.#header;
    if (this.#skipBytes > 0) {
      this.#skipBytes -= this.queue.skip(this.#skipBytes);
      if (this.#skipBytes > 0) return null;
      this.#header = null;
      return { header, payload: null, allocated: null };
    }
    const length = header.length;
    while (this.#filled < length && this.queue.length > 0) {
      const room = Math.min(length, this.#allocated?.length ?? 0);
      if (this.#filled === room) this.#grow(length);
      this.#filled += this.queue.takeInto(this.#allocated!, this.#filled, Math.min(length, this.#allocated!.length) - this.#filled);
    }
    if (this.#filled < length) return null;
    const allocated = this.#allocated!;
    this.#header = null;
    this.#allocated = null;
    const payload = allocated.length === length ? allocated : allocated.subarray(0, length);
    return { header, payload, allocated };
  }

  /** A larger buffer for a payload of `length` bytes: the first, or twice the last, holding its bytes. */
  #grow(length: number): void {
    const old = this.#allocated;
    const size = Math.min(length, old === null ? PAYLOAD_BYTES_FIRST : 2 * old.length);
    const next = this.#alloc(size);
    if (next.length < size) throw new Error('alloc returned a short buffer');
    if (old !== null) {
      old.copy(next, 0, 0, this.#filled);
      this.#free(old);
    }
    this.#allocated = next;
  }
}
