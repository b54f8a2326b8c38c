/**
 * Requests that run at a disk's head in a cluster (docs/cluster.md, "Contract"): done here when
 * this node is the head, else asked of the head's API and its answer passed on.
 */
import { ApiClient, ClientError } from './client/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import type { Reply, RouteContext } from './route.ts';
import { reservedSnapshot } from '../cluster/index.ts';
import type { Replication } from '../cluster/index.ts';

/**
 * In a cluster (docs/cluster.md, "Contract"), a change of a disk's history or size goes through
 * its chain at its head: done here when this node is the head, else asked of the head's API and
 * its answer passed on, so any node answers for the whole cluster.
 */
export async function atHead(ctx: RouteContext, disk: string, here: (r: Replication) => Promise<Reply>, there: (head: ApiClient) => Promise<unknown>, status: number): Promise<Reply> {
  const r = ctx.cluster!;
  const api = r.headApi(disk);
  if (api === null) return here(r);
  try {
    const body = await there(new ApiClient(`http://${api}`));
    return status === 204 ? { status } : { status, body };
  } catch (err) {
    if (err instanceof ClientError && err.nodeCode !== null) throw new ApiError(err.nodeCode, err.message, { cause: err });
    throw new ApiError(ApiErrorCode.UNAVAILABLE, `the head of disk ${disk} (${api}) did not answer: ${(err as Error).message}`, { cause: err });
  }
}

/** Refuses, in a cluster, a snapshot name users may not take: the cluster's own sync snapshots. */
export function checkSnapshotName(ctx: RouteContext, name: string): void {
  if (ctx.cluster !== null && reservedSnapshot(name)) throw new ApiError(ApiErrorCode.INVALID, `Snapshot names starting with "tessera-" are the cluster's own: ${name}`);
}
