import { Logger } from '../../observe/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { PeerConnection, type PeerResponse, type RequestBodies, type RequestType } from './connection.ts';
import { resolvePeerLimits, versionRange, type PeerLimits } from './limits.ts';
import { peerBuffers, type PeerNodeOptions } from './server.ts';
import { Limit, Version } from './spec.ts';

/** Where a node's peer port is: `HOST:PORT` or its parts; null if the node is not known. */
export type PeerAddress = string | { host: string; port: number };

/** Options of PeerPool. */
export interface PeerPoolOptions extends PeerNodeOptions {
  /** The peer address of a node id (from the member records); null: unknown. */
  resolve: (node: string) => PeerAddress | null | Promise<PeerAddress | null>;
  /** Time a TCP connect may take; default Limit.CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
}

function parseAddress(address: PeerAddress): { host: string; port: number } {
  if (typeof address !== 'string') return address;
  const at = address.lastIndexOf(':');
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new ClusterError(ClusterErrorCode.INVALID, `Bad peer address ${address}: expected HOST:PORT`);
  return { host: address.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port };
}

/**
 * The client side: one connection per remote node id, made on first use and made again after it
 * is lost, at the address the resolver gives at that moment. Callers asking while a connection is
 * being made share it.
 */
export class PeerPool {
  readonly #opts: PeerPoolOptions;
  readonly #limits: PeerLimits;
  readonly #versions: [number, number];
  readonly #log: Logger;
  readonly #connections = new Map<string, Promise<PeerConnection>>();
  #closed = false;
  readonly #buffers = peerBuffers();

  constructor(opts: PeerPoolOptions) {
    this.#opts = opts;
    this.#limits = resolvePeerLimits(opts.limits);
    this.#versions = versionRange(Version.MIN, Version.MAX, opts.protocolMax);
    this.#log = (opts.log ?? Logger.silent()).child({ component: 'peer-pool' });
  }

  /**
   * The open connection to `node`, connecting if there is none. Rejects with
   * CLUSTER_PEER_UNAVAILABLE (unknown, unreachable, or not done within the connect and
   * handshake limits) or the handshake's refusal (CLUSTER_AUTH_FAILED, CLUSTER_NO_COMMON_VERSION).
   */
  async connection(node: string): Promise<PeerConnection> {
    for (;;) {
      if (this.#closed) throw new ClusterError(ClusterErrorCode.CLOSED, 'Peer pool is closed');
      let connecting = this.#connections.get(node);
      if (connecting === undefined) {
        const made = this.#connect(node);
        connecting = made;
        this.#connections.set(node, made);
        made.then(
          (conn) => void conn.closed.then(() => this.#forget(node, made)),
          () => this.#forget(node, made),
        );
      }
      const conn = await connecting;
      // A connection closing (its socket not yet gone) is replaced rather than handed out.
      if (conn.isOpen) return conn;
      this.#forget(node, connecting);
    }
  }

  /** Sends a request to `node` (PeerConnection.request), connecting first if needed. */
  async request<T extends RequestType>(node: string, type: T, body: RequestBodies[T], payload?: Buffer | null): Promise<PeerResponse<T>> {
    const conn = await this.connection(node);
    return conn.request(type, body, payload);
  }

  /** The round trip to `node`, in ms, measured by a PING (connecting first if needed, not timed). */
  async ping(node: string): Promise<number> {
    const conn = await this.connection(node);
    return (await conn.ping()).rttMs;
  }

  /** The round trip to each of `nodes`, in ms; a node that cannot be reached is left out. */
  async pingAll(nodes: Iterable<string>): Promise<Record<string, number>> {
    const ids = [...nodes];
    const results = await Promise.allSettled(ids.map((id) => this.ping(id)));
    const rtt: Record<string, number> = {};
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') rtt[ids[i]] = r.value;
      else this.#log.debug(`no round trip to ${ids[i]}: ${(r.reason as Error).message}`);
    });
    return rtt;
  }

  /** Closes every connection; later requests reject with CLUSTER_CLOSED. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#connections.values()];
    this.#connections.clear();
    await Promise.all(all.map((p) => p.then((conn) => conn.close(), () => {})));
  }

  #forget(node: string, which: Promise<PeerConnection>): void {
    if (this.#connections.get(node) === which) this.#connections.delete(node);
  }

  async #connect(node: string): Promise<PeerConnection> {
    const address = await this.#opts.resolve(node);
    if (address === null) throw new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `No peer address known for node ${node}`);
    const { host, port } = parseAddress(address);
    const conn = await PeerConnection.connect({
      host,
      port,
      connectTimeoutMs: this.#opts.connectTimeoutMs ?? Limit.CONNECT_TIMEOUT_MS,
      identity: { node: this.#opts.node, cluster: this.#opts.cluster, secret: this.#opts.secret, versions: this.#versions },
      limits: this.#limits,
      expectNode: node,
      clock: this.#opts.clock,
      buffers: this.#buffers,
      log: this.#log.child({ node }),
    });
    if (this.#closed) {
      await conn.close();
      throw new ClusterError(ClusterErrorCode.CLOSED, 'Peer pool is closed');
    }
    return conn;
  }
}
