import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { BufferPool } from '../flow/index.ts';
import { Connection } from './connection.ts';
import { NbdError, NbdErrorCode } from './errors.ts';
import { resolveLimits, type NbdLimits } from './limits.ts';
import type { ExportProvider, NbdServerOptions } from './types.ts';
import { Logger } from '../observe/index.ts';

/**
 * Socket buffer size per connection: large enough that a reply of the largest request (32 MiB by
 * default) is not split into many drain round trips, small enough to bound memory.
 */
const SOCKET_HIGH_WATER_MARK_BYTES = 4 * 1024 * 1024;

/** Idle read buffers kept for reuse across all connections. */
const POOLED_BYTES_MAX = 64 * 1024 * 1024;

/** The buffer every connection's socket reads land in (see useReadBuffer): bytes per read at most. */
const READ_BUFFER_BYTES = 256 * 1024;

/** An NBD server: listens on TCP and Unix sockets and serves the provider's exports. */
export class NbdServer {
  readonly #provider: ExportProvider;
  readonly #limits: NbdLimits;
  /** Read reply buffers shared by all connections. */
  readonly #pool = new BufferPool({ pooledBytesMax: POOLED_BYTES_MAX });
  /** One buffer for every connection's socket reads: each read is parsed or copied at once. */
  readonly #readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  readonly #log: Logger;
  readonly #listeners: net.Server[] = [];
  /** Connections until fully closed (socket closed and volume released), for close(). */
  readonly #connections = new Set<Connection>();
  #openSockets = 0;
  /** Connections accepted since the server started; also the id of the latest, in its log records. */
  #accepted = 0;
  #closing: Promise<void> | null = null;

  constructor(opts: NbdServerOptions) {
    this.#provider = opts.provider;
    this.#limits = resolveLimits(opts.limits);
    this.#log = opts.log ?? Logger.silent();
  }

  /** Open client connections, handshaking or transmitting. */
  get connections(): number {
    return this.#openSockets;
  }

  /** Client connections accepted since the server started (refused ones not counted). */
  get connectionsAccepted(): number {
    return this.#accepted;
  }

  /** Listens on TCP; port 0 picks a free port. Resolves with the bound address. */
  async listenTcp(opts: { host: string; port: number }): Promise<{ host: string; port: number }> {
    const listener = await this.#listen((server, cb) => server.listen({ host: opts.host, port: opts.port }, cb), `${opts.host}:${opts.port}`);
    const address = listener.address() as net.AddressInfo;
    return { host: address.address, port: address.port };
  }

  /**
   * Listens on a Unix socket at `path`. A socket file left there by a dead server is removed
   * first; a live one, or anything that is not a socket, is an NBD_ERR_ADDRESS_IN_USE error.
   */
  async listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    await this.#listen((server, cb) => server.listen({ path }, cb), path);
  }

  /** Stops listening, ends every connection (in-flight requests answered first), closes volumes. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const stopped = this.#listeners.map((listener) => new Promise<void>((resolve) => listener.close(() => resolve())));
      await Promise.all([...this.#connections].map((conn) => conn.shutdown()));
      await Promise.all(stopped);
    })();
    return this.#closing;
  }

  async #listen(start: (server: net.Server, cb: () => void) => void, where: string): Promise<net.Server> {
    if (this.#closing) throw new NbdError(NbdErrorCode.CLOSED, 'NBD server is closed');
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK_BYTES }, (socket) =>
      this.#accept(socket),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const code = err.code === 'EADDRINUSE' ? NbdErrorCode.ADDRESS_IN_USE : NbdErrorCode.INVALID_ARGUMENT;
        reject(new NbdError(code, `Cannot listen on ${where}: ${err.message}`, { cause: err }));
      });
      start(server, resolve);
    });
    // After listening, errors are per connection or fatal to the process; log the rest.
    server.on('error', (err) => this.#log.error('listener failed', { listener: where, err }));
    this.#listeners.push(server);
    return server;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (this.#openSockets >= this.#limits.connectionsMax) {
      this.#log.warn(`refusing a connection: ${this.#limits.connectionsMax} connections open`, { peer: socket.remoteAddress ?? 'unix socket' });
      socket.on('error', () => {});
      socket.destroy();
      return;
    }
    this.#openSockets++;
    const id = ++this.#accepted;
    socket.once('close', () => this.#openSockets--);
    const conn = new Connection(socket, { provider: this.#provider, limits: this.#limits, pool: this.#pool, readBuffer: this.#readBuffer, log: this.#log.child({ conn: id }) });
    this.#connections.add(conn);
    void conn.closed.then(() => this.#connections.delete(conn));
  }
}

/** Removes `path` if it is a socket nobody listens on; throws if it is anything else. */
async function removeStaleSocket(path: string): Promise<void> {
  let stat;
  try {
    stat = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw new NbdError(NbdErrorCode.ADDRESS_IN_USE, `${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new NbdError(NbdErrorCode.ADDRESS_IN_USE, `${path} is in use by a running server`);
  await unlink(path);
}
