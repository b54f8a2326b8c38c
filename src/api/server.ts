import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Store, Volume } from '../engine/index.ts';
import { Logger } from '../observe/index.ts';
import type { BackupRunner, ImportSources, ScheduleService, ScrubRunner } from './route.ts';
import type { InstantRestores } from '../hydrate/index.ts';
import type { Replication } from '../cluster/index.ts';
import { crash } from '../util/bug.ts';
import { ApiError, ApiErrorCode, toApiError } from './errors.ts';
import { readJsonBody, sendError, sendJson } from './http.ts';
import type { JsonReply } from './http.ts';
import { disksChangedBy, guardDisk } from './instant-restore.ts';
import { changesStore, matchRoute } from './routes.ts';
import type { LatencySettings, NodeFacts, RequestContext, RouteContext } from './route.ts';
import { driveHealthWire, spaceWire, storeStatsWire } from './to-wire.ts';
import type { ClusterNode, NodeInfo } from './client/wire.ts';

/** What the API's routes serve; a node attaches them once its store is open (ApiServer.attach). */
export interface ApiServices {
  /** The engine the API manages. */
  store: Store;
  /** Facts only the daemon knows, for GET /api/v1/node; asked on every such request. */
  nodeFacts?: () => NodeFacts;
  /** The node's instant restores: served under /instant-restores, and disks being restored refuse changes. */
  restores?: InstantRestores;
  /** The node's backups, served under /backups. */
  backups?: BackupRunner;
  /** The node's scrubs: POST /scrub runs through them, GET /node shows their state. */
  scrubs?: ScrubRunner;
  /** The node's backup and snapshot schedules, served under /backup-schedules and /snapshot-schedules. */
  schedules?: ScheduleService;
  /** Opens the sources disk imports read (NBD servers, image files): POST /disks/{name}/import needs them. */
  importSources?: ImportSources;
  /** Opens the volumes of the disk data routes (the node's counts their I/O). Default: the store's. */
  openVolume?: (disk: string, snap: string | null) => Volume;
  /** The cluster's nodes for GET /cluster (a node in cluster mode). Default: this node alone, up and its own controller. */
  clusterNodes?: () => ClusterNode[];
  /** In a cluster: the node's replication, which the disk routes go through (docs/cluster.md, "Contract"). */
  cluster?: Replication | null;
  /** The disks' latency profiles (docs/latency.md); without them the latency-profile routes answer INVALID. */
  latency?: LatencySettings;
}

/** The node's probes and metrics, served outside /api/v1 (docs/observability.md). */
export interface ApiProbes {
  /** Why the node is not ready (GET /readyz answers 503 with it), or null when it is. */
  notReady(): string | null;
  /** The Prometheus text of GET /metrics. */
  metrics?(): Promise<{ contentType: string; text: string }>;
}

/** One API request as it ended, for the node's metrics. */
export interface ApiRequestDone {
  method: string;
  /** The route's path template (e.g. `/api/v1/disks/{name}`), or `other` for no route. */
  route: string;
  status: number;
}

/** Options of createApiServer. */
export interface ApiServerOptions extends Partial<ApiServices> {
  /** Where every failed request (by its request id) and every unexpected error is logged. */
  log?: Logger;
  /** /healthz, /readyz and /metrics; without them /readyz is ready once services are attached. */
  probes?: ApiProbes;
  /** Hears every request of the routes under /api/v1 once answered. */
  onRequestDone?: (r: ApiRequestDone) => void;
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
}

/** Paths of the probes and metrics, answered before (and without) the limits of the API routes. */
const probePaths = new Set(['/healthz', '/readyz', '/metrics']);
/** A request id a client sends is taken when it is this tame (it goes into logs and headers). */
const requestIdPattern = /^[A-Za-z0-9._:@+=-]{1,128}$/;

/** The request's `x-request-id` when it is a tame one, else a new id. */
function requestIdOf(req: IncomingMessage): string {
  const sent = req.headers['x-request-id'];
  return typeof sent === 'string' && requestIdPattern.test(sent) ? sent : randomUUID();
}

/** An HTTP server for the JSON API under /api/v1, and the node's probes and metrics. */
export interface ApiServer {
  /** Serves the API routes from now on; until then they answer 503 NOT_READY. */
  attach(services: ApiServices): void;
  /** Starts listening; resolves to the bound address (port 0 picks a free port). */
  listen(opts: { host: string; port: number }): Promise<{ host: string; port: number }>;
  /** Stops accepting, lets in-flight requests finish (up to the grace time), then closes. */
  close(): Promise<void>;
}

/** Creates the API server; it does not listen until listen() is called. */
export function createApiServer(opts: ApiServerOptions): ApiServer {
  const log = (opts.log ?? Logger.silent()).child({ component: 'api' });
  const bodyBytesMax = opts.bodyBytesMax ?? 1024 * 1024;
  const requestsInFlightMax = opts.requestsInFlightMax ?? 64;
  const closeGraceMs = opts.closeGraceMs ?? 10_000;
  const startedMs = Date.now();
  let apiUrl: string | null = null;
  let inFlight = 0;

  let ctx: RouteContext | null = null;
  const attach = (services: ApiServices): void => {
    const { store } = services;
    const nodeInfo = async (): Promise<NodeInfo> => {
      const facts = services.nodeFacts?.() ?? { version: 'unknown', dataDir: null, nbd: null };
      return {
        version: facts.version,
        dataDir: facts.dataDir,
        nbd: facts.nbd,
        api: apiUrl,
        pid: process.pid,
        uptimeMs: Date.now() - startedMs,
        disks: store.listDisks().length,
        readOnly: store.readOnly,
        stats: storeStatsWire(await store.stats()),
        space: spaceWire(store.space()),
        drive: driveHealthWire(store.health()),
        scrub: services.scrubs?.status() ?? null,
        hlc: facts.hlc ?? null,
        cluster: services.cluster?.nodeState() ?? null,
      };
    };
    ctx = {
      store,
      nodeInfo,
      rangeBytesMax: opts.rangeBytesMax ?? 16 << 20,
      extentsMax: opts.extentsMax ?? 65536,
      restores: services.restores ?? null,
      backups: services.backups ?? null,
      scrubs: services.scrubs ?? null,
      schedules: services.schedules ?? null,
      importSources: services.importSources ?? null,
      openVolume: services.openVolume ?? ((disk, snap) => store.openVolume(disk, snap)),
      clusterStatus: () => ({ nodes: services.clusterNodes?.() ?? [singleNode()] }),
      cluster: services.cluster ?? null,
      latency: services.latency ?? null,
    };
    // A node without etcd is a cluster of one, so that `cluster status` works everywhere.
    const singleNode = (): ClusterNode => {
      const tcp = services.nodeFacts?.().nbd?.tcp ?? null;
      const space = store.space();
      return {
        id: 'local',
        state: 'up',
        zone: 'default',
        api: apiUrl === null ? '' : new URL(apiUrl).host,
        nbd: tcp === null ? '' : `${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}`,
        peer: null,
        controller: true,
        capacityBytes: space.usableBytes,
        usedBytes: space.usedBytes,
      };
    };
  };
  if (opts.store !== undefined) attach({ ...opts, store: opts.store });
  const notReady = (): string | null => (opts.probes !== undefined ? opts.probes.notReady() : ctx === null ? 'the API has no store yet' : null);

  /** GET /healthz, /readyz, /metrics: for probes and scrapers, never held back by the API's limits. */
  const probe = async (method: string, pathname: string, res: ServerResponse): Promise<void> => {
    if (method !== 'GET' && method !== 'HEAD') throw new ApiError(ApiErrorCode.METHOD_NOT_ALLOWED, `Method ${method} is not allowed on ${pathname}; allowed: GET, HEAD`, { headers: { allow: 'GET, HEAD' } });
    if (pathname === '/healthz') return sendJson(res, { status: 200, body: { status: 'alive' } });
    if (pathname === '/readyz') {
      const reason = notReady();
      return sendJson(res, reason === null ? { status: 200, body: { status: 'ready' } } : { status: 503, body: { status: 'not ready', reason } });
    }
    if (opts.probes?.metrics === undefined) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server keeps no metrics');
    const { contentType, text } = await opts.probes.metrics();
    const data = Buffer.from(text);
    res.writeHead(200, { 'content-type': contentType, 'content-length': String(data.length), 'cache-control': 'no-store' });
    res.end(method === 'HEAD' ? undefined : data);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const startMs = Date.now();
    const method = req.method ?? 'GET';
    const requestId = requestIdOf(req);
    res.setHeader('x-request-id', requestId);
    let pathname = req.url ?? '/';
    let query = new URLSearchParams();
    let route = 'other';
    try {
      const url = new URL(pathname, 'http://x');
      pathname = url.pathname;
      query = url.searchParams;
      if (probePaths.has(pathname)) {
        req.resume();
        await probe(method, pathname, res);
        return;
      }
      if (inFlight >= requestsInFlightMax) {
        req.resume();
        throw new ApiError(ApiErrorCode.BUSY, `Too many requests in flight (${requestsInFlightMax}); retry later`);
      }
      inFlight++;
      try {
        const match = matchRoute(method, pathname);
        if (match.kind === 'route') route = match.route.path;
        if (match.kind === 'none') {
          req.resume();
          throw new ApiError(ApiErrorCode.NO_ROUTE, `No such route: ${pathname}`);
        }
        if (match.kind === 'wrong-method') {
          req.resume();
          const allow = match.allow.join(', ');
          throw new ApiError(ApiErrorCode.METHOD_NOT_ALLOWED, `Method ${method} is not allowed on ${pathname}; allowed: ${allow}`, { headers: { allow } });
        }
        const routeCtx = ctx;
        if (routeCtx === null) {
          req.resume();
          throw new ApiError(ApiErrorCode.NOT_READY, `The node is not ready: ${notReady() ?? 'starting'}`);
        }
        // A store opened read-only takes no change: refused here, before a body is read.
        if (routeCtx.store.readOnly && changesStore(method, match.route.path)) {
          req.resume();
          throw new ApiError(ApiErrorCode.READ_ONLY, `The node runs read-only (tessera serve --read-only): ${method} ${pathname} would change it`);
        }
        let body: unknown;
        if (match.route.body === 'octets') {
          // The handler reads the body itself, within its own limit.
        } else if (match.route.body !== null) body = await readJsonBody(req, bodyBytesMax);
        else req.resume(); // Routes without a body ignore one if sent.
        // A disk being restored takes no change that would see its missing chunks (docs/backup.md).
        if (routeCtx.restores !== null) {
          for (const disk of disksChangedBy(method, match.route.path, match.params, body)) guardDisk(routeCtx.restores, disk, `${method} ${pathname}`);
        }
        const reqCtx: RequestContext = { ...routeCtx, query, req, requestId, log: log.child({ requestId }) };
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
      // Every error a client sees is logged with the id its reply carries.
      const fields = { requestId, method, path: pathname, status: error.status, code: error.code, durationMs: Date.now() - startMs };
      if (bug) {
        // Not answered: logged with its stack, and the node crashes (src/util/bug.ts).
        log.error(`bug: ${(err as Error)?.message ?? String(err)}`, { ...fields, status: 0, code: 'BUG', err });
        crash(err);
        res.destroy();
        return;
      }
      if (unexpected) log.error(`request failed: ${error.message}`, { ...fields, err });
      else log.warn(`request failed: ${error.message}`, fields);
      if (res.headersSent) res.destroy();
      else sendError(res, error, requestId);
    } finally {
      if (!probePaths.has(pathname)) {
        const status = res.headersSent ? res.statusCode : 0;
        opts.onRequestDone?.({ method, route, status });
        if (log.enabled('debug')) log.debug('request', { requestId, method, path: pathname, route, status, durationMs: Date.now() - startMs });
      }
    }
  };

  const server: Server = createServer({ requestTimeout: opts.requestTimeoutMs ?? 30_000 }, (req, res) => {
    handle(req, res).catch((err) => {
      // handle() answers every error itself; reaching this is a bug, but not one worth a crash.
      log.error('unhandled error', { err });
      res.destroy();
    });
  });
  server.maxConnections = opts.connectionsMax ?? 256;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code !== 'ECONNRESET' && socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  return {
    attach,
    listen({ host, port }) {
      return new Promise((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        server.once('error', onError);
        server.listen({ host, port }, () => {
          server.off('error', onError);
          server.on('error', (err) => log.error('server error', { err }));
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
