/** The daemon: one node serving a store over NBD and the HTTP API. */
export { startNode } from './node.ts';
export type { NodeOptions, RunningNode } from './node.ts';
export { NodeError, NodeErrorCode } from './errors.ts';
export type { NodeErrorCodeValue } from './errors.ts';
