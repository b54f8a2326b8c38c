/** The HTTP JSON API under /api/v1: disks, snapshots, consistency groups, disk data, node info, compaction. See docs/api.md. */
export { createApiServer } from './server.ts';
export type { ApiServer, ApiServerOptions, ApiServices, ApiProbes, ApiRequestDone } from './server.ts';
export { ApiError, ApiErrorCode } from './errors.ts';
export type { ApiErrorCodeValue } from './errors.ts';
export { API_PREFIX } from './routes.ts';
export type { LatencySettings, NodeFacts, ScheduleService, ScrubRunner, ImportReader, ImportSources } from './route.ts';
export type * from './client/wire.ts';
export { extentRunsOf } from './data.ts';
