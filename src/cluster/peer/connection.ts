/**
 * One peer connection, either end: the handshake, then requests multiplexed both ways and
 * matched to their responses by request id. Whatever the peer sends, the worst outcome is that
 * this connection closes: nothing here throws into the event loop or rejects unhandled, except
 * a bug in a handler, which crashes the process (util/bug.ts), as the NBD server does.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { crash, isBug } from '../../util/bug.ts';
import { useReadBuffer } from '../../util/socket-read.ts';
import type { Logger } from '../../observe/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { decodeBody, encodeBody, encodeErrorFrame, encodeFrame, errorFromBody, type DecodedBody, type EncodedBody } from './codec.ts';
import { validatePeerRequest, type DiskView } from './gate.ts';
import { ClientHandshake, ServerHandshake, type HandshakeStep, type PeerIdentity } from './handshake.ts';
import type { PeerLimits } from './limits.ts';
import type {
  AckBody,
  ConfigureBody,
  ConfigureReply,
  ExtentsBody,
  ExtentsReply,
  IoBody,
  IoReply,
  OpBody,
  PingBody,
  PongBody,
  ReadSnapBody,
} from './messages.ts';
import { FrameParser, type BodyPool, type Frame } from './parser.ts';
import { Flag, MessageType, Size, typeName, Version } from './spec.ts';

/** The body each request type carries. */
export interface RequestBodies {
  [MessageType.PING]: PingBody;
  [MessageType.CONFIGURE]: ConfigureBody;
  [MessageType.OP]: OpBody;
  [MessageType.ACK]: AckBody;
  [MessageType.IO]: IoBody;
  [MessageType.EXTENTS]: ExtentsBody;
  [MessageType.READ_SNAP]: ReadSnapBody;
}

/** The body each request type's response carries (data, where there is any, beside it). */
export interface ReplyBodies {
  [MessageType.PING]: PongBody;
  [MessageType.CONFIGURE]: ConfigureReply;
  [MessageType.OP]: AckBody;
  [MessageType.ACK]: Record<string, never>;
  [MessageType.IO]: IoReply;
  [MessageType.EXTENTS]: ExtentsReply;
  [MessageType.READ_SNAP]: Record<string, never>;
}

/** A message type that is a request after the handshake. */
export type RequestType = keyof RequestBodies;

/** A request as a handler receives it, past the gate. */
export interface PeerRequest<T extends RequestType = RequestType> {
  type: T;
  body: RequestBodies[T];
  /** A write's data (a view of the received frame), else null. */
  payload: Buffer | null;
  /** The connection's negotiated protocol version. */
  version: number;
  /**
   * Takes over the memory of the request's body (of `payload`), which the connection would give
   * back to its pool once the answer is written: call the function returned once nothing uses
   * the payload any more, or never (the collector takes it). A no-op function when the body is
   * not pooled.
   */
  claim(): () => void;
}

/** What a handler answers: a body (default empty) and data for reads. */
export interface PeerReply<T extends RequestType = RequestType> {
  body?: ReplyBodies[T];
  payload?: Buffer | null;
  /** Called once the answer is written (or the connection is gone): the payload's memory may be reused. */
  release?: () => void;
}

/** A response as the requester receives it. */
export interface PeerResponse<T extends RequestType = RequestType> {
  body: ReplyBodies[T];
  /** The data of a read, else null. */
  payload: Buffer | null;
  /**
   * Gives the payload's memory back to the connection's pool: call it once done with the
   * payload (and never touch it after), or never (the collector takes it).
   */
  release(): void;
}

/** Serves one request type; a ClusterError thrown becomes an error response, anything else is a bug. */
export type PeerHandler<T extends RequestType = RequestType> = (req: PeerRequest<T>, conn: PeerConnection) => Promise<PeerReply<T> | void>;

/** The hybrid logical clock as the protocol needs it (hlc.ts provides one). */
export interface PeerClock {
  /** A timestamp above every one returned or seen before. */
  now(): bigint;
  /** Keeps the clock above `remote`, a timestamp a peer sent. */
  update(remote: bigint): void;
}

/** What serves the requests a connection receives. */
export interface PeerDispatch {
  /** The handler of a request type, or undefined: answered CLUSTER_PROTOCOL. */
  handler(type: number): PeerHandler | undefined;
  /** The gate's view of a disk (GateContext.disk). */
  disk(name: string): DiskView | null;
}

/** Options of a connection, either end. */
export interface PeerConnectionOptions {
  role: 'client' | 'server';
  identity: PeerIdentity;
  limits: PeerLimits;
  log: Logger;
  /** Client: the node id it means to reach; a server proving another id is refused. */
  expectNode?: string;
  /** Serves incoming requests; without, every request is answered CLUSTER_PROTOCOL (PING aside). */
  dispatch?: PeerDispatch;
  /** Stamps PING and PONG on version 2 and later, and learns from the peer's. */
  clock?: PeerClock;
  /** Memory for reading: without, the connection has its own read buffer and allocates every body. */
  buffers?: PeerBuffers;
}

/**
 * Memory a node's connections share for reading (docs/cluster.md, "Speed of the write path"):
 * one buffer reads land in (one read at a time on the event loop), and a pool large request
 * bodies come from, given back once their request is answered.
 */
export interface PeerBuffers {
  readBuffer: Buffer;
  pool: BodyPool & { give(buf: Buffer): void };
}

/** Bytes of a connection's own read buffer, when it has no shared one. */
const READ_BUFFER_BYTES = 64 * 1024;

function noop(): void {}

/** Time a connection closing for a protocol error gives its error frame to leave. */
const CLOSE_GRACE_MS = 1_000;

interface Pending {
  resolve: (response: PeerResponse) => void;
  reject: (err: ClusterError) => void;
  /** Bytes it counts in flight: its body, and the data it asks back. */
  bytes: number;
}

interface Queued extends Pending {
  type: number;
  body: EncodedBody;
}

/** Counters of one direction of a connection. */
export interface InflightStats {
  /** Requests sent (or received) and not yet answered. */
  requests: number;
  /** Their bytes (PeerLimits.inflightBytesMax). */
  bytes: number;
}

type Phase = 'handshake' | 'open' | 'closed';

/** A connection to a peer, from connect or accept to close. */
export class PeerConnection {
  /** Settles when the handshake ended: resolves, or rejects with why it failed. */
  readonly ready: Promise<void>;
  /** Resolves once the socket is closed. Never rejects. */
  readonly closed: Promise<void>;
  readonly #socket: net.Socket;
  readonly #opts: PeerConnectionOptions;
  readonly #limits: PeerLimits;
  /** Bound to the peer's address, then to its node id once proved. */
  #log: Logger;
  readonly #parser: FrameParser;
  readonly #give: ((buf: Buffer) => void) | null;
  readonly #handshake: ServerHandshake | ClientHandshake;
  #phase: Phase = 'handshake';
  #version = 0;
  #remoteNode: string | null = null;
  #timer: NodeJS.Timeout | null;
  #resolveReady!: () => void;
  #rejectReady!: (err: ClusterError) => void;
  #resolveClosed!: () => void;
  /** Why the connection closed, for what is rejected after. */
  #cause: ClusterError | null = null;
  #corked = false;
  #paused = false;
  #nextId = 0n;
  readonly #pending = new Map<bigint, Pending>();
  readonly #queue: Queued[] = [];
  readonly #out: InflightStats = { requests: 0, bytes: 0 };
  readonly #in: InflightStats = { requests: 0, bytes: 0 };

  /** Takes a connected socket; the handshake starts at once. */
  constructor(socket: net.Socket, opts: PeerConnectionOptions) {
    this.#socket = socket;
    this.#opts = opts;
    this.#limits = opts.limits;
    this.#log = opts.log.child({ peer: socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unknown' });
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Whoever waits on `ready` sees the rejection; a server's connection has nobody waiting.
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    const pool = opts.buffers?.pool;
    this.#parser = new FrameParser({ pool });
    this.#give = pool === undefined ? null : (buf) => pool.give(buf);
    // Handshake frames are small: a peer that has not proved itself may not make us hold 8 MiB.
    this.#parser.bodyBytesMax = Size.META_BYTES_MAX;
    socket.setNoDelay(true);
    // Reads land in one buffer (or straight into a large body being filled), not a new chunk each.
    const readBuffer = opts.buffers?.readBuffer ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    const parser = this.#parser;
    if (!useReadBuffer(socket, readBuffer, (bytes) => this.#onRead(bytes), () => parser.directTarget() ?? readBuffer)) {
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    }
    socket.on('drain', () => this.#pumpSend());
    socket.on('error', (err: NodeJS.ErrnoException) => this.#log.debug(`socket error: ${err.message}`));
    socket.on('close', () => this.#onClose());
    const timeoutMs = this.#limits.handshakeTimeoutMs;
    this.#timer = setTimeout(() => {
      this.#fail(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Peer handshake not finished within ${timeoutMs} ms`));
    }, timeoutMs);
    this.#timer.unref();
    if (opts.role === 'server') this.#handshake = new ServerHandshake(opts.identity);
    else {
      const hs = new ClientHandshake(opts.identity, { expectNode: opts.expectNode });
      this.#handshake = hs;
      this.#write(hs.start());
    }
  }

  /**
   * Connects to `host:port` and runs the client handshake; resolves once it succeeded. A connect
   * that takes over `connectTimeoutMs` or fails, and a handshake that breaks or takes too long,
   * is CLUSTER_PEER_UNAVAILABLE; a refused handshake rejects with its code (CLUSTER_AUTH_FAILED,
   * CLUSTER_NO_COMMON_VERSION), and a server that proves another node id than `expectNode` with
   * CLUSTER_PEER_UNAVAILABLE.
   */
  static async connect(opts: Omit<PeerConnectionOptions, 'role'> & { host: string; port: number; connectTimeoutMs: number }): Promise<PeerConnection> {
    const where = `${opts.expectNode ?? 'peer'} at ${opts.host}:${opts.port}`;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: opts.host, port: opts.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Connecting to ${where} timed out after ${opts.connectTimeoutMs} ms`));
      }, opts.connectTimeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Cannot connect to ${where}: ${err.message}`, { cause: err }));
      });
    });
    const conn = new PeerConnection(socket, { ...opts, role: 'client' });
    try {
      await conn.ready;
    } catch (err) {
      // Refusals keep their code; anything else means no peer could be spoken to there.
      const refused = err instanceof ClusterError && (err.code === ClusterErrorCode.AUTH_FAILED || err.code === ClusterErrorCode.NO_COMMON_VERSION);
      if (refused) throw err;
      throw new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Handshake with ${where} failed: ${(err as Error).message}`, { cause: err });
    }
    return conn;
  }

  /** The negotiated protocol version (0 before the handshake ends). */
  get version(): number {
    return this.#version;
  }

  /** The other end's node id, once the handshake proved it. */
  get remoteNode(): string | null {
    return this.#remoteNode;
  }

  /** True while requests can be sent. */
  get isOpen(): boolean {
    return this.#phase === 'open';
  }

  /** Requests this end sent and awaits, and requests waiting for room to be sent. */
  get outgoing(): InflightStats & { queued: number } {
    return { ...this.#out, queued: this.#queue.length };
  }

  /** Requests this end received and has not answered yet. */
  get incoming(): InflightStats {
    return { ...this.#in };
  }

  /**
   * Sends a request and resolves with its response. Beyond the in-flight limits the request waits
   * its turn (backpressure) instead of being written. An error response rejects with a
   * ClusterError of the peer's code and message (`current` with CLUSTER_STALE_EPOCH); a lost or
   * closed connection with CLUSTER_PEER_UNAVAILABLE; a body over the sizes with CLUSTER_LIMIT.
   */
  request<T extends RequestType>(type: T, body: RequestBodies[T], payload?: Buffer | null): Promise<PeerResponse<T>> {
    return new Promise<PeerResponse<T>>((resolve, reject) => {
      if (this.#phase !== 'open') {
        reject(this.#unavailable());
        return;
      }
      let encoded: EncodedBody;
      try {
        encoded = encodeBody(body, payload);
      } catch (err) {
        reject(err);
        return;
      }
      const asksBack = type === MessageType.READ_SNAP || (type === MessageType.IO && (body as IoBody).kind === 'read') ? (body as { length: number }).length : 0;
      this.#queue.push({ type, body: encoded, bytes: encoded.bodyBytes + asksBack, resolve: resolve as Pending['resolve'], reject });
      this.#pumpSend();
    });
  }

  /** Measures the round trip of a PING; with version 2, sends and learns the HLC. */
  async ping(): Promise<{ rttMs: number; hlc: bigint | null }> {
    const clock = this.#opts.clock;
    const body: PingBody = this.#version >= Version.PING_HLC && clock !== undefined ? { hlc: clock.now() } : {};
    const start = performance.now();
    const { body: pong } = await this.request(MessageType.PING, body);
    const rttMs = performance.now() - start;
    const hlc = typeof pong.hlc === 'bigint' ? pong.hlc : null;
    if (hlc !== null) clock?.update(hlc);
    return { rttMs, hlc };
  }

  /** Closes the connection: requests awaiting answers reject with CLUSTER_PEER_UNAVAILABLE. */
  close(): Promise<void> {
    if (this.#phase !== 'closed') this.#shut(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Connection to ${this.#remoteNode ?? 'peer'} closed`));
    return this.closed;
  }

  /** True while receiving holds as much as the limits allow: read no further. */
  #readBlocked(): boolean {
    return this.#in.requests >= this.#limits.inflightRequestsMax || this.#in.bytes >= this.#limits.inflightBytesMax;
  }

  /** A chunk the connection may keep. */
  #onData(chunk: Buffer): void {
    if (this.#phase === 'closed') return;
    this.#parser.push(chunk);
    this.#pump();
  }

  /** A read in the shared buffer (copied before it is reused) or in a body being filled. */
  #onRead(bytes: Buffer): void {
    if (this.#phase === 'closed') return;
    this.#parser.push(bytes);
    this.#pump();
    this.#parser.retain();
  }

  /** Handles the frames received, as far as the limits allow; pauses the socket beyond. */
  #pump(): void {
    while (this.#phase !== 'closed' && !this.#readBlocked()) {
      let frame: Frame | null;
      try {
        frame = this.#parser.next();
      } catch (err) {
        if (!(err instanceof ClusterError)) throw err;
        this.#fail(err, [encodeErrorFrame(0, 0n, err, false)]);
        return;
      }
      if (frame === null) break;
      if (this.#phase === 'handshake') this.#onHandshakeFrame(frame);
      else this.#onFrame(frame);
    }
    this.#setPaused(this.#phase !== 'closed' && this.#readBlocked());
  }

  #onHandshakeFrame(frame: Frame): void {
    const step: HandshakeStep = this.#handshake.onFrame(frame);
    for (const buffers of step.send) this.#write(buffers);
    if (step.fail !== undefined) {
      this.#fail(step.fail);
      return;
    }
    if (step.done !== undefined) {
      this.#clearTimer();
      this.#version = step.done.version;
      this.#remoteNode = step.done.remoteNode;
      this.#log = this.#log.child({ node: step.done.remoteNode });
      this.#parser.bodyBytesMax = Size.BODY_BYTES_MAX;
      this.#phase = 'open';
      this.#resolveReady();
      this.#pumpSend();
    }
  }

  #onFrame(frame: Frame): void {
    const { header } = frame;
    if ((header.flags & Flag.RESPONSE) === 0 && (header.flags & Flag.ERROR) !== 0) {
      // The peer is closing for a protocol error of ours: a bug on one side or the other.
      const err = errorFromBody(decodeBody(header.flags, frame.body));
      this.#log.error(`the peer is closing the connection: ${err.code}: ${err.message}`);
      this.#shut(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `The peer closed the connection: ${err.message}`, { cause: err }));
      return;
    }
    if ((header.flags & Flag.RESPONSE) !== 0) {
      const pending = this.#pending.get(header.requestId);
      if (pending === undefined) {
        const err = new ClusterError(ClusterErrorCode.PROTOCOL, `Response to request ${header.requestId}, which is not in flight`);
        this.#fail(err, [encodeErrorFrame(header.type, 0n, err, false)]);
        return;
      }
      this.#pending.delete(header.requestId);
      this.#out.requests--;
      this.#out.bytes -= pending.bytes;
      const body = decodeBody(header.flags, frame.body);
      const pooled = frame.pooled;
      const give = this.#give;
      const release = pooled === null || give === null ? noop : () => give(pooled);
      if ((header.flags & Flag.ERROR) !== 0) {
        release();
        pending.reject(errorFromBody(body));
      } else if (body.meta === null) {
        release();
        pending.reject(new ClusterError(ClusterErrorCode.PROTOCOL, `${typeName(header.type)} response malformed: ${body.malformed}`));
      } else pending.resolve({ body: body.meta as never, payload: body.payload, release });
      this.#pumpSend();
      return;
    }
    const held = header.bodyBytes;
    this.#in.requests++;
    this.#in.bytes += held;
    void this.#serve(frame, held);
  }

  /** Answers one request; its counts in flight are released once the answer is written out. */
  async #serve(frame: Frame, held: number): Promise<void> {
    const { header } = frame;
    const body: DecodedBody = decodeBody(header.flags, frame.body);
    let extra = 0;
    let replyRelease: (() => void) | null = null;
    const done = (): void => {
      this.#in.requests--;
      this.#in.bytes -= held + extra;
      replyRelease?.();
      // The handler is done with the body (its promise settled), and the answer is written.
      if (frame.pooled !== null) this.#give?.(frame.pooled);
      if (this.#phase !== 'closed') this.#pump();
    };
    const dispatch = this.#opts.dispatch;
    const rejection = validatePeerRequest({ version: this.#version, disk: (name) => dispatch?.disk(name) ?? null }, header, body);
    if (rejection !== null) {
      this.#log.warn(`refused ${typeName(header.type)} ${header.requestId}: ${rejection.rule}`);
      const err = new ClusterError(rejection.code, rejection.rule, rejection.current === undefined ? undefined : { current: rejection.current });
      this.#write(encodeErrorFrame(header.type, header.requestId, err, true), done);
      return;
    }
    const type = header.type as RequestType;
    const handler = type === MessageType.PING ? this.#pong : dispatch?.handler(type);
    if (handler === undefined) {
      const err = new ClusterError(ClusterErrorCode.PROTOCOL, `${typeName(type)} is not served by ${this.#opts.identity.node}`);
      this.#write(encodeErrorFrame(type, header.requestId, err, true), done);
      return;
    }
    let frameOut: Buffer[];
    try {
      // Every request that carries the sender's clock (PING from version 2, every disk-scoped
      // body) keeps ours above it: here, once, for every handler.
      const hlc = (body.meta as { hlc?: unknown } | null)?.hlc;
      if (typeof hlc === 'bigint') this.#opts.clock?.update(hlc);
      const claim = (): (() => void) => {
        const pooled = frame.pooled;
        frame.pooled = null;
        const give = this.#give;
        return pooled === null || give === null ? noop : () => give(pooled);
      };
      const reply = (await handler({ type, body: body.meta as never, payload: body.payload, version: this.#version, claim }, this)) ?? {};
      const encoded = encodeBody(reply.body ?? undefined, reply.payload);
      extra = reply.payload?.length ?? 0;
      this.#in.bytes += extra;
      frameOut = encodeFrame(type, Flag.RESPONSE, header.requestId, encoded);
      replyRelease = reply.release ?? null;
    } catch (err) {
      if (err instanceof ClusterError) {
        this.#write(encodeErrorFrame(type, header.requestId, err, true), done);
        return;
      }
      // A handler throws ClusterErrors for what the world does; anything else is a bug.
      this.#log.error(`bug serving ${typeName(type)} ${header.requestId}`, { err });
      crash(err);
      this.#abort();
      done();
      return;
    }
    this.#write(frameOut, done);
  }

  /** PING's handler: PONG, with the clock on version 2 and later. */
  readonly #pong: PeerHandler = async (req) => {
    const clock = this.#opts.clock;
    return { body: req.version >= Version.PING_HLC && clock !== undefined ? { hlc: clock.now() } : {} };
  };

  /** Writes queued requests while the limits and the socket let them go. */
  #pumpSend(): void {
    while (this.#phase === 'open' && this.#queue.length > 0 && !this.#socket.writableNeedDrain) {
      const next = this.#queue[0];
      const { requests, bytes } = this.#out;
      if (requests >= this.#limits.inflightRequestsMax) break;
      if (requests > 0 && bytes + next.bytes > this.#limits.inflightBytesMax) break;
      this.#queue.shift();
      const id = ++this.#nextId;
      this.#pending.set(id, next);
      this.#out.requests++;
      this.#out.bytes += next.bytes;
      this.#write(encodeFrame(next.type, 0, id, next.body));
    }
  }

  /**
   * Queues one frame's buffers; the socket stays corked until the next tick, so a header leaves
   * with its payload and frames of the same tick share one writev. `onWritten` runs once the
   * socket let go of them (written, or failed): never, if the socket is gone already, so it is
   * called here then.
   */
  #write(buffers: Buffer[], onWritten?: () => void): void {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) {
      onWritten?.();
      return;
    }
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) socket.write(buffers[i]);
    socket.write(buffers[last], onWritten === undefined ? undefined : () => onWritten());
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  #setPaused(paused: boolean): void {
    if (paused === this.#paused) return;
    this.#paused = paused;
    if (paused) this.#socket.pause();
    else this.#socket.resume();
  }

  #unavailable(): ClusterError {
    const cause = this.#cause;
    if (cause === null) return new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, 'Peer connection is not open');
    if (cause.code === ClusterErrorCode.PEER_UNAVAILABLE) return cause;
    return new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Peer connection lost: ${cause.message}`, { cause });
  }

  /**
   * Closes for `err` (a protocol error, a refused or late handshake): `frames` (an error frame)
   * are written first and given a moment to leave.
   */
  #fail(err: ClusterError, frames: Buffer[][] = []): void {
    if (this.#phase === 'closed') return;
    this.#log.warn(`closing: ${err.code}: ${err.message}`);
    for (const buffers of frames) this.#write(buffers);
    this.#shut(err);
  }

  /** Ends the socket (destroyed after a grace) and rejects whatever waits, with `cause`. */
  #shut(cause: ClusterError): void {
    if (this.#phase === 'closed') return;
    this.#cause = cause;
    this.#phase = 'closed';
    this.#clearTimer();
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
    this.#rejectAll();
  }

  /** Cuts the connection at once (after a bug: the peer gets no answer rather than a wrong one). */
  #abort(): void {
    this.#shut(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, 'Connection cut after a bug'));
    this.#socket.destroy();
  }

  #rejectAll(): void {
    this.#rejectReady(this.#cause ?? this.#unavailable());
    const err = this.#unavailable();
    const waiting = [...this.#pending.values(), ...this.#queue.splice(0)];
    this.#pending.clear();
    this.#out.requests = 0;
    this.#out.bytes = 0;
    for (const p of waiting) p.reject(err);
  }

  #onClose(): void {
    if (this.#phase !== 'closed') {
      const what = this.#phase === 'handshake' ? 'during the handshake' : '';
      this.#shut(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Connection to ${this.#remoteNode ?? 'peer'} lost${what === '' ? '' : ` ${what}`}`));
    }
    this.#setPaused(false);
    this.#resolveClosed();
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
