/**
 * Creating a disk, on a single node or through the cluster (POST /disks, and the disk an import
 * copies into): in a cluster, placement is the controller's, so a node that is not passes the
 * request on (docs/cluster.md, "Controller").
 */
import { ApiClient, ClientError } from './client/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import type { RouteContext } from './route.ts';
import { diskWire } from './to-wire.ts';
import type { DiskInfo } from './client/wire.ts';
import type { ClusterDiskInfo } from '../cluster/index.ts';

/** A cluster disk on the wire: DiskInfo and its replicas, epoch and policy. */
export function clusterDiskWire(d: ClusterDiskInfo): DiskInfo & Pick<ClusterDiskInfo, 'replicas' | 'epoch' | 'policy'> {
  return { ...diskWire(d), replicas: d.replicas.map((x) => ({ ...x })), epoch: d.epoch, policy: { ...d.policy } };
}

/** What a new disk is asked to be. */
export interface NewDisk {
  name: string;
  sizeBytes: number;
  replicas?: number;
  failureDomain?: string;
}

/** Creates a disk here (a single node) or in the cluster (replicated, placed by the controller); its DiskInfo. */
export async function createDiskOf(ctx: Pick<RouteContext, 'store' | 'cluster'>, b: NewDisk): Promise<DiskInfo> {
  const { store, cluster } = ctx;
  if (cluster === null) {
    if (b.replicas !== undefined || b.failureDomain !== undefined) throw new ApiError(ApiErrorCode.INVALID, 'replicas and failureDomain need a cluster: this node runs without etcd');
    return diskWire(await store.createDisk(b.name, b.sizeBytes));
  }
  if (b.failureDomain !== undefined && b.failureDomain !== 'node' && b.failureDomain !== 'zone') throw new ApiError(ApiErrorCode.INVALID, `failureDomain must be node or zone: got ${b.failureDomain}`);
  const api = cluster.controllerApi();
  if (api !== null) {
    try {
      return await new ApiClient(`http://${api}`).createDisk({ name: b.name, sizeBytes: b.sizeBytes, replicas: b.replicas, failureDomain: b.failureDomain });
    } catch (err) {
      if (err instanceof ClientError && err.nodeCode !== null) throw new ApiError(err.nodeCode, err.message, { cause: err });
      // The controller did not answer (going down, or not yet replaced): this node places the disk itself, by compare-and-swap as the controller would.
    }
  }
  return clusterDiskWire(await cluster.createDisk(b.name, b.sizeBytes, { replicas: b.replicas, failureDomain: b.failureDomain as 'node' | 'zone' | undefined }));
}
