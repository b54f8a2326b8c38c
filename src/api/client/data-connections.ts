/**
 * Keep-alive HTTP/1.1 connections to a node for its disk data routes (node-data.ts), which read
 * each reply's body straight into the caller's buffer: the socket reads into it (net's `onread`
 * with a buffer per read), with no parser, stream or 64 KiB buffer per piece in between. Through
 * node:http, reading a backup's gigabytes cost the CLI's main thread about ten times the CPU, and
 * took it from the workers that compress and encrypt.
 *
 * It speaks only what the node's API sends: a status line, headers, and a body whose length a
 * Content-Length gives, or chunked (small bodies only), or none for 204 and 304. No pipelining:
 * one exchange at a time per connection. A request that a reused connection loses before any
 * byte of its reply (the node closed it as idle meanwhile) is sent again on a new one: every
 * route used this way may be repeated (reads, writes of the same bytes, trims, flushes).
 */
import { connect, type Socket } from 'node:net';
import { ClientError, ClientErrorCode, type ClientErrorCodeValue } from './errors.ts';

/** Bytes of a reply's status line and headers, at most. */
export const headBytesMax = 16 << 10;
/**
 * Bytes of a reply body that is not read into a caller's buffer (JSON, an error), at most: an
 * extents reply of 65536 runs is about 6 MiB of JSON.
 */
export const smallBodyBytesMax = 16 << 20;

/** Options of DataConnections. */
export interface DataConnectionsOptions {
  /** Connections at once. Default 8. */
  connectionsMax?: number;
  /** An exchange silent for this long fails. Default 60 s. */
  idleTimeoutMs?: number;
}

/** One request. */
export interface DataRequest {
  method: string;
  /** Path and query. */
  path: string;
  body?: Buffer | null;
  contentType?: string;
  /**
   * Where a 2xx reply's body goes: a buffer, or buffers filled one after the other (several
   * chunks read in one request); the body must be exactly as long. Unset: the body is returned.
   */
  into?: Buffer | readonly Buffer[];
}

/** A reply: its status, and its body unless it went into the request's buffer. */
export interface DataReply {
  status: number;
  body: Buffer;
}

interface Exchange {
  request: DataRequest;
  resolve: (reply: DataReply) => void;
  reject: (err: Error) => void;
  /** Whether any byte of the reply came. */
  answered: boolean;
}

/** Why an exchange failed, what kind of failure it is, and whether it may be sent again on a new connection. */
class ExchangeError extends Error {
  readonly retry: boolean;
  readonly kind: ClientErrorCodeValue;
  constructor(message: string, retry: boolean, options?: ErrorOptions & { kind?: ClientErrorCodeValue }) {
    super(message, options);
    this.retry = retry;
    // Most failures are replies the API would not send.
    this.kind = options?.kind ?? ClientErrorCode.BAD_REPLY;
  }
}

/** What the connection's next bytes are. */
const State = {
  /** Nothing: no request is out. */
  IDLE: 0,
  /** The reply's status line and headers. */
  HEAD: 1,
  /** A 2xx body, into the request's buffer. */
  BODY_INTO: 2,
  /** A body of a known length, collected. */
  BODY_SMALL: 3,
  /** A chunked body, collected. */
  CHUNKED: 4,
} as const;
type StateValue = (typeof State)[keyof typeof State];

/** One connection: a state machine over the bytes the socket reads. */
class Connection {
  readonly socket: Socket;
  /** Whether it served an exchange before (a lost request is then sent again). */
  used = false;
  /** Whether it reached the node at all. */
  connected = false;
  dead = false;
  private readonly head = Buffer.allocUnsafe(headBytesMax);
  private headLength = 0;
  private state: StateValue = State.IDLE;
  private exchange: Exchange | null = null;
  private status = 0;
  private keepAlive = true;
  /** BODY_INTO: the destination's buffers, the one being filled, and how much of it is. */
  private into: readonly Buffer[] = [];
  private part = 0;
  private filled = 0;
  /** BODY_SMALL and CHUNKED: the bytes so far (raw chunked encoding for CHUNKED). */
  private small: Buffer = Buffer.alloc(0);
  private smallLength = 0;
  private readonly hostHeader: string;
  private readonly onClose: (c: Connection) => void;

  constructor(url: URL, idleTimeoutMs: number, onClose: (c: Connection) => void) {
    this.hostHeader = url.host;
    this.onClose = onClose;
    this.socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      noDelay: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n: number) => this.received(n) },
    });
    this.socket.once('connect', () => (this.connected = true));
    this.socket.setTimeout(idleTimeoutMs, () => this.fail(new ExchangeError(`did not answer within ${idleTimeoutMs / 1000} s`, false, { kind: ClientErrorCode.TIMEOUT })));
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      const lost = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      this.fail(new ExchangeError(lost ? 'closed the connection' : (err.code ?? err.message), lost && this.used, { cause: err, kind: ClientErrorCode.LOST }));
    });
    this.socket.on('end', () => this.fail(new ExchangeError('closed the connection', this.used, { kind: ClientErrorCode.LOST })));
    this.socket.on('close', () => this.fail(new ExchangeError('closed the connection', this.used, { kind: ClientErrorCode.LOST })));
  }

  /** Sends `exchange`'s request; the connection must be idle. */
  start(exchange: Exchange): void {
    const { request } = exchange;
    this.exchange = exchange;
    this.state = State.HEAD;
    this.headLength = 0;
    let head = `${request.method} ${request.path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\n`;
    if (request.body != null) head += `content-type: ${request.contentType ?? 'application/octet-stream'}\r\ncontent-length: ${request.body.length}\r\n`;
    else if (request.method !== 'GET') head += 'content-length: 0\r\n';
    head += '\r\n';
    this.socket.cork();
    this.socket.write(head, 'latin1');
    if (request.body != null && request.body.length > 0) this.socket.write(request.body);
    this.socket.uncork();
  }

  /** The buffer the socket's next read fills. */
  private nextBuffer(): Uint8Array {
    if (this.state === State.BODY_INTO) return this.into[this.part].subarray(this.filled);
    if (this.state === State.BODY_SMALL || this.state === State.CHUNKED) {
      if (this.smallLength === this.small.length) this.grow();
      return this.small.subarray(this.smallLength);
    }
    // IDLE too: unasked bytes land here and fail the connection.
    return this.head.subarray(this.headLength);
  }

  private grow(): void {
    const bigger = Buffer.allocUnsafe(Math.min(smallBodyBytesMax + 8192, Math.max(4096, this.small.length * 2)));
    this.small.copy(bigger, 0, 0, this.smallLength);
    this.small = bigger;
  }

  /** Takes `n` more bytes, read into the last buffer nextBuffer gave; true: read on. */
  private received(n: number): boolean {
    const exchange = this.exchange;
    if (exchange === null) {
      this.fail(new ExchangeError('sent bytes nobody asked for', false));
      return false;
    }
    exchange.answered = true;
    try {
      switch (this.state) {
        case State.HEAD:
          this.headLength += n;
          this.parseHead();
          break;
        case State.BODY_INTO:
          this.filled += n;
          this.nextPart();
          break;
        case State.BODY_SMALL:
        case State.CHUNKED:
          this.smallLength += n;
          if (this.state === State.CHUNKED) this.chunkedProgress();
          else this.smallProgress();
          break;
        default:
          break;
      }
    } catch (err) {
      this.fail(err instanceof ExchangeError ? err : new ExchangeError((err as Error).message, false));
      return false;
    }
    return true;
  }

  private parseHead(): void {
    const end = this.head.subarray(0, this.headLength).indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headLength === this.head.length) throw new ExchangeError(`sent over ${headBytesMax} bytes of headers`, false);
      return;
    }
    const lines = this.head.toString('latin1', 0, end).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (m === null) throw new ExchangeError('sent something other than an HTTP/1.1 reply', false);
    this.status = Number(m[1]);
    let length: number | null = null;
    let chunked = false;
    this.keepAlive = !lines[0].startsWith('HTTP/1.0');
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon < 0) throw new ExchangeError('sent a malformed header', false);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value)) throw new ExchangeError(`sent a bad content-length: ${value}`, false);
        length = Number(value);
      } else if (name === 'transfer-encoding') chunked = value.toLowerCase() === 'chunked';
      else if (name === 'connection') this.keepAlive = value.toLowerCase() !== 'close';
    }
    const rest = this.head.subarray(end + 4, this.headLength);
    this.headLength = 0;
    if (this.status < 200) throw new ExchangeError(`sent an interim reply (${this.status}), which is not expected`, false);
    const wanted = this.exchange!.request.into;
    const into = wanted === undefined ? undefined : Buffer.isBuffer(wanted) ? [wanted] : (wanted as readonly Buffer[]).filter((b) => b.length > 0);
    const intoBytes = into?.reduce((n, b) => n + b.length, 0) ?? 0;
    if (this.status === 204 || this.status === 304 || (length === 0 && !chunked)) {
      if (rest.length > 0) throw new ExchangeError('sent bytes after a reply without a body', false);
      if (into !== undefined && this.status < 300 && intoBytes !== 0) throw new ExchangeError(`sent no body where ${intoBytes} bytes were asked`, false);
      this.done(Buffer.alloc(0));
      return;
    }
    if (chunked) {
      if (into !== undefined && this.status < 300) throw new ExchangeError('sent a chunked body where a length was asked', false);
      this.state = State.CHUNKED;
      this.small = Buffer.allocUnsafe(Math.max(4096, rest.length));
      this.smallLength = rest.copy(this.small);
      this.chunkedProgress();
      return;
    }
    if (length === null) throw new ExchangeError('sent a body without a length', false);
    if (into !== undefined && this.status >= 200 && this.status < 300) {
      if (length !== intoBytes) throw new ExchangeError(`sent ${length} bytes where ${intoBytes} were asked`, false);
      if (rest.length > length) throw new ExchangeError('sent more bytes than its reply holds', false);
      this.state = State.BODY_INTO;
      this.into = into;
      this.part = 0;
      this.filled = 0;
      // What came with the head, spread over the buffers.
      for (let at = 0; at < rest.length; ) {
        const n = rest.copy(into[this.part], this.filled, at);
        at += n;
        this.filled += n;
        this.nextPart();
      }
      return;
    }
    if (length > smallBodyBytesMax) throw new ExchangeError(`sent a reply of ${length} bytes, over the ${smallBodyBytesMax} expected`, false);
    if (rest.length > length) throw new ExchangeError('sent more bytes than its reply holds', false);
    this.state = State.BODY_SMALL;
    this.small = Buffer.allocUnsafe(length);
    this.smallLength = rest.copy(this.small);
    this.smallProgress();
  }

  /** BODY_INTO: moves on past filled buffers; the reply is done once the last one is full. */
  private nextPart(): void {
    while (this.part < this.into.length && this.filled === this.into[this.part].length) {
      this.part++;
      this.filled = 0;
    }
    if (this.part === this.into.length) this.done(Buffer.alloc(0));
  }

  private smallProgress(): void {
    if (this.smallLength === this.small.length) this.done(this.small);
  }

  /** Decodes the chunked body once its last chunk came. */
  private chunkedProgress(): void {
    const raw = this.small.subarray(0, this.smallLength);
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const eol = raw.indexOf('\r\n', at);
      if (eol < 0) break;
      const size = parseInt(raw.toString('latin1', at, eol).split(';')[0], 16);
      if (!Number.isFinite(size) || size < 0) throw new ExchangeError('sent a malformed chunked body', false);
      if (size === 0) {
        // The last chunk, then (no trailers) an empty line.
        if (raw.length < eol + 4) return;
        if (raw.length > eol + 4 || raw[eol + 2] !== 13 || raw[eol + 3] !== 10) throw new ExchangeError('sent a malformed chunked body', false);
        this.done(Buffer.concat(parts));
        return;
      }
      if (raw.length < eol + 2 + size + 2) break;
      parts.push(raw.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    if (this.smallLength >= smallBodyBytesMax) throw new ExchangeError(`sent a reply over the ${smallBodyBytesMax} bytes expected`, false);
  }

  private done(body: Buffer): void {
    const exchange = this.exchange!;
    this.exchange = null;
    this.state = State.IDLE;
    this.into = [];
    this.small = Buffer.alloc(0);
    this.smallLength = 0;
    this.used = true;
    if (!this.keepAlive) this.close();
    exchange.resolve({ status: this.status, body });
  }

  private fail(err: ExchangeError): void {
    const exchange = this.exchange;
    this.exchange = null;
    if (!this.dead) this.close();
    if (exchange === null) return;
    // A reply half read is lost, whatever the connection's past.
    const retry = err.retry && !exchange.answered;
    exchange.reject(retry ? err : new ExchangeError(err.message, false, { cause: err.cause, kind: err.kind }));
  }

  busy(): boolean {
    return this.exchange !== null;
  }

  close(): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    this.onClose(this);
  }
}

/** A pool of Connections to one node. */
export class DataConnections {
  private readonly url: URL;
  private readonly baseUrl: string;
  private readonly connectionsMax: number;
  private readonly idleTimeoutMs: number;
  private readonly all = new Set<Connection>();
  private readonly idle: Connection[] = [];
  private readonly waiting: ((c: Connection) => void)[] = [];
  private closed = false;

  constructor(baseUrl: string, options: DataConnectionsOptions = {}) {
    const url = new URL(baseUrl);
    if (url.protocol !== 'http:') throw new ClientError(ClientErrorCode.BAD_URL, `the node's disk data is read over http:// only, not ${url.protocol}`);
    this.url = url;
    this.baseUrl = baseUrl;
    this.connectionsMax = options.connectionsMax ?? 8;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  }

  /** Sends `request`; resolves to the reply (any status), rejects with a ClientError if the exchange failed. */
  async request(request: DataRequest): Promise<DataReply> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.take();
      try {
        const reply = await new Promise<DataReply>((resolve, reject) => conn.start({ request, resolve, reject, answered: false }));
        this.give(conn);
        return reply;
      } catch (err) {
        this.give(conn);
        if (err instanceof ExchangeError && err.retry && attempt < this.connectionsMax) continue;
        const what = `${request.method} ${request.path.split('?')[0]}`;
        throw new ClientError(
          !conn.connected ? ClientErrorCode.UNREACHABLE : err instanceof ExchangeError ? err.kind : ClientErrorCode.LOST,
          conn.connected ? `the Tessera node at ${this.baseUrl} failed ${what}: it ${(err as Error).message}` : `cannot reach the Tessera node at ${this.baseUrl}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  }

  /** Closes every connection. */
  close(): void {
    this.closed = true;
    for (const c of [...this.all]) c.close();
  }

  private take(): Promise<Connection> {
    if (this.closed) return Promise.reject(new ClientError(ClientErrorCode.CLOSED, 'the node connections are closed'));
    const c = this.idle.pop();
    if (c !== undefined) return Promise.resolve(c);
    if (this.all.size < this.connectionsMax) {
      return Promise.resolve(this.connect());
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private give(conn: Connection): void {
    if (conn.dead || conn.busy()) {
      // Its place goes to a new connection for whoever waits.
      const next = this.waiting.shift();
      if (next !== undefined && !this.closed) {
        next(this.connect());
      }
      return;
    }
    const next = this.waiting.shift();
    if (next !== undefined) next(conn);
    else this.idle.push(conn);
  }

  private connect(): Connection {
    const conn = new Connection(this.url, this.idleTimeoutMs, (gone) => this.forget(gone));
    this.all.add(conn);
    return conn;
  }

  private forget(conn: Connection): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }
}
