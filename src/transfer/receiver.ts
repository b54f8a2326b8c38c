/**
 * The receiving end (docs/transfer.md): a TCP server whose connections each shake hands, then
 * OPEN a transfer or JOIN an open one, and carry its chunks. Each DATA frame is hashed as it
 * comes, written at its offset, then acknowledged with the time it was held; a chunk whose bytes
 * hash as announced is journaled and confirmed. FINISH has the file verified and renamed into
 * place. A newer OPEN of the same transfer replaces the older attempt (a sender that came back).
 */
import { createHash, type Hash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeBody } from './codec.ts';
import { Channel, type Received } from './channel.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import { checkChunk, checkData, checkFirst, type DataContext, type OpenRequest, type Rejection } from './gate.ts';
import { serverHandshake } from './handshake.ts';
import { PartialFile } from './partial.ts';
import { FrameType, Limit, ServiceClass, Size, typeName, type ServiceClassName } from './spec.ts';

/** Options of a receiver. */
export interface ReceiverOptions {
  /** Directory files land in. */
  dir: string;
  /** The shared secret; null: none asked (and a sender with one refuses). */
  secret: Buffer | null;
  /** DSCP code points by class (default ServiceClass). */
  dscp?: Partial<Record<ServiceClassName, number>>;
  /** Test hook: ms each DATA frame's write is held back (a slow disk), TESSERA_TRANSFER_TEST_HOLD_MS in the CLI. */
  testHoldMs?: number;
}

/** What `received` reports. */
export interface ReceivedFile {
  name: string;
  sizeBytes: number;
  sha256: string;
  /** Bytes that came in this session, and those held already from an earlier one. */
  bytesReceived: number;
  bytesResumed: number;
  seconds: number;
  holdMsP50: number;
}

/** What `failed` reports. */
export interface FailedTransfer {
  name: string;
  code: string;
  message: string;
}

interface ConnState {
  channel: Channel;
  /** The chunk being received on this connection. */
  open: { chunk: number; next: number; end: number; hash: Hash; sha256: Buffer } | null;
  /** Writes of this connection, one after another. */
  chain: Promise<void>;
}

class Session {
  readonly req: OpenRequest;
  readonly partial: PartialFile;
  readonly conns = new Set<ConnState>();
  queuedBytes = 0;
  paused = false;
  ended: TransferError | null = null;
  finishing = false;
  bytesReceived = 0;
  readonly bytesResumed: number;
  readonly startMs = performance.now();
  readonly holds: number[] = [];

  constructor(req: OpenRequest, partial: PartialFile) {
    this.req = req;
    this.partial = partial;
    this.bytesResumed = partial.heldBytes;
  }

  /** Settles once every connection's writes have. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.conns].map((c) => c.chain));
  }
}

/** A receiver: `listen()`, then `received` and `failed` events; `close()` to stop. */
export class TransferReceiver extends EventEmitter<{ received: [ReceivedFile]; failed: [FailedTransfer] }> {
  readonly #opts: ReceiverOptions;
  readonly #server: net.Server;
  readonly #sessions = new Map<string, Session>();
  readonly #channels = new Set<Channel>();

  constructor(opts: ReceiverOptions) {
    super();
    this.#opts = opts;
    this.#server = net.createServer((socket) => this.#accept(socket));
  }

  /** Listens; resolves to the address bound (port 0: an ephemeral one). */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        const a = this.#server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stops listening and closes every connection; partial state stays. */
  async close(): Promise<void> {
    this.#server.close();
    for (const ch of this.#channels) ch.destroy();
    await Promise.allSettled([...this.#sessions.values()].map((s) => this.#end(s, new TransferError(TransferErrorCode.CLOSED, 'The receiver is closing'))));
  }

  /** The code point of a connection: the sender's explicit one, else this receiver's for the class. */
  #dscp(req: { className: ServiceClassName; dscp: number | undefined }): number {
    return req.dscp ?? this.#opts.dscp?.[req.className] ?? ServiceClass[req.className];
  }

  #accept(socket: net.Socket): void {
    const channel = new Channel(socket);
    if (this.#channels.size >= Limit.RECEIVER_CONNECTIONS_MAX) {
      channel.close(new TransferError(TransferErrorCode.LIMIT, `The receiver holds ${Limit.RECEIVER_CONNECTIONS_MAX} connections already`));
      return;
    }
    this.#channels.add(channel);
    channel.onClose(() => this.#channels.delete(channel));
    void this.#serve(channel).catch((err: unknown) => {
      if (err instanceof TransferError) channel.close(err);
      else throw err;
    });
  }

  async #serve(channel: Channel): Promise<void> {
    await serverHandshake(channel, this.#opts.secret);
    const first = await channel.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'OPEN or JOIN');
    const checked = checkFirst(first.frame.header.type, first.meta, first.malformed);
    if ('code' in checked) throw rejection(checked);
    let session: Session;
    if ('open' in checked) {
      const req = checked.open;
      channel.socket.setTypeOfService(this.#dscp(req) << 2);
      const old = this.#sessions.get(req.transfer);
      if (old !== undefined) await this.#end(old, new TransferError(TransferErrorCode.CLOSED, 'Replaced by a newer attempt of the same transfer'));
      if (this.#sessions.size >= Limit.RECEIVER_TRANSFERS_MAX) {
        throw new TransferError(TransferErrorCode.LIMIT, `The receiver serves ${Limit.RECEIVER_TRANSFERS_MAX} transfers already`);
      }
      let partial: PartialFile;
      try {
        partial = await PartialFile.open(this.#opts.dir, req);
      } catch (err) {
        if (err instanceof TransferError) this.emit('failed', { name: req.name, code: err.code, message: err.message });
        throw err;
      }
      if (channel.closed) {
        await partial.close();
        return;
      }
      session = new Session(req, partial);
      this.#sessions.set(req.transfer, session);
      channel.send(FrameType.OPENED, encodeBody({ chunks: req.chunks }, partial.bitmap()));
    } else {
      const found = this.#sessions.get(checked.join.transfer);
      if (found === undefined || found.ended !== null) throw new TransferError(TransferErrorCode.UNKNOWN, `No open transfer ${checked.join.transfer} to join`);
      session = found;
      channel.socket.setTypeOfService(this.#dscp(checked.join) << 2);
      channel.send(FrameType.JOINED, encodeBody({}));
    }
    const conn: ConnState = { channel, open: null, chain: Promise.resolve() };
    session.conns.add(conn);
    channel.onClose(() => {
      session.conns.delete(conn);
      if (session.conns.size === 0 && !session.finishing) void this.#end(session, null);
    });
    channel.onFrame((r) => this.#onFrame(session, conn, r));
  }

  #onFrame(session: Session, conn: ConnState, r: Received): void {
    if (session.ended !== null) return;
    const { header } = r.frame;
    const ctx: DataContext = { sizeBytes: session.req.sizeBytes, chunkBytes: session.req.chunkBytes, chunks: session.req.chunks, open: conn.open };
    switch (header.type) {
      case FrameType.PRIME: {
        this.#ack(conn, r);
        return;
      }
      case FrameType.CHUNK: {
        const c = checkChunk(ctx, r.meta);
        if ('code' in c) return this.#refuse(conn, c);
        conn.open = { chunk: c.chunk, next: c.offset, end: c.offset + c.length, hash: createHash('sha256'), sha256: c.sha256 };
        return;
      }
      case FrameType.DATA: {
        const d = checkData(ctx, r.meta, r.payload);
        if ('code' in d) return this.#refuse(conn, d);
        const open = conn.open!;
        const payload = r.payload!;
        open.hash.update(payload);
        open.next += payload.length;
        let verdict: boolean | null = null;
        if (open.next === open.end) {
          verdict = open.hash.digest().equals(open.sha256);
          conn.open = null;
        }
        session.queuedBytes += payload.length;
        if (!session.paused && session.queuedBytes > Limit.RECEIVER_QUEUED_BYTES_MAX) this.#pause(session, true);
        const holdMs = this.#opts.testHoldMs ?? 0;
        conn.chain = conn.chain.then(async () => {
          if (session.ended !== null) return;
          if (holdMs > 0) await sleep(holdMs);
          await session.partial.write(d.offset, payload);
          session.bytesReceived += payload.length;
          session.queuedBytes -= payload.length;
          if (session.paused && session.queuedBytes <= Limit.RECEIVER_QUEUED_BYTES_MAX / 2) this.#pause(session, false);
          this.#ack(conn, r, session);
          if (verdict === true) {
            await session.partial.record(open.chunk, open.sha256);
            conn.channel.send(FrameType.CHUNK_OK, encodeBody({ chunk: open.chunk }));
          } else if (verdict === false) {
            conn.channel.send(FrameType.CHUNK_BAD, encodeBody({ chunk: open.chunk, rule: `chunk ${open.chunk}'s bytes do not hash as its CHUNK said` }));
          }
        });
        conn.chain.catch((err: unknown) => {
          if (err instanceof TransferError) void this.#end(session, err);
          else throw err;
        });
        return;
      }
      case FrameType.FINISH: {
        void this.#finish(session, conn, r).catch((err: unknown) => {
          if (err instanceof TransferError) void this.#end(session, err);
          else throw err;
        });
        return;
      }
      default:
        return this.#refuse(conn, { code: TransferErrorCode.PROTOCOL, rule: `${typeName(header.type)} is not a frame a sender sends after OPEN or JOIN` });
    }
  }

  #ack(conn: ConnState, r: Received, session?: Session): void {
    const holdMs = performance.now() - r.arrivedMs;
    if (session !== undefined && session.holds.length < 100_000) session.holds.push(holdMs);
    conn.channel.send(FrameType.ACK, encodeBody({ seq: r.frame.header.seq, echoUs: Number(r.frame.header.sentUs), holdUs: Math.round(holdMs * 1000) }));
  }

  #refuse(conn: ConnState, rej: Rejection): void {
    conn.channel.close(rejection(rej));
  }

  #pause(session: Session, paused: boolean): void {
    session.paused = paused;
    for (const c of session.conns) c.channel.pauseReading(paused);
  }

  async #finish(session: Session, conn: ConnState, r: Received): Promise<void> {
    const sha = r.meta?.sha256;
    if (!Buffer.isBuffer(sha) || sha.length !== Size.SHA256_BYTES) throw new TransferError(TransferErrorCode.PROTOCOL, 'FINISH: sha256 must be 32 bytes');
    session.finishing = true;
    await session.settled();
    if (session.ended !== null) return;
    const { req, partial } = session;
    if (partial.held.size !== req.chunks) throw new TransferError(TransferErrorCode.PROTOCOL, `FINISH with ${req.chunks - partial.held.size} chunks still missing`);
    await partial.finish(sha);
    session.ended = new TransferError(TransferErrorCode.CLOSED, 'Done');
    this.#sessions.delete(req.transfer);
    const sorted = [...session.holds].sort((a, b) => a - b);
    this.emit('received', {
      name: req.name,
      sizeBytes: req.sizeBytes,
      sha256: sha.toString('hex'),
      bytesReceived: session.bytesReceived,
      bytesResumed: session.bytesResumed,
      seconds: Math.round(performance.now() - session.startMs) / 1000,
      holdMsP50: sorted.length === 0 ? 0 : Math.round(sorted[sorted.length >> 1] * 1000) / 1000,
    });
    conn.channel.send(FrameType.DONE, encodeBody({ sha256: sha }));
  }

  /** Ends a session: its connections closed (with `err` sent, if any), its writes settled, its files closed. */
  async #end(session: Session, err: TransferError | null): Promise<void> {
    const first = session.ended === null;
    if (first) session.ended = err ?? new TransferError(TransferErrorCode.CLOSED, 'Every connection closed');
    else if (err === null) return;
    if (this.#sessions.get(session.req.transfer) === session) this.#sessions.delete(session.req.transfer);
    if (first && err !== null && err.code !== TransferErrorCode.CLOSED) this.emit('failed', { name: session.req.name, code: err.code, message: err.message });
    for (const c of session.conns) c.channel.close(err ?? undefined);
    await session.settled();
    await session.partial.close();
  }
}

function rejection(rej: Rejection): TransferError {
  return new TransferError(rej.code, rej.rule);
}

