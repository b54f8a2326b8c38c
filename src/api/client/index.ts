/**
 * The client side of the node's HTTP API (docs/api.md), for the CLI and any other program that
 * drives a node: ApiClient (one method per route, the API's wire types in and out) and NodeData
 * (disk data into the caller's buffers). It loads none of the server, the engine or the backup
 * code.
 */
export { ApiClient, DEFAULT_API_URL } from './api-client.ts';
export type { RequestOptions } from './api-client.ts';
export { NodeData, rangeBytesMax } from './node-data.ts';
export type { NodeDataOptions } from './node-data.ts';
export type { DataConnectionsOptions, DataReply, DataRequest } from './data-connections.ts';
export { ClientError, ClientErrorCode } from './errors.ts';
export type { ClientErrorCodeValue } from './errors.ts';
export { API_PREFIX, ApiErrorCode, IMPORT_STREAMS_MAX } from './wire.ts';
export type * from './wire.ts';
