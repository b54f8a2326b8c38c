/**
 * One connection of a transfer, either end: a socket with the frame parser, the sequence numbers
 * and send times stamped on every frame, and backpressure. Frames are awaited one at a time
 * (`expect`, the handshake and the opening exchange) or handed to a handler as they come (`onFrame`,
 * the data phase). Whatever the peer sends, the worst outcome is that this connection closes.
 */
import type { Socket } from 'node:net';
import { decodeBody, errorBody, errorFromBody, sealFrame, type EncodedBody } from './codec.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import { FrameParser, type Frame } from './parser.ts';
import { Flag, Size, typeName } from './spec.ts';

/** This process's monotonic clock in µs: what frames carry as their send time. */
export function nowUs(): bigint {
  return process.hrtime.bigint() / 1000n;
}

/** A frame as handed on: its header fields, its decoded body, and when it was parsed (ms, performance.now). */
export interface Received {
  frame: Frame;
  meta: Record<string, unknown> | null;
  payload: Buffer | null;
  malformed: string | null;
  /** performance.now() once the whole frame was in. */
  arrivedMs: number;
}

/** A connection's frames in and out. */
export class Channel {
  readonly socket: Socket;
  readonly #parser = new FrameParser();
  #seq = 1;
  #queue: Received[] = [];
  #waiter: { resolve(r: Received): void; reject(err: Error): void } | null = null;
  #handler: ((r: Received) => void) | null = null;
  #closed: TransferError | null = null;
  readonly #closeListeners: ((err: TransferError) => void)[] = [];
  /** Bytes of frames written (headers included), and of frames received. */
  bytesOut = 0;
  bytesIn = 0;

  constructor(socket: Socket) {
    this.socket = socket;
    this.#parser.bodyBytesMax = Size.HANDSHAKE_BODY_BYTES_MAX;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(new TransferError(TransferErrorCode.LOST, `Connection lost: ${err.message}`, { cause: err })));
    socket.on('close', () => this.#fail(new TransferError(TransferErrorCode.LOST, 'Connection closed by the peer')));
  }

  /** Whether the connection is closed (or closing). */
  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Why it closed, once it has. */
  get closeReason(): TransferError | null {
    return this.#closed;
  }

  /** Called once, when the connection closes for any reason (at once if it has). */
  onClose(fn: (err: TransferError) => void): void {
    if (this.#closed !== null) fn(this.#closed);
    else this.#closeListeners.push(fn);
  }

  /** Ends the handshake's small-frame limit. */
  handshakeDone(): void {
    this.#parser.bodyBytesMax = Size.BODY_BYTES_MAX;
  }

  /** Writes one frame; returns false when the socket asks to drain before more. */
  send(type: number, body: EncodedBody): boolean {
    if (this.#closed !== null) return false;
    const buffers = sealFrame(type, this.#seq, nowUs(), body);
    this.#seq = (this.#seq + 1) >>> 0;
    let ok = true;
    if (buffers.length === 1) ok = this.socket.write(buffers[0]);
    else {
      this.socket.cork();
      this.socket.write(buffers[0]);
      ok = this.socket.write(buffers[1]);
      this.socket.uncork();
    }
    this.bytesOut += body.head.length + (body.payload?.length ?? 0);
    return ok && !this.socket.writableNeedDrain;
  }

  /** The sequence number the next frame sent will carry. */
  get nextSeq(): number {
    return this.#seq;
  }

  /** Whether the socket asks to drain. */
  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Resolves once the socket drained (or at once), rejects if the connection closes first. */
  drained(): Promise<void> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        this.socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        this.socket.off('drain', onDrain);
        reject(this.#closed ?? new TransferError(TransferErrorCode.LOST, 'Connection closed'));
      };
      this.socket.once('drain', onDrain);
      this.socket.once('close', onClose);
    });
  }

  /** The next frame; rejects on close, on an error frame, or after `timeoutMs`. */
  expect(timeoutMs: number, what: string): Promise<Received> {
    if (this.#handler !== null) throw new Error('expect() while a handler is set');
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#closed !== null) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        const err = new TransferError(TransferErrorCode.LOST, `No ${what} from the peer within ${timeoutMs} ms`);
        reject(err);
        this.close(err);
      }, timeoutMs);
      this.#waiter = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
  }

  /** Hands every frame from now on (queued ones first) to `fn`. */
  onFrame(fn: (r: Received) => void): void {
    this.#handler = fn;
    const queued = this.#queue;
    this.#queue = [];
    for (const r of queued) fn(r);
  }

  /** Stops reading the socket (a receiver behind on its writes), or goes on. */
  pauseReading(paused: boolean): void {
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  /** Closes the connection; with `err`, sends it as an error frame first (not for LOST). */
  close(err?: TransferError): void {
    if (this.#closed !== null) return;
    if (err !== undefined && err.code !== TransferErrorCode.LOST && !this.socket.destroyed) {
      try {
        this.send(0, errorBody(err));
      } catch {
        // The error frame is a courtesy; the close is what matters.
      }
    }
    this.#fail(err ?? new TransferError(TransferErrorCode.CLOSED, 'Connection closed'));
    this.socket.end();
    // A peer that never reads would hold the socket open: give it a moment, then destroy.
    setTimeout(() => this.socket.destroy(), 2_000).unref();
  }

  /** Destroys the socket at once (a sender torn down, a test's kill). */
  destroy(err?: TransferError): void {
    this.#fail(err ?? new TransferError(TransferErrorCode.CLOSED, 'Connection closed'));
    this.socket.destroy();
  }

  #fail(err: TransferError): void {
    if (this.#closed !== null) return;
    this.#closed = err;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(err);
    for (const fn of this.#closeListeners.splice(0)) fn(err);
  }

  #onData(chunk: Buffer): void {
    if (this.#closed !== null) return;
    this.bytesIn += chunk.length;
    this.#parser.push(chunk);
    for (;;) {
      let frame: Frame | null;
      try {
        frame = this.#parser.next();
      } catch (err) {
        this.close(err as TransferError);
        return;
      }
      if (frame === null) return;
      const decoded = decodeBody(frame.header.flags, frame.body);
      if ((frame.header.flags & Flag.ERROR) !== 0) {
        const err = errorFromBody(decoded);
        this.#fail(err);
        this.socket.destroy();
        return;
      }
      const r: Received = { frame, meta: decoded.meta, payload: decoded.payload, malformed: decoded.malformed, arrivedMs: performance.now() };
      if (this.#handler !== null) this.#handler(r);
      else if (this.#waiter !== null) {
        const w = this.#waiter;
        this.#waiter = null;
        w.resolve(r);
      } else this.#queue.push(r);
      if (this.#closed !== null) return;
    }
  }
}

/** A protocol error naming what was expected and what came. */
export function unexpected(r: Received, expected: string): TransferError {
  return new TransferError(TransferErrorCode.PROTOCOL, `Expected ${expected}, got ${typeName(r.frame.header.type)}${r.malformed !== null ? ` (${r.malformed})` : ''}`);
}
