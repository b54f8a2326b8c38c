import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Store } from '../engine/index.ts';
import type { BackupRunner } from './backups.ts';
import type { InstantRestores } from '../hydrate/index.ts';
import { crash, stackOf } from '../util/bug.ts';
import { ApiError, ApiErrorCode, toApiError } from './errors.ts';
import { readJsonBody, sendError, sendJson } from './http.ts';
import type { JsonReply } from './http.ts';
import { disksChangedBy, guardDisk } from './instant-restore.ts';
import { matchRoute } from './routes.ts';
import type { NodeFacts, RequestContext, RouteContext } from './routes.ts';
import { storeStatsWire } from './to-wire.ts';
import type { NodeInfo } from './client/wire.ts';

/** Options of createApiServer. */
export interface ApiServerOptions {
  /** The engine the API manages. */
  store: Store;
  /** Where to log one line per failed request and per unexpected error. */
  log?: (msg: string) => void;
  /** Facts only the daemon knows, for GET /api/v1/node; asked on every such request. */
  nodeFacts?: () => NodeFacts;
  /** Largest request body accepted. Default 1 MiB. */
  bodyBytesMax?: number;
  /** Requests handled at once; more are refused with 503 BUSY. Default 64. */
  requestsInFlightMax?: number;
  /** Connections open at once; more are refused. Default 256. */
  connectionsMax?: number;
  /** Time a client has to send a whole request. Default 30 s. */
  requestTimeoutMs?: number;
  /** On close(), how long in-flight requests may take before their connections are cut. Default 10 s. */
  closeGraceMs?: number;
  /** Largest range of disk data one request reads or writes. Default 16 MiB. */
  rangeBytesMax?: number;
  /** Most extents one extents reply lists (it says where to continue). Default 65536. */
  extentsMax?: number;
  /** The node's instant restores: served under /instant-restores, and disks being restored refuse changes. */
  restores?: InstantRestores;
  /** The node's backups, served under /backups. */
  backups?: BackupRunner;
}

/** An HTTP server for the JSON API under /api/v1. */
export interface ApiServer {
  /** Starts listening; resolves to the bound address (port 0 picks a free port). */
  listen(opts: { host: string; port: number }): Promise<{ host: string; port: number }>;
  /** Stops accepting, lets in-flight requests finish (up to the grace time), then closes. */
  close(): Promise<void>;
}

/** Creates the API server; it does not listen until listen() is called. */
export function createApiServer(opts: ApiServerOptions): ApiServer {
  const log = opts.log ?? (() => {});
  const bodyBytesMax = opts.bodyBytesMax ?? 1024 * 1024;
  const requestsInFlightMax = opts.requestsInFlightMax ?? 64;
  const closeGraceMs = opts.closeGraceMs ?? 10_000;
  const startedMs = Date.now();
  let apiUrl: string | null = null;
  let inFlight = 0;

  const nodeInfo = async (): Promise<NodeInfo> => {
    const facts = opts.nodeFacts?.() ?? { version: 'unknown', dataDir: null, nbd: null };
    return {
      version: facts.version,
      dataDir: facts.dataDir,
      nbd: facts.nbd,
      api: apiUrl,
      pid: process.pid,
      uptimeMs: Date.now() - startedMs,
      disks: opts.store.listDisks().length,
      stats: storeStatsWire(await opts.store.stats()),
    };
  };
  const ctx: RouteContext = { store: opts.store, nodeInfo, rangeBytesMax: opts.rangeBytesMax ?? 16 << 20, extentsMax: opts.extentsMax ?? 65536, restores: opts.restores ?? null, backups: opts.backups ?? null };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const startMs = Date.now();
    const method = req.method ?? 'GET';
    let pathname = req.url ?? '/';
    let query = new URLSearchParams();
    try {
      const url = new URL(pathname, 'http://x');
      pathname = url.pathname;
      query = url.searchParams;
      if (inFlight >= requestsInFlightMax) {
        req.resume();
        throw new ApiError(ApiErrorCode.BUSY, `Too many requests in flight (${requestsInFlightMax}); retry later`);
      }
      inFlight++;
      try {
        const match = matchRoute(method, pathname);
        if (match.kind === 'none') {
          req.resume();
          throw new ApiError(ApiErrorCode.NO_ROUTE, `No such route: ${pathname}`);
        }
        if (match.kind === 'wrong-method') {
          req.resume();
          const allow = match.allow.join(', ');
          throw new ApiError(ApiErrorCode.METHOD_NOT_ALLOWED, `Method ${method} is not allowed on ${pathname}; allowed: ${allow}`, { headers: { allow } });
        }
        let body: unknown;
        if (match.route.body === 'octets') {
          // The handler reads the body itself, within its own limit.
        } else if (match.route.body !== null) body = await readJsonBody(req, bodyBytesMax);
        else req.resume(); // Routes without a body ignore one if sent.
        // A disk being restored takes no change that would see its missing chunks (docs/backup.md).
        if (ctx.restores !== null) {
          for (const disk of disksChangedBy(method, match.route.path, match.params, body)) guardDisk(ctx.restores, disk, `${method} ${pathname}`);
        }
        const reqCtx: RequestContext = { ...ctx, query, req };
        const reply = await match.route.handle(match.params, body, reqCtx);
        if ('stream' in reply) {
          res.writeHead(reply.status, reply.headers);
          await reply.stream(res);
        } else {
          sendJson(res, reply as JsonReply);
        }
      } finally {
        inFlight--;
      }
    } catch (err) {
      if (!req.readableEnded) req.resume(); // a body the handler did not get to read
      const { error, unexpected, bug } = toApiError(err);
      if (bug) {
        // Not answered: logged with its stack, and the node crashes (src/util/bug.ts).
        log(`api: ${method} ${pathname}: bug: ${stackOf(err)}`);
        crash(err);
        res.destroy();
        return;
      }
      if (unexpected) log(`api: ${method} ${pathname} failed: ${(err as Error)?.stack ?? String(err)}`);
      else log(`api: ${method} ${pathname} ${error.status} ${error.code}: ${error.message} (${Date.now() - startMs} ms)`);
      if (res.headersSent) res.destroy();
      else sendError(res, error);
    }
  };

  const server: Server = createServer({ requestTimeout: opts.requestTimeoutMs ?? 30_000 }, (req, res) => {
    handle(req, res).catch((err) => {
      // handle() answers every error itself; reaching this is a bug, but not one worth a crash.
      log(`api: unhandled: ${(err as Error)?.stack ?? String(err)}`);
      res.destroy();
    });
  });
  server.maxConnections = opts.connectionsMax ?? 256;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code !== 'ECONNRESET' && socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  return {
    listen({ host, port }) {
      return new Promise((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        server.once('error', onError);
        server.listen({ host, port }, () => {
          server.off('error', onError);
          server.on('error', (err) => log(`api: server error: ${err.message}`));
          const address = server.address() as AddressInfo;
          const bound = { host: address.address, port: address.port };
          apiUrl = `http://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`;
          resolve(bound);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        if (!server.listening) {
          resolve();
          return;
        }
        const timer = setTimeout(() => server.closeAllConnections(), closeGraceMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}
