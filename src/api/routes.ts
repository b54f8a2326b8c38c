import { checkBody } from './validate.ts';
import type { BodySpec, BodyOf } from './validate.ts';
import { openApiDocument } from './openapi.ts';
import { flushDisk, readExtents, readSnapshotData, snapshotGroup, trimDisk, writeDiskData } from './data.ts';
import { instantRestoreRoutes } from './instant-restore.ts';
import { backupRoutes } from './backups.ts';
import { scrubRoutes } from './scrub.ts';
import { scheduleRoutes } from './schedules.ts';
import type { LatencySettings, Method, Reply, RequestContext, Route, RouteContext } from './route.ts';
import { compactStatsWire, diskWire, snapshotWire } from './to-wire.ts';
import { API_PREFIX } from './client/wire.ts';
import type { DiskInfo } from './client/wire.ts';
import { ApiClient, ClientError } from './client/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import { atHead, checkSnapshotName } from './at-head.ts';
import { clusterDiskWire, createDiskOf } from './create-disk.ts';
import { importRoutes } from './import.ts';
import { reservedSnapshot } from '../cluster/index.ts';
import { builtinProfile, builtinProfileNames, checkLatencyProfile } from '../flow/index.ts';
import type { LatencyProfile } from '../flow/index.ts';
import type { Replication } from '../cluster/index.ts';

export { API_PREFIX } from './client/wire.ts';

/** A route with a JSON body checked against `body` (or none) before `handle` runs. */
function route<S extends BodySpec>(
  method: Method,
  path: string,
  body: S | null,
  handle: (params: Record<string, string>, body: BodyOf<S>, ctx: RequestContext) => Promise<Reply> | Reply,
): Route {
  return {
    method,
    path: API_PREFIX + path,
    body,
    handle: (params, raw, ctx) => handle(params, (body === null ? undefined : checkBody(raw, body)) as BodyOf<S>, ctx),
  };
}

const diskLocation = (name: string): Record<string, string> => ({ location: `${API_PREFIX}/disks/${encodeURIComponent(name)}` });

/** The node's replication, or INVALID on a node without etcd. */
function inCluster(cluster: Replication | null, what: string): Replication {
  if (cluster === null) throw new ApiError(ApiErrorCode.INVALID, `${what} need a cluster: this node runs without etcd`);
  return cluster;
}

/** A single node's disk on the wire, with its latency profile when the node keeps them. */
function localDiskWire(d: Parameters<typeof diskWire>[0], latency: LatencySettings | null): DiskInfo {
  const w = diskWire(d);
  return latency === null ? w : { ...w, latencyProfile: latency.profile(d.name) };
}

/** The node's latency profiles, or INVALID in a cluster and on a server without them. */
function latencyOf(ctx: RouteContext): LatencySettings {
  if (ctx.cluster !== null) throw new ApiError(ApiErrorCode.INVALID, 'latency profiles are a single node\'s for now: a node in a cluster does not keep them (docs/latency.md)');
  if (ctx.latency === null) throw new ApiError(ApiErrorCode.INVALID, 'this server keeps no latency profiles');
  return ctx.latency;
}

/** The profile a PUT asks for: a built-in one's name, or a profile passed by the one gate of profiles. */
function askedProfile(value: unknown): LatencyProfile {
  if (typeof value === 'string') {
    const p = builtinProfile(value);
    if (p === null) throw new ApiError(ApiErrorCode.INVALID, `unknown latency profile '${value}': expected ${builtinProfileNames.join(', ')} or a profile object`);
    return p;
  }
  const check = checkLatencyProfile(value);
  if (!check.ok) throw new ApiError(ApiErrorCode.INVALID, `invalid latency profile: ${check.error}`);
  return check.profile;
}

const resizeBody = { sizeBytes: 'sizeBytes' } as const;
const resize = async (p: Record<string, string>, b: BodyOf<typeof resizeBody>, ctx: RouteContext): Promise<Reply> => {
  if (ctx.cluster !== null) {
    return atHead(ctx, p.name, async (r) => {
      await r.disks.submit(p.name, { kind: 'resize', sizeBytes: b.sizeBytes });
      return { status: 200, body: clusterDiskWire(r.info(p.name)) };
    }, (head) => head.resizeDisk(p.name, b.sizeBytes), 200);
  }
  return { status: 200, body: diskWire(await ctx.store.resizeDisk(p.name, b.sizeBytes)) };
};

/** Every route the API serves; the OpenAPI document describes exactly these. */
export const routes: readonly Route[] = [
  route('GET', '/disks', null, (_p, _b, { store, cluster, latency }) => ({ status: 200, body: cluster !== null ? cluster.list().map(clusterDiskWire) : store.listDisks().map((d) => localDiskWire(d, latency)) })),
  route('POST', '/disks', { name: 'string', sizeBytes: 'sizeBytes', replicas: 'count?', failureDomain: 'string?' }, async (_p, b, ctx) => {
    return { status: 201, body: await createDiskOf(ctx, b), headers: diskLocation(b.name) };
  }),
  route('GET', '/disks/{name}', null, async (p, _b, { store, cluster, latency }) => {
    if (cluster === null) return { status: 200, body: localDiskWire(store.getDisk(p.name), latency) };
    const info = cluster.info(p.name);
    // A node without a healthy copy knows the record, not the data (space in use, snapshots):
    // the head's answer, or the record's when the head does not answer (between heads).
    const head = cluster.holdsHealthy(p.name) ? null : cluster.headApi(p.name);
    if (head !== null) {
      try {
        return { status: 200, body: await new ApiClient(`http://${head}`).getDisk(p.name) };
      } catch {
        // Answered from the record below.
      }
    }
    return { status: 200, body: clusterDiskWire(info) };
  }),
  route('PATCH', '/disks/{name}', { sizeBytes: 'count?', replicas: 'count?' }, async (p, b, ctx) => {
    if (b.sizeBytes === undefined && b.replicas === undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Request body must hold 'sizeBytes' or 'replicas'");
    if (b.replicas !== undefined) {
      if (ctx.cluster === null) throw new ApiError(ApiErrorCode.INVALID, 'replicas need a cluster: this node runs without etcd');
      if (b.sizeBytes === undefined) return { status: 200, body: clusterDiskWire(await ctx.cluster.setReplicas(p.name, b.replicas)) };
      await ctx.cluster.setReplicas(p.name, b.replicas);
    }
    return resize(p, { sizeBytes: b.sizeBytes! }, ctx);
  }),
  route('DELETE', '/disks/{name}', null, async (p, _b, { store, cluster, latency }) => {
    if (cluster !== null) await cluster.deleteDisk(p.name);
    else {
      await store.deleteDisk(p.name);
      await latency?.forget(p.name);
    }
    return { status: 204 };
  }),
  route('PUT', '/disks/{name}/latency-profile', { profile: 'json' }, async (p, b, ctx) => {
    const latency = latencyOf(ctx);
    await latency.set(p.name, askedProfile(b.profile));
    return { status: 200, body: localDiskWire(ctx.store.getDisk(p.name), latency) };
  }),
  route('DELETE', '/disks/{name}/latency-profile', null, async (p, _b, ctx) => {
    const latency = latencyOf(ctx);
    await latency.set(p.name, null);
    return { status: 200, body: localDiskWire(ctx.store.getDisk(p.name), latency) };
  }),
  route('POST', '/disks/{name}/resize', resizeBody, resize),
  route('POST', '/disks/{name}/clone', { snapshot: 'string', name: 'string' }, async (p, b, ctx) => {
    const { store, cluster } = ctx;
    if (cluster !== null) {
      const reply = await atHead(ctx, p.name, async (r) => ({ status: 201, body: clusterDiskWire(await r.cloneDisk(p.name, b.snapshot, b.name)) }), (head) => head.cloneDisk(p.name, { snapshot: b.snapshot, name: b.name }), 201);
      return { ...reply, headers: diskLocation(b.name) };
    }
    return { status: 201, body: diskWire(await store.cloneDisk(p.name, b.snapshot, b.name)), headers: diskLocation(b.name) };
  }),
  route('GET', '/disks/{name}/snapshots', null, (p, _b, ctx) => {
    if (ctx.cluster !== null) {
      return atHead(ctx, p.name, async () => ({ status: 200, body: ctx.store.listSnapshots(p.name).filter((s) => !reservedSnapshot(s.name)).map(snapshotWire) }), (head) => head.listSnapshots(p.name), 200);
    }
    return { status: 200, body: ctx.store.listSnapshots(p.name).map(snapshotWire) };
  }),
  route('POST', '/disks/{name}/snapshots', { name: 'string' }, async (p, b, ctx) => {
    const location = { location: `${API_PREFIX}/disks/${encodeURIComponent(p.name)}/snapshots/${encodeURIComponent(b.name)}` };
    if (ctx.cluster !== null) {
      checkSnapshotName(ctx, b.name);
      const reply = await atHead(ctx, p.name, async (r) => {
        await r.disks.submit(p.name, { kind: 'snapshot', name: b.name });
        return { status: 201, body: snapshotWire(ctx.store.listSnapshots(p.name).find((s) => s.name === b.name)!) };
      }, (head) => head.createSnapshot(p.name, b.name), 201);
      return { ...reply, headers: location };
    }
    return { status: 201, body: snapshotWire(await ctx.store.createSnapshot(p.name, b.name)), headers: location };
  }),
  route('DELETE', '/disks/{name}/snapshots/{snap}', null, async (p, _b, ctx) => {
    if (ctx.cluster !== null) {
      checkSnapshotName(ctx, p.snap);
      return atHead(ctx, p.name, async (r) => {
        if (!ctx.store.listSnapshots(p.name).some((s) => s.name === p.snap)) throw new ApiError(ApiErrorCode.NOT_FOUND, `Snapshot "${p.name}@${p.snap}" not found`);
        await r.disks.submit(p.name, { kind: 'snapshot-delete', name: p.snap });
        return { status: 204 };
      }, (head) => head.deleteSnapshot(p.name, p.snap), 204);
    }
    await ctx.store.deleteSnapshot(p.name, p.snap);
    return { status: 204 };
  }),
  route('GET', '/disks/{name}/lease', null, async (p, _b, { cluster }) => ({ status: 200, body: { ...(await inCluster(cluster, 'disk leases').lease(p.name)) } })),
  route('POST', '/disks/{name}/lease/break', null, async (p, _b, { cluster }) => ({ status: 200, body: { ...(await inCluster(cluster, 'disk leases').breakLease(p.name)) } })),
  route('POST', '/disks/{name}/snapshots/{snap}/revert', null, async (p, _b, ctx) => {
    if (ctx.cluster !== null) {
      checkSnapshotName(ctx, p.snap);
      return atHead(ctx, p.name, async (r) => {
        if (!ctx.store.listSnapshots(p.name).some((s) => s.name === p.snap)) throw new ApiError(ApiErrorCode.NOT_FOUND, `Snapshot "${p.name}@${p.snap}" not found`);
        await r.disks.submit(p.name, { kind: 'revert', snapshot: p.snap });
        return { status: 200, body: clusterDiskWire(r.info(p.name)) };
      }, (head) => head.revertDisk(p.name, p.snap), 200);
    }
    return { status: 200, body: diskWire(await ctx.store.revertDisk(p.name, p.snap)) };
  }),
  route('GET', '/disks/{name}/snapshots/{snap}/extents', null, readExtents),
  route('GET', '/disks/{name}/snapshots/{snap}/data', null, readSnapshotData),
  { method: 'PUT', path: `${API_PREFIX}/disks/{name}/data`, body: 'octets', handle: writeDiskData },
  route('POST', '/disks/{name}/trim', { offset: 'sizeBytes', length: 'sizeBytes' }, trimDisk),
  route('POST', '/disks/{name}/flush', null, flushDisk),
  route('POST', '/snapshots', { name: 'string', disks: 'strings' }, snapshotGroup),
  route('GET', '/node', null, async (_p, _b, { nodeInfo }) => ({ status: 200, body: await nodeInfo() })),
  route('GET', '/cluster', null, (_p, _b, { clusterStatus }) => ({ status: 200, body: clusterStatus() })),
  route('POST', '/nodes/{id}/drain', null, async (p, _b, { cluster }) => {
    if (cluster === null) throw new ApiError(ApiErrorCode.INVALID, 'draining needs a cluster: this node runs without etcd');
    await cluster.drainNode(p.id);
    return { status: 202, body: { node: p.id, state: 'draining' } };
  }),
  route('DELETE', '/nodes/{id}', null, async (p, _b, { cluster }) => {
    if (cluster === null) throw new ApiError(ApiErrorCode.INVALID, 'removing a node needs a cluster: this node runs without etcd');
    await cluster.removeNode(p.id);
    return { status: 204 };
  }),
  route('POST', '/compact', null, async (_p, _b, { store }) => ({ status: 200, body: compactStatsWire(await store.compact()) })),
  route('GET', '/openapi.json', null, () => ({ status: 200, body: openApiDocument })),
  ...instantRestoreRoutes,
  ...backupRoutes,
  ...scrubRoutes,
  ...scheduleRoutes,
  ...importRoutes,
];

/**
 * Whether a request to route `path` changes the node's store, so that a node that runs read-only
 * refuses it: every route but reads, a flush (nothing to make durable), a backup and its cancel
 * (a backup reads the disks and writes its repository; docs/backup.md) and a scrub (which only
 * reads).
 */
export function changesStore(method: string, path: string): boolean {
  if (method === 'GET' || method === 'HEAD') return false;
  return path !== `${API_PREFIX}/disks/{name}/flush` && path !== `${API_PREFIX}/backups` && path !== `${API_PREFIX}/backup-jobs/{id}/cancel` && path !== `${API_PREFIX}/scrub`;
}

/** Result of matching a request path against the route table. */
export type Match =
  | { kind: 'route'; route: Route; params: Record<string, string> }
  | { kind: 'wrong-method'; allow: Method[] }
  | { kind: 'none' };

/**
 * Finds the route for `method` and `pathname` (still percent-encoded). A path segment that is
 * not valid percent-encoding matches no template.
 */
export function matchRoute(method: string, pathname: string): Match {
  const segments = pathname.split('/');
  const allow: Method[] = [];
  for (const r of routes) {
    const params = matchTemplate(r.path, segments);
    if (params === null) continue;
    if (r.method === method) return { kind: 'route', route: r, params };
    allow.push(r.method);
  }
  return allow.length > 0 ? { kind: 'wrong-method', allow } : { kind: 'none' };
}

function matchTemplate(template: string, segments: string[]): Record<string, string> | null {
  const parts = template.split('/');
  if (parts.length !== segments.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part.startsWith('{')) {
      if (segments[i] === '') return null;
      try {
        params[part.slice(1, -1)] = decodeURIComponent(segments[i]);
      } catch {
        return null;
      }
    } else if (part !== segments[i]) {
      return null;
    }
  }
  return params;
}

/** Method and path template of every route, for documentation and tests. */
export function listRoutes(): Array<{ method: Method; path: string }> {
  return routes.map(({ method, path }) => ({ method, path }));
}
