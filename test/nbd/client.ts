/**
 * A small NBD client for tests: fixed newstyle handshake, simple or structured replies, meta
 * contexts, concurrent requests matched by cookie. Also a raw `Wire` for tests that speak the
 * protocol byte by byte.
 */
import net from 'node:net';
import { ByteQueue } from '../../src/util/byte-queue.ts';
import {
  decodeBlockStatus,
  decodeChunkHeader,
  decodeErrorChunk,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeOffsetData,
  decodeOffsetHole,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequestData,
  encodeMetaContextRequestData,
  encodeOptionRequest,
  encodeRequestHeader,
  type BlockDescriptor,
} from '../../src/nbd/codec.ts';
import { ClientFlag, Command, Info, Magic, Option, OptionReply, ReplyFlag, ReplyType, Size } from '../../src/nbd/protocol.ts';

/** Where the server listens. */
export type Target = { host: string; port: number } | { path: string };

/** A socket with promise-based exact reads. */
export class Wire {
  readonly socket: net.Socket;
  readonly #queue = new ByteQueue();
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #ended = false;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#check();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => {
      this.#ended = true;
      this.#check();
    });
  }

  static connect(target: Target): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const socket = 'path' in target ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port });
      socket.setNoDelay(true);
      socket.once('connect', () => resolve(new Wire(socket)));
      socket.once('error', reject);
    });
  }

  /** Reads exactly n bytes; rejects if the socket closes first. */
  read(n: number): Promise<Buffer> {
    if (this.#want) throw new Error('Concurrent reads on a Wire');
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject };
      this.#check();
    });
  }

  /** Bytes already received and unread. */
  get buffered(): number {
    return this.#queue.length;
  }

  write(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** Resolves true if the server closed the connection within `ms` (reading and dropping data). */
  async closesWithin(ms: number): Promise<boolean> {
    this.socket.on('data', () => {});
    const timer = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref());
    return Promise.race([this.closed.then(() => true), timer]);
  }

  #check(): void {
    const want = this.#want;
    if (!want) return;
    if (this.#queue.length >= want.n) {
      this.#want = null;
      want.resolve(this.#queue.take(want.n));
    } else if (this.#ended) {
      this.#want = null;
      want.reject(new Error(`Connection closed with ${this.#queue.length} of ${want.n} bytes`));
    }
  }
}

/** An error reply from the server. */
export class NbdReplyError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message || `NBD error ${errno}`);
    this.errno = errno;
  }
}

/** Options of NbdClient.connect. */
export interface ConnectOptions {
  exportName?: string;
  /** Negotiate structured replies (default true). */
  structured?: boolean;
  /** Meta contexts to select (needs structured). */
  metaContexts?: string[];
  /** Use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO. */
  useExportName?: boolean;
  /** Ask for NBD_FLAG_C_NO_ZEROES (default true). */
  noZeroes?: boolean;
}

/** What a reply carried. */
export interface ReplyResult {
  errno: number;
  message: string;
  /** Read data, reassembled (structured) or as sent (simple). */
  data: Buffer | null;
  /** Block status chunks by context id. */
  status: Map<number, BlockDescriptor[]>;
  /** Number of chunks (1 for a simple reply). */
  chunks: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  result: ReplyResult;
  resolve: (r: ReplyResult) => void;
  reject: (e: Error) => void;
}

/** Reads one option reply: header and data. */
export async function readOptionReply(wire: Wire): Promise<{ option: number; replyType: number; data: Buffer }> {
  const header = decodeOptionReplyHeader(await wire.read(Size.OPTION_REPLY_HEADER));
  return { option: header.option, replyType: header.replyType, data: await wire.read(header.length) };
}

/** Reads the greeting and sends client flags. */
export async function greet(wire: Wire, clientFlags = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES): Promise<number> {
  const flags = decodeGreeting(await wire.read(Size.GREETING));
  wire.write(encodeClientFlags(clientFlags));
  return flags;
}

/** Sends an option and collects replies up to the final one (ACK or error). */
export async function option(wire: Wire, opt: number, data?: Buffer): Promise<{ replyType: number; data: Buffer }[]> {
  wire.write(encodeOptionRequest(opt, data));
  const replies: { replyType: number; data: Buffer }[] = [];
  for (;;) {
    const reply = await readOptionReply(wire);
    if (reply.option !== opt) throw new Error(`Reply to option ${reply.option}, expected ${opt}`);
    replies.push(reply);
    if (reply.replyType === OptionReply.ACK || reply.replyType >= 0x80000000) return replies;
  }
}

/** Lists exports. */
export async function listExports(target: Target): Promise<string[]> {
  const wire = await Wire.connect(target);
  await greet(wire);
  const replies = await option(wire, Option.LIST);
  await option(wire, Option.ABORT);
  wire.socket.end();
  return replies.filter((r) => r.replyType === OptionReply.SERVER).map((r) => decodeRepServer(r.data));
}

/** A connected client in transmission. */
export class NbdClient {
  readonly wire: Wire;
  sizeBytes = 0;
  transmissionFlags = 0;
  structured = false;
  blockSize: { minimum: number; preferred: number; maximum: number } | null = null;
  /** Selected contexts: id → name. */
  readonly contexts = new Map<number, string>();
  readonly #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #failure: Error | null = null;

  private constructor(wire: Wire) {
    this.wire = wire;
  }

  static async connect(target: Target, opts: ConnectOptions = {}): Promise<NbdClient> {
    const wire = await Wire.connect(target);
    const client = new NbdClient(wire);
    await client.#handshake(opts);
    void client.#readLoop();
    return client;
  }

  async #handshake(opts: ConnectOptions): Promise<void> {
    const name = opts.exportName ?? '';
    const noZeroes = opts.noZeroes ?? true;
    await greet(this.wire, ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0));
    if (opts.structured ?? true) {
      const [reply] = await option(this.wire, Option.STRUCTURED_REPLY);
      this.structured = reply.replyType === OptionReply.ACK;
    }
    if (opts.metaContexts && opts.metaContexts.length > 0) {
      const replies = await option(this.wire, Option.SET_META_CONTEXT, encodeMetaContextRequestData(name, opts.metaContexts));
      for (const r of replies) {
        if (r.replyType === OptionReply.META_CONTEXT) {
          const { contextId, name: contextName } = decodeRepMetaContext(r.data);
          this.contexts.set(contextId, contextName);
        } else if (r.replyType !== OptionReply.ACK) {
          throw new NbdReplyError(0, `SET_META_CONTEXT failed: 0x${r.replyType.toString(16)} ${r.data.toString()}`);
        }
      }
    }
    if (opts.useExportName) {
      this.wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from(name)));
      const reply = decodeExportNameReply(await this.wire.read(Size.EXPORT_NAME_REPLY + (noZeroes ? 0 : Size.EXPORT_NAME_ZEROES)));
      this.sizeBytes = reply.sizeBytes;
      this.transmissionFlags = reply.transmissionFlags;
      return;
    }
    const replies = await option(this.wire, Option.GO, encodeInfoRequestData(name, [Info.BLOCK_SIZE]));
    for (const r of replies) {
      if (r.replyType === OptionReply.INFO) {
        const info = decodeInfoReply(r.data);
        if ('sizeBytes' in info) {
          this.sizeBytes = info.sizeBytes;
          this.transmissionFlags = info.transmissionFlags;
        } else if ('preferred' in info) {
          this.blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
        }
      } else if (r.replyType !== OptionReply.ACK) {
        throw new NbdReplyError(0, `GO failed: 0x${r.replyType.toString(16)} ${r.data.toString()}`);
      }
    }
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.wire.read(4);
        const magic = head.readUInt32BE(0);
        if (magic === Magic.SIMPLE_REPLY) {
          const rest = await this.wire.read(Size.SIMPLE_REPLY_HEADER - 4);
          const { errno, cookie } = decodeSimpleReply(Buffer.concat([head, rest]));
          const p = this.#take(cookie);
          p.result.errno = errno;
          if (errno === 0 && p.type === Command.READ) p.result.data = await this.wire.read(p.length);
          this.#settle(cookie, p);
        } else if (magic === Magic.STRUCTURED_REPLY) {
          const rest = await this.wire.read(Size.STRUCTURED_REPLY_HEADER - 4);
          const header = decodeChunkHeader(Buffer.concat([head, rest]));
          const payload = await this.wire.read(header.length);
          const p = this.#pending.get(header.cookie);
          if (!p) throw new Error(`Chunk for unknown cookie ${header.cookie}`);
          this.#chunk(p, header.type, payload);
          if (header.flags & ReplyFlag.DONE) this.#settle(header.cookie, p);
        } else {
          throw new Error(`Bad reply magic 0x${magic.toString(16)}`);
        }
      }
    } catch (err) {
      this.#failure = err as Error;
      for (const p of this.#pending.values()) p.reject(this.#failure);
      this.#pending.clear();
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (!p) throw new Error(`Reply for unknown cookie ${cookie}`);
    return p;
  }

  #chunk(p: Pending, type: number, payload: Buffer): void {
    p.result.chunks++;
    switch (type) {
      case ReplyType.OFFSET_DATA: {
        const { offset, data } = decodeOffsetData(payload);
        this.#place(p, offset, data.length).set(data, 0);
        break;
      }
      case ReplyType.OFFSET_HOLE: {
        const { offset, length } = decodeOffsetHole(payload);
        this.#place(p, offset, length).fill(0);
        break;
      }
      case ReplyType.BLOCK_STATUS: {
        const { contextId, extents } = decodeBlockStatus(payload);
        if (p.result.status.has(contextId)) throw new Error(`Two block status chunks for context ${contextId}`);
        p.result.status.set(contextId, extents);
        break;
      }
      case ReplyType.NONE:
        break;
      case ReplyType.ERROR:
      case ReplyType.ERROR_OFFSET: {
        const e = decodeErrorChunk(type, payload);
        p.result.errno = e.errno;
        p.result.message = e.message;
        break;
      }
      default:
        throw new Error(`Unknown chunk type ${type}`);
    }
  }

  #place(p: Pending, offset: number, length: number): Buffer {
    if (p.type !== Command.READ || offset < p.offset || offset + length > p.offset + p.length) {
      throw new Error(`Content chunk [${offset}, +${length}) outside the request`);
    }
    p.result.data ??= Buffer.alloc(p.length);
    return p.result.data.subarray(offset - p.offset, offset - p.offset + length);
  }

  #settle(cookie: bigint, p: Pending): void {
    this.#pending.delete(cookie);
    p.resolve(p.result);
  }

  /** Sends one request; resolves with whatever the reply carried (errors included). */
  request(type: number, flags: number, offset: number, length: number, payload?: Buffer): Promise<ReplyResult> {
    if (this.#failure) return Promise.reject(this.#failure);
    const cookie = this.#nextCookie++;
    const promise = new Promise<ReplyResult>((resolve, reject) => {
      const result: ReplyResult = { errno: 0, message: '', data: null, status: new Map(), chunks: 0 };
      this.#pending.set(cookie, { type, offset, length, result, resolve, reject });
    });
    const header = encodeRequestHeader({ flags, type, cookie, offset, length });
    if (payload) {
      this.wire.socket.cork();
      this.wire.write(header);
      this.wire.write(payload);
      this.wire.socket.uncork();
    } else {
      this.wire.write(header);
    }
    return promise;
  }

  async #ok(type: number, flags: number, offset: number, length: number, payload?: Buffer): Promise<ReplyResult> {
    const r = await this.request(type, flags, offset, length, payload);
    if (r.errno !== 0) throw new NbdReplyError(r.errno, r.message);
    return r;
  }

  async read(offset: number, length: number, flags = 0): Promise<Buffer> {
    const r = await this.#ok(Command.READ, flags, offset, length);
    if (!r.data || r.data.length !== length) throw new Error('Short read');
    return r.data;
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<void> {
    await this.#ok(Command.WRITE, flags, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.#ok(Command.FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, flags = 0): Promise<void> {
    await this.#ok(Command.TRIM, flags, offset, length);
  }

  async writeZeroes(offset: number, length: number, flags = 0): Promise<void> {
    await this.#ok(Command.WRITE_ZEROES, flags, offset, length);
  }

  /** Block status by context name. */
  async blockStatus(offset: number, length: number, flags = 0): Promise<Map<string, BlockDescriptor[]>> {
    const r = await this.#ok(Command.BLOCK_STATUS, flags, offset, length);
    const byName = new Map<string, BlockDescriptor[]>();
    for (const [id, extents] of r.status) byName.set(this.contexts.get(id) ?? `#${id}`, extents);
    return byName;
  }

  /** Sends NBD_CMD_DISC and waits for the server to close. */
  async disconnect(): Promise<void> {
    this.wire.write(encodeRequestHeader({ flags: 0, type: Command.DISC, cookie: 0n, offset: 0, length: 0 }));
    this.wire.socket.end();
    await this.wire.closed;
  }

  destroy(): void {
    this.wire.socket.destroy();
  }
}
