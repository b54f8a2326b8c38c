/**
 * One client connection: the socket, the handshake, then concurrent request processing with
 * limits and backpressure. Whatever the client sends, the worst outcome is that this connection
 * closes; nothing here throws into the event loop or rejects unhandled.
 */
import type { Socket } from 'node:net';
import type { BufferPool } from '../flow/index.ts';
import { useReadBuffer } from '../util/socket-read.ts';
import { crash, isBug } from '../util/bug.ts';
import { encodeGreeting, type RequestHeader } from './codec.ts';
import { describeError, NbdError, NbdErrorCode } from './errors.ts';
import { Handshake, SERVER_HANDSHAKE_FLAGS } from './handshake.ts';
import type { NbdLimits } from './limits.ts';
import { HandshakeParser, RequestParser, type ParsedRequest } from './parser.ts';
import { Command, Errno } from './protocol.ts';
import { commandName, errnoName } from './rules.ts';
import { encodeReply, execute, type Session } from './transmission.ts';
import type { ExportProvider } from './types.ts';
import type { Logger } from '../observe/index.ts';

/** Time a closing connection gives the client to read its last replies before being cut off. */
const CLOSE_GRACE_MS = 5_000;

/** Error replies one connection logs; a client sending nothing but bad requests must not flood the log. */
export const ERROR_LINES_MAX = 100;

type Phase =
  /** Negotiating options. */
  | 'handshake'
  /** Reading and serving requests. */
  | 'transmission'
  /** No more requests are read; in-flight ones finish, then the socket is ended. */
  | 'draining'
  /** The socket is closed; the volume is released once in-flight requests settle. */
  | 'closed';

/** A client connection, from accept to close. */
export class Connection {
  /** Settles once the socket is closed and the volume (if any) released. Never rejects. */
  readonly closed: Promise<void>;
  readonly #socket: Socket;
  readonly #limits: NbdLimits;
  readonly #pool: BufferPool;
  /** Bound to this connection's id; its records name the peer and, for requests, the disk. */
  readonly #log: Logger;
  readonly #peer: string;
  readonly #handshakeParser: HandshakeParser;
  readonly #handshake: Handshake;
  #requestParser: RequestParser | null = null;
  #session: Session | null = null;
  #phase: Phase = 'handshake';
  #inflightRequests = 0;
  #inflightBytes = 0;
  #paused = false;
  #corked = false;
  #ended = false;
  #released = false;
  #socketClosed = false;
  #errorLines = 0;
  #timer: NodeJS.Timeout | null;
  #resolveClosed!: () => void;

  /**
   * `readBuffer`, shared with other connections, receives the socket's reads: what a read brings
   * is parsed at once (write payloads copied into pooled buffers) and the rest copied. Once a
   * write's header is parsed, reads land straight in its payload's pooled buffer instead
   * (RequestParser.directTarget), so a large payload is not copied at all.
   */
  constructor(socket: Socket, opts: { provider: ExportProvider; limits: NbdLimits; pool: BufferPool; readBuffer: Buffer; log: Logger }) {
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#socket = socket;
    this.#limits = opts.limits;
    this.#pool = opts.pool;
    this.#peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix socket';
    this.#log = opts.log.child({ peer: this.#peer });
    this.#handshakeParser = new HandshakeParser({ optionBytesMax: opts.limits.optionBytesMax });
    this.#handshake = new Handshake({ provider: opts.provider, limits: opts.limits, send: (buf) => this.#write([buf]) });

    socket.setNoDelay(true);
    // Reads land in the shared buffer, or straight into a write payload's buffer once its header is parsed.
    const readBuffer = opts.readBuffer;
    if (!useReadBuffer(socket, readBuffer, (bytes) => this.#onRead(bytes), () => this.#requestParser?.directTarget() ?? readBuffer)) socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#pump());
    socket.on('end', () => this.#onEnd());
    socket.on('error', (err: NodeJS.ErrnoException) => this.#onError(err));
    socket.on('close', () => this.#onClose());
    const timeoutMs = this.#limits.handshakeTimeoutMs;
    this.#timer = setTimeout(() => this.#abort(new NbdError(NbdErrorCode.TIMEOUT, `Handshake not finished within ${timeoutMs} ms`)), timeoutMs);
    this.#timer.unref();
    this.#write([encodeGreeting(SERVER_HANDSHAKE_FLAGS)]);
  }

  /**
   * Ends the connection for a server shutdown: a handshaking client is cut off; a transmitting
   * one gets its in-flight requests answered first, as the protocol asks.
   */
  shutdown(): Promise<void> {
    if (this.#phase === 'handshake') this.#abort(new NbdError(NbdErrorCode.CLOSED, 'Server is closing'));
    else if (this.#phase === 'transmission') this.#drainAndEnd();
    return this.closed;
  }

  /** A read into the shared buffer: nothing may keep a view of `bytes` past this call. */
  #onRead(bytes: Buffer): void {
    if (this.#phase === 'handshake') this.#onData(Buffer.from(bytes));
    else if (this.#phase === 'transmission') {
      const parser = this.#requestParser!;
      parser.push(bytes);
      this.#pump();
      // Bytes left unparsed (a partial header, or requests past the limits) are copied.
      parser.queue.retain();
    }
  }

  /** A chunk the connection may keep. */
  #onData(chunk: Buffer): void {
    if (this.#phase === 'handshake') {
      this.#handshakeParser.push(chunk);
      this.#negotiate();
    } else if (this.#phase === 'transmission') {
      this.#requestParser!.push(chunk);
      this.#pump();
    }
    // Draining or closed: the client may not send anything after NBD_CMD_DISC; drop it.
  }

  #negotiate(): void {
    while (this.#phase === 'handshake') {
      let outcome;
      try {
        const event = this.#handshakeParser.next();
        if (event === null) return;
        outcome = this.#handshake.handle(event);
      } catch (err) {
        if (isBug(err)) this.#bug(err, 'in the handshake');
        else this.#abort(err);
        return;
      }
      if (outcome.kind === 'close') {
        if (outcome.error !== null) this.#log.warn(`closing: ${describeError(outcome.error)}`);
        if (outcome.graceful) this.#drainAndEnd();
        else this.#abort(null);
        return;
      }
      if (outcome.kind === 'transmission') {
        this.#enterTransmission(outcome.session);
      }
    }
  }

  #enterTransmission(session: Session): void {
    this.#clearTimer();
    this.#session = session;
    this.#phase = 'transmission';
    // Write payloads are copied into pooled buffers as they arrive, given back once written (or outgrown).
    const parser = new RequestParser({ requestBytesMax: this.#limits.requestBytesMax, alloc: (n) => this.#pool.take(n), free: (buf) => this.#pool.give(buf) });
    // A client may already have sent requests behind its last option.
    for (const rest of this.#handshakeParser.queue.drain()) parser.push(rest);
    this.#requestParser = parser;
    this.#pump();
  }

  /** True while the connection holds as much as its limits allow: read no further requests. */
  #blocked(): boolean {
    return (
      this.#inflightRequests >= this.#limits.inflightRequestsMax ||
      this.#inflightBytes >= this.#limits.inflightBytesMax ||
      this.#socket.writableNeedDrain
    );
  }

  /** Parses and starts as many requests as the limits allow; pauses the socket when blocked. */
  #pump(): void {
    if (this.#phase !== 'transmission') return;
    const parser = this.#requestParser!;
    while (!this.#blocked()) {
      let parsed: ParsedRequest | null;
      try {
        parsed = parser.next();
      } catch (err) {
        if (isBug(err)) this.#bug(err, 'parsing a request');
        else this.#abort(err);
        return;
      }
      if (parsed === null) break;
      if (parsed.header.type === Command.DISC) {
        this.#drainAndEnd();
        return;
      }
      this.#start(parsed);
    }
    this.#setPaused(this.#blocked());
  }

  #start(request: ParsedRequest): void {
    const { type, length } = request.header;
    // Reads hold their reply buffer and writes their payload until the reply is written.
    const held = type === Command.READ && length <= this.#limits.requestBytesMax ? length : request.payload?.length ?? 0;
    this.#inflightRequests++;
    this.#inflightBytes += held;
    void this.#serve(request, held);
  }

  async #serve(request: ParsedRequest, held: number): Promise<void> {
    const session = this.#session!;
    const { cookie, type, offset, length } = request.header;
    // A read of acceptable size lands in a pooled buffer, returned once the socket took it.
    let pooled: Buffer | null = null;
    if (type === Command.READ && length <= session.requestBytesMax) {
      const bs = session.volume.blockBytes;
      pooled = this.#pool.take(Math.ceil((offset + length) / bs) * bs - Math.floor(offset / bs) * bs);
    }
    let buffers: Buffer[] | null = null;
    try {
      const reply = await execute(request.header, request.payload, session, pooled ?? undefined);
      if (reply.kind === 'error') this.#logErrorReply(request.header, reply);
      buffers = encodeReply(cookie, reply, session.structuredReplies);
    } catch (err) {
      // Only a bug gets here (execute answers the world's failures): no reply, see #bug.
      this.#bug(err, `serving ${commandName(type)} offset ${offset} length ${length}`);
    }
    // The volume has let go of the payload once the write settled (Volume.write's contract).
    if (request.allocated !== null) this.#pool.give(request.allocated);
    this.#inflightRequests--;
    this.#inflightBytes -= held;
    const release = pooled;
    if (buffers === null) {
      if (release !== null) this.#pool.give(release);
    } else {
      this.#write(buffers, release === null ? undefined : () => this.#pool.give(release));
    }
    if (this.#phase === 'transmission') this.#pump();
    else this.#settle();
  }

  /**
   * Logs an error reply: a rejection names the rule it broke, a failure its error's code. The
   * one place request errors reach the log; at most ERROR_LINES_MAX lines per connection.
   */
  #logErrorReply(header: RequestHeader, reply: { errno: number; message: string }): void {
    if (this.#errorLines > ERROR_LINES_MAX) return;
    this.#errorLines++;
    const disk = this.#session!.exportName;
    if (this.#errorLines > ERROR_LINES_MAX) {
      this.#log.warn(`further error replies on this connection are not logged (limit ${ERROR_LINES_MAX})`, { disk });
      return;
    }
    // Found by connection id (bound to the logger) and handle, the cookie the client chose.
    const fields = { disk, handle: header.cookie, command: commandName(header.type), offset: header.offset, length: header.length, errno: errnoName(reply.errno) };
    const severe = reply.errno === Errno.EIO || reply.errno === Errno.ESHUTDOWN;
    const msg = `${commandName(header.type)} cookie ${header.cookie}: ${errnoName(reply.errno)}: ${reply.message}`;
    if (severe) this.#log.error(msg, fields);
    else this.#log.warn(msg, fields);
  }

  /**
   * A bug while `doing` something (see util/bug.ts): logged with its stack, the process crashed,
   * and this connection cut off meanwhile, so that the client sees no answer rather than a wrong
   * one. (Where something catches the crash, the test runner, the server goes on consistently.)
   */
  #bug(err: unknown, doing: string): void {
    this.#log.error(`bug ${doing}`, { err });
    crash(err);
    this.#abort(null);
  }

  #setPaused(paused: boolean): void {
    if (paused === this.#paused) return;
    this.#paused = paused;
    if (paused) this.#socket.pause();
    else this.#socket.resume();
  }

  /**
   * Queues one message's buffers. The socket stays corked until the event loop's check phase, so
   * a header leaves with its payload and replies completed in the same loop iteration share one
   * writev instead of a system call each.
   */
  #write(buffers: Buffer[], onWritten?: () => void): void {
    const socket = this.#socket;
    // A buffer the socket never took is simply not returned to the pool.
    if (socket.destroyed || socket.writableEnded) return;
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) socket.write(buffers[i]);
    // The callback runs once the kernel has the bytes (or the socket failed): either way the
    // buffers are no longer referenced by the stream.
    socket.write(buffers[last], onWritten);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };


  /**
   * Stops taking requests; once in-flight requests are answered, ends the socket (see #settle).
   * The socket is still read, and what arrives dropped: a socket reading into the shared buffer
   * stops reading the kernel's while paused, and would never see the client's FIN.
   */
  #drainAndEnd(): void {
    if (this.#phase === 'draining' || this.#phase === 'closed') return;
    this.#clearTimer();
    this.#phase = 'draining';
    this.#setPaused(false);
    this.#settle();
  }

  /** Ends or releases what can be ended or released now that fewer requests are in flight. */
  #settle(): void {
    if (this.#inflightRequests > 0) return;
    // Nothing will use the volume again once no request is in flight and none will be read:
    // release it before the FIN, so a client that saw the connection close finds the disk free.
    if (this.#phase === 'draining' || this.#phase === 'closed') this.#release();
    if (this.#phase === 'draining' && !this.#ended) {
      this.#ended = true;
      this.#socket.end();
      // A client that stops reading must not hold the connection forever.
      setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
    }
    if (this.#phase === 'closed' && this.#socketClosed) this.#resolveClosed();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#session === null) return;
    try {
      this.#session.volume.close();
    } catch (err) {
      if (isBug(err)) this.#bug(err, 'closing the volume');
      else this.#log.error('closing the volume failed', { err });
    }
  }


  /** Hard disconnect, logging `error` if given. */
  #abort(error: unknown): void {
    if (error !== null && !this.#socket.destroyed) this.#log.warn(`closing: ${describeError(error)}`);
    this.#clearTimer();
    this.#phase = 'closed';
    this.#socket.destroy();
    this.#settle();
  }

  #onEnd(): void {
    // The client will send nothing more. In transmission that is like NBD_CMD_DISC: answer what
    // is in flight, then close. (The server is created with allowHalfOpen for this.)
    if (this.#phase === 'transmission') this.#drainAndEnd();
    else if (this.#phase === 'handshake') this.#abort(new NbdError(NbdErrorCode.PROTOCOL, 'Client closed during the handshake'));
    else this.#settle();
  }

  #onError(err: NodeJS.ErrnoException): void {
    const vanished = err.code === 'ECONNRESET' || err.code === 'EPIPE';
    this.#log.warn(`${vanished ? 'client vanished' : 'socket error'}: ${describeError(err)}`);
  }

  #onClose(): void {
    this.#socketClosed = true;
    this.#clearTimer();
    this.#phase = 'closed';
    this.#settle();
  }

  #clearTimer(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }
}
