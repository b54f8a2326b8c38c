import net from 'node:net';
import { Logger } from '../../observe/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { BufferPool } from '../../flow/index.ts';
import { PeerConnection, type PeerBuffers, type PeerClock, type PeerHandler, type RequestType } from './connection.ts';
import type { DiskView } from './gate.ts';
import { resolvePeerLimits, versionRange, type PeerLimits } from './limits.ts';
import { Version } from './spec.ts';

/** Options of PeerServer and PeerPool: who this node is. */
export interface PeerNodeOptions {
  /** This node's id. */
  node: string;
  /** The cluster id. */
  cluster: string;
  /** The cluster secret. */
  secret: Buffer;
  /** The newest protocol version to speak (TESSERA_PEER_PROTOCOL_MAX), for rolling upgrades; default Version.MAX. */
  protocolMax?: number;
  /** Overrides of the per-connection limits (tests). */
  limits?: Partial<PeerLimits>;
  /** Stamps PING/PONG (version 2) and learns from peers'. */
  clock?: PeerClock;
  log?: Logger;
}

/** Idle request-body memory a server or a pool keeps for reuse (bodies in flight are bounded by the connection limits). */
const POOLED_BYTES_MAX = 64 * 1024 * 1024;

/** The read buffer and body pool one server's (or one pool's) connections share. */
export function peerBuffers(): PeerBuffers {
  return { readBuffer: Buffer.allocUnsafeSlow(64 * 1024), pool: new BufferPool({ pooledBytesMax: POOLED_BYTES_MAX }) };
}

/** Options of PeerServer. */
export interface PeerServerOptions extends PeerNodeOptions {
  /** The gate's view of a disk, for disk-scoped requests; default: no disk is known. */
  disks?: (name: string) => DiskView | null;
}

/**
 * Accepts peer connections: runs the server handshake, then passes each request the gate lets
 * through to the handler registered for its type (PING is answered by the connection itself).
 */
export class PeerServer {
  readonly #opts: PeerServerOptions;
  readonly #limits: PeerLimits;
  readonly #versions: [number, number];
  readonly #log: Logger;
  readonly #handlers = new Map<number, PeerHandler>();
  readonly #connections = new Set<PeerConnection>();
  #listener: net.Server | null = null;
  #closing: Promise<void> | null = null;
  #accepted = 0;
  readonly #buffers = peerBuffers();

  constructor(opts: PeerServerOptions) {
    this.#opts = opts;
    this.#limits = resolvePeerLimits(opts.limits);
    this.#versions = versionRange(Version.MIN, Version.MAX, opts.protocolMax);
    this.#log = (opts.log ?? Logger.silent()).child({ component: 'peer' });
  }

  /** Registers the handler of a request type (one per type; a second replaces the first). */
  handle<T extends RequestType>(type: T, handler: PeerHandler<T>): void {
    this.#handlers.set(type, handler as unknown as PeerHandler);
  }

  /** Connections accepted and not yet closed (handshaking or open). */
  get connections(): ReadonlySet<PeerConnection> {
    return this.#connections;
  }

  /** Listens on TCP; port 0 picks a free port. Resolves with the bound address. */
  async listen(opts: { host: string; port: number }): Promise<{ host: string; port: number }> {
    if (this.#closing !== null || this.#listener !== null) throw new ClusterError(ClusterErrorCode.CLOSED, 'Peer server is closed or listening already');
    const listener = net.createServer({ noDelay: true }, (socket) => this.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', (err) => reject(new ClusterError(ClusterErrorCode.INVALID, `Cannot listen on ${opts.host}:${opts.port}: ${err.message}`, { cause: err })));
      listener.listen({ host: opts.host, port: opts.port }, resolve);
    });
    listener.on('error', (err) => this.#log.error('peer listener failed', { err }));
    this.#listener = listener;
    const address = listener.address() as net.AddressInfo;
    return { host: address.address, port: address.port };
  }

  /** Stops listening and closes every connection (their pending requests reject). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const listener = this.#listener;
      const stopped = listener === null ? Promise.resolve() : new Promise<void>((resolve) => listener.close(() => resolve()));
      await Promise.all([...this.#connections].map((conn) => conn.close()));
      await stopped;
    })();
    return this.#closing;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing !== null) {
      socket.destroy();
      return;
    }
    const conn = new PeerConnection(socket, {
      role: 'server',
      identity: { node: this.#opts.node, cluster: this.#opts.cluster, secret: this.#opts.secret, versions: this.#versions },
      limits: this.#limits,
      log: this.#log.child({ conn: ++this.#accepted }),
      clock: this.#opts.clock,
      buffers: this.#buffers,
      dispatch: { handler: (type) => this.#handlers.get(type), disk: (name) => this.#opts.disks?.(name) ?? null },
    });
    this.#connections.add(conn);
    void conn.closed.then(() => this.#connections.delete(conn));
  }
}
