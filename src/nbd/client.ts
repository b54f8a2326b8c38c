/**
 * A small NBD client, for reading another server's export (qemu-nbd, nbdkit, another Tessera):
 * the fixed newstyle handshake with NBD_OPT_GO, structured replies and the `base:allocation`
 * meta context when the server offers them, concurrent READ and BLOCK_STATUS requests matched by
 * cookie. It only reads: what `disk import` needs (docs/nbd.md, "Client").
 */
import net from 'node:net';
import { ByteQueue } from '../util/byte-queue.ts';
import {
  decodeBlockStatus,
  decodeChunkHeader,
  decodeErrorChunk,
  decodeGreeting,
  decodeInfoReply,
  decodeOffsetData,
  decodeOffsetHole,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequestData,
  encodeMetaContextRequestData,
  encodeOptionRequest,
  encodeRequestHeader,
} from './codec.ts';
import { AllocationState, ClientFlag, Command, HandshakeFlag, Info, Magic, MetaContext, Option, OptionReply, OPTION_REPLY_ERROR_BIT, ReplyFlag, ReplyType, Size } from './protocol.ts';
import { NbdError, NbdErrorCode } from './errors.ts';

/** Where an NBD server listens: TCP, or a Unix socket. */
export type NbdTarget = { host: string; port: number } | { path: string };

/** The default NBD port. */
const defaultPort = 10809;

/**
 * Parses an NBD URI (the NBD URI standard, as libnbd and qemu read it): `nbd://HOST[:PORT][/EXPORT]`
 * and `nbd+unix:///[EXPORT]?socket=PATH`. TLS (`nbds`) and vsock are refused: this client has neither.
 */
export function parseNbdUri(uri: string): { target: NbdTarget; exportName: string } {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `Not an NBD URI: ${uri}`);
  }
  // The export name is the path without its first slash, percent-decoded.
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (url.protocol === 'nbd:') {
    if (url.hostname === '') throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `NBD URI without a host: ${uri}`);
    const port = url.port === '' ? defaultPort : Number(url.port);
    return { target: { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port }, exportName };
  }
  if (url.protocol === 'nbd+unix:') {
    const path = url.searchParams.get('socket');
    if (path === null || path === '') throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `nbd+unix URI without ?socket=PATH: ${uri}`);
    if (url.hostname !== '') throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `nbd+unix URI with a host: ${uri}`);
    return { target: { path }, exportName };
  }
  throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `Unsupported NBD URI scheme ${url.protocol.slice(0, -1)} (nbd:// and nbd+unix:// are; TLS is not): ${uri}`);
}

/** A run of an export as `base:allocation` describes it. */
export interface NbdExtent {
  offset: number;
  length: number;
  /** No data stored there (it may still read as non-zero on some servers: `zero` says). */
  hole: boolean;
  /** Reads as zeroes. */
  zero: boolean;
}

/** Options of NbdClient.connect. */
export interface NbdClientOptions {
  /** The export to open; '' is the server's default. */
  exportName?: string;
  /** Time to connect and finish the handshake. Default 10 s. */
  connectTimeoutMs?: number;
  /** Time a request may wait for its reply before the connection counts as lost. Default 60 s. */
  requestTimeoutMs?: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  data: Buffer | null;
  /** The caller's buffer a read's data goes into, or null. */
  into: Buffer | null;
  extents: NbdExtent[] | null;
  errno: number;
  message: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Largest read this client asks in one request (servers refuse more than 32 MiB). */
export const nbdReadBytesMax = 32 << 20;

/** A connected NBD client in transmission phase: reads and block status, many at once. */
export class NbdClient {
  /** The export's size, as the server said in the handshake. */
  sizeBytes = 0;
  /** Whether the server speaks structured replies. */
  structured = false;
  /** Whether BLOCK_STATUS of `base:allocation` works on this export. */
  allocation = false;
  /** The server's preferred and largest request sizes, when it said. */
  blockSize: { minimum: number; preferred: number; maximum: number } | null = null;
  readonly #socket: net.Socket;
  readonly #queue = new ByteQueue();
  #want: { n: number; into: Buffer | null; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #closed = false;
  #failure: NbdError | null = null;
  readonly #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #allocationId = -1;
  readonly #describe: string;

  private constructor(socket: net.Socket, describe: string) {
    this.#socket = socket;
    this.#describe = describe;
    socket.on('data', (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#check();
    });
    socket.on('error', (err) => this.#fail(new NbdError(NbdErrorCode.LOST, `Lost the NBD server ${this.#describe}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
    socket.once('close', () => {
      this.#closed = true;
      this.#fail(new NbdError(NbdErrorCode.LOST, `The NBD server ${this.#describe} closed the connection`));
      this.#check();
    });
  }

  /** Connects, negotiates and opens the export; fails with NBD_ERR_UNREACHABLE, NBD_ERR_NOT_FOUND or NBD_ERR_PROTOCOL. */
  static async connect(target: NbdTarget, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const describe = 'path' in target ? `at ${target.path}` : `at ${target.host}:${target.port}`;
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = 'path' in target ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new NbdError(NbdErrorCode.UNREACHABLE, `Cannot reach the NBD server ${describe}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new NbdError(NbdErrorCode.UNREACHABLE, `Cannot reach the NBD server ${describe}: ${err.code ?? err.message}`, { cause: err }));
      });
    });
    socket.setNoDelay(true);
    const client = new NbdClient(socket, describe);
    const timer = setTimeout(() => client.#fail(new NbdError(NbdErrorCode.TIMEOUT, `The NBD server ${describe} did not finish the handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await client.#handshake(opts.exportName ?? '');
    } catch (err) {
      client.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    socket.setTimeout(requestTimeoutMs, () => {
      if (client.#pending.size > 0) client.#fail(new NbdError(NbdErrorCode.TIMEOUT, `The NBD server ${describe} did not answer within ${requestTimeoutMs} ms`));
    });
    void client.#readLoop();
    return client;
  }

  /** Reads exactly n bytes of the handshake or of a reply: into `into` (its first n bytes) when given, sparing a copy. */
  #read(n: number, into: Buffer | null = null): Promise<Buffer> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#want = { n, into, resolve, reject };
      this.#check();
    });
  }

  #check(): void {
    const want = this.#want;
    if (want === null) return;
    if (this.#queue.length >= want.n) {
      this.#want = null;
      if (want.into === null) want.resolve(this.#queue.take(want.n));
      else {
        this.#queue.takeInto(want.into, 0, want.n);
        want.resolve(want.into);
      }
    } else if (this.#closed || this.#failure !== null) {
      this.#want = null;
      want.reject(this.#failure ?? new NbdError(NbdErrorCode.LOST, `The NBD server ${this.#describe} closed the connection`));
    }
  }

  /** Ends the connection with `err`: every request waiting fails with it. */
  #fail(err: NbdError): void {
    if (this.#failure === null) this.#failure = err;
    for (const p of this.#pending.values()) p.reject(this.#failure);
    this.#pending.clear();
    this.#check();
    this.#socket.destroy();
  }

  async #option(opt: number, data?: Buffer): Promise<{ replyType: number; data: Buffer }[]> {
    this.#socket.write(encodeOptionRequest(opt, data));
    const replies: { replyType: number; data: Buffer }[] = [];
    for (let i = 0; ; i++) {
      if (i > 65536) throw new NbdError(NbdErrorCode.LIMIT, `The NBD server ${this.#describe} sent too many replies to one option`);
      const header = decodeOptionReplyHeader(await this.#read(Size.OPTION_REPLY_HEADER));
      if (header.length > 1 << 20) throw new NbdError(NbdErrorCode.LIMIT, `The NBD server ${this.#describe} sent an option reply of ${header.length} bytes`);
      const reply = { replyType: header.replyType, data: await this.#read(header.length) };
      if (header.option !== opt) throw new NbdError(NbdErrorCode.PROTOCOL, `The NBD server ${this.#describe} replied to option ${header.option}, not ${opt}`);
      replies.push(reply);
      if (reply.replyType === OptionReply.ACK || reply.replyType >= OPTION_REPLY_ERROR_BIT) return replies;
    }
  }

  async #handshake(exportName: string): Promise<void> {
    const flags = decodeGreeting(await this.#read(Size.GREETING));
    if (!(flags & HandshakeFlag.FIXED_NEWSTYLE)) throw new NbdError(NbdErrorCode.PROTOCOL, `The NBD server ${this.#describe} does not speak fixed newstyle`);
    this.#socket.write(encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | (flags & HandshakeFlag.NO_ZEROES ? ClientFlag.NO_ZEROES : 0)));
    const [structured] = await this.#option(Option.STRUCTURED_REPLY);
    this.structured = structured.replyType === OptionReply.ACK;
    if (this.structured) {
      const replies = await this.#option(Option.SET_META_CONTEXT, encodeMetaContextRequestData(exportName, [MetaContext.BASE_ALLOCATION]));
      for (const r of replies) {
        if (r.replyType !== OptionReply.META_CONTEXT) continue;
        const { contextId, name } = decodeRepMetaContext(r.data);
        if (name === MetaContext.BASE_ALLOCATION) this.#allocationId = contextId;
      }
      // An error reply here only means no contexts: reads still work.
    }
    const replies = await this.#option(Option.GO, encodeInfoRequestData(exportName, [Info.BLOCK_SIZE]));
    let sized = false;
    for (const r of replies) {
      if (r.replyType === OptionReply.INFO) {
        const info = decodeInfoReply(r.data);
        if ('sizeBytes' in info) {
          this.sizeBytes = info.sizeBytes;
          sized = true;
        } else if ('preferred' in info) this.blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
      } else if (r.replyType === OptionReply.ERR_UNKNOWN) {
        throw new NbdError(NbdErrorCode.NOT_FOUND, `The NBD server ${this.#describe} has no export ${JSON.stringify(exportName)}${r.data.length > 0 ? `: ${r.data.toString()}` : ''}`);
      } else if (r.replyType !== OptionReply.ACK) {
        const text = r.data.toString();
        throw new NbdError(NbdErrorCode.REFUSED, `The NBD server ${this.#describe} refused export ${JSON.stringify(exportName)} (reply 0x${r.replyType.toString(16)})${text !== '' ? `: ${text}` : ''}`);
      }
    }
    if (!sized) throw new NbdError(NbdErrorCode.PROTOCOL, `The NBD server ${this.#describe} did not say the export's size`);
    this.allocation = this.#allocationId >= 0;
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.#read(Size.SIMPLE_REPLY_HEADER);
        const magic = head.readUInt32BE(0);
        if (magic === Magic.SIMPLE_REPLY) {
          const { errno, cookie } = decodeSimpleReply(head);
          const p = this.#take(cookie);
          p.errno = errno;
          if (errno === 0 && p.type === Command.READ) {
            p.data = p.into ?? Buffer.allocUnsafe(p.length);
            await this.#read(p.length, p.data);
          }
          this.#settle(cookie, p);
        } else if (magic === Magic.STRUCTURED_REPLY) {
          const rest = await this.#read(Size.STRUCTURED_REPLY_HEADER - Size.SIMPLE_REPLY_HEADER);
          const header = decodeChunkHeader(Buffer.concat([head, rest]));
          const p = this.#pending.get(header.cookie);
          if (p === undefined) throw new NbdError(NbdErrorCode.PROTOCOL, `A reply chunk for unknown cookie ${header.cookie}`);
          if (header.length > Math.min(p.length, nbdReadBytesMax) + 64 * 1024) throw new NbdError(NbdErrorCode.LIMIT, `A reply chunk of ${header.length} bytes for a request of ${p.length}`);
          if (header.type === ReplyType.OFFSET_DATA && header.length > 8) {
            // Read data goes straight to its place in the caller's buffer.
            const offset = Number((await this.#read(8)).readBigUInt64BE(0));
            await this.#read(header.length - 8, this.#place(p, offset, header.length - 8));
          } else {
            this.#chunk(p, header.type, await this.#read(header.length));
          }
          if (header.flags & ReplyFlag.DONE) this.#settle(header.cookie, p);
        } else {
          throw new NbdError(NbdErrorCode.PROTOCOL, `Bad reply magic 0x${magic.toString(16)}`);
        }
      }
    } catch (err) {
      this.#fail(err instanceof NbdError ? err : new NbdError(NbdErrorCode.PROTOCOL, (err as Error).message, { cause: err }));
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (p === undefined) throw new NbdError(NbdErrorCode.PROTOCOL, `A reply for unknown cookie ${cookie}`);
    return p;
  }

  #chunk(p: Pending, type: number, payload: Buffer): void {
    switch (type) {
      case ReplyType.OFFSET_DATA: {
        const { offset, data } = decodeOffsetData(payload);
        data.copy(this.#place(p, offset, data.length));
        break;
      }
      case ReplyType.OFFSET_HOLE: {
        const { offset, length } = decodeOffsetHole(payload);
        this.#place(p, offset, length).fill(0);
        break;
      }
      case ReplyType.BLOCK_STATUS: {
        const { contextId, extents } = decodeBlockStatus(payload);
        if (p.type !== Command.BLOCK_STATUS || contextId !== this.#allocationId) break;
        let at = p.offset;
        p.extents = extents.map((e) => {
          const run = { offset: at, length: e.length, hole: (e.flags & AllocationState.HOLE) !== 0, zero: (e.flags & AllocationState.ZERO) !== 0 };
          at += e.length;
          return run;
        });
        break;
      }
      case ReplyType.NONE:
        break;
      default:
        if (type & 0x8000) {
          const e = decodeErrorChunk(type, payload);
          p.errno = e.errno || 5;
          p.message = e.message;
        } else {
          throw new NbdError(NbdErrorCode.PROTOCOL, `Unknown reply chunk type ${type}`);
        }
    }
  }

  #place(p: Pending, offset: number, length: number): Buffer {
    if (p.type !== Command.READ || offset < p.offset || offset + length > p.offset + p.length) {
      throw new NbdError(NbdErrorCode.PROTOCOL, `Read data [${offset}, +${length}) outside the request [${p.offset}, +${p.length})`);
    }
    // Chunks that leave gaps would leave garbage: the buffer starts zeroed.
    if (p.data === null) p.data = p.into !== null ? p.into.fill(0) : Buffer.alloc(p.length);
    return p.data.subarray(offset - p.offset, offset - p.offset + length);
  }

  #settle(cookie: bigint, p: Pending): void {
    this.#pending.delete(cookie);
    p.resolve();
  }

  #request(type: number, flags: number, offset: number, length: number, into: Buffer | null = null): Promise<Pending> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const cookie = this.#nextCookie++;
    return new Promise<Pending>((resolve, reject) => {
      const p: Pending = { type, offset, length, data: null, into, extents: null, errno: 0, message: '', resolve: () => resolve(p), reject };
      this.#pending.set(cookie, p);
      this.#socket.write(encodeRequestHeader({ flags, type, cookie, offset, length }));
    });
  }

  #checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.sizeBytes) {
      throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `Range [${offset}, +${length}) is not inside the export (${this.sizeBytes} bytes)`);
    }
  }

  /**
   * Reads [offset, offset + length): exactly length bytes, into the first `length` bytes of
   * `into` when given (the result is then a view of it). A server's error is NBD_ERR_REFUSED.
   */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.#checkRange(offset, length);
    if (length > nbdReadBytesMax) throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `A read of ${length} bytes is over ${nbdReadBytesMax}`);
    const target = into !== undefined ? into.subarray(0, length) : null;
    if (target !== null && target.length !== length) throw new NbdError(NbdErrorCode.INVALID_ARGUMENT, `A read of ${length} bytes into a buffer of ${into!.length}`);
    const p = await this.#request(Command.READ, 0, offset, length, target);
    if (p.errno !== 0) throw new NbdError(NbdErrorCode.REFUSED, `The NBD server ${this.#describe} failed a read at ${offset}: errno ${p.errno}${p.message !== '' ? ` (${p.message})` : ''}`);
    // A structured reply of holes and data covers the range; one with none at all is whole zeroes.
    return p.data ?? (target !== null ? target.fill(0) : Buffer.alloc(length));
  }

  /**
   * The allocation of a range as the server reports it: runs from `offset` on, covering at least
   * a first part of the range (servers may answer less than asked, never nothing). Without
   * `base:allocation` the whole range is one data run.
   */
  async extents(offset: number, length: number): Promise<NbdExtent[]> {
    this.#checkRange(offset, length);
    if (!this.allocation) return [{ offset, length, hole: false, zero: false }];
    const len = Math.min(length, 0xffffffff - 0xfff);
    const p = await this.#request(Command.BLOCK_STATUS, 0, offset, len);
    if (p.errno !== 0) throw new NbdError(NbdErrorCode.REFUSED, `The NBD server ${this.#describe} failed a block status at ${offset}: errno ${p.errno}${p.message !== '' ? ` (${p.message})` : ''}`);
    const runs = (p.extents ?? []).filter((e) => e.length > 0);
    if (runs.length === 0) throw new NbdError(NbdErrorCode.PROTOCOL, `The NBD server ${this.#describe} answered a block status at ${offset} with no extent`);
    // Clip what runs past the range (a server may describe more than asked).
    const end = offset + len;
    const clipped: NbdExtent[] = [];
    for (const r of runs) {
      if (r.offset >= end) break;
      clipped.push({ ...r, length: Math.min(r.length, end - r.offset) });
    }
    return clipped;
  }

  /** Sends NBD_CMD_DISC and closes; requests in flight fail. */
  async close(): Promise<void> {
    if (this.#failure === null && !this.#closed) {
      this.#socket.end(encodeRequestHeader({ flags: 0, type: Command.DISC, cookie: 0n, offset: 0, length: 0 }));
    }
    this.#failure ??= new NbdError(NbdErrorCode.CLOSED, 'The NBD client is closed');
    await new Promise<void>((resolve) => (this.#closed ? resolve() : this.#socket.once('close', () => resolve())));
  }

  /** Closes at once. */
  destroy(): void {
    this.#failure ??= new NbdError(NbdErrorCode.CLOSED, 'The NBD client is closed');
    this.#socket.destroy();
  }
}
