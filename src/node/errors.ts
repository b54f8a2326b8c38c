import { CodedError } from '../util/coded-error.ts';

/** Stable codes of NodeError. */
export const NodeErrorCode = {
  /** Another process holds the data directory. */
  LOCKED: 'NODE_LOCKED',
  /** A port or socket path is taken or not allowed. */
  LISTEN: 'NODE_LISTEN',
  /** A setting of the node is malformed. */
  INVALID: 'NODE_INVALID',
  /** The file system under the data directory has less than the reserve free. */
  NO_SPACE: 'NODE_NO_SPACE',
  /** The data directory cannot be used as asked: missing, not permitted, or on a read-only file system. */
  DATA_DIR: 'NODE_DATA_DIR',
} as const;

/** One of the NodeErrorCode values. */
export type NodeErrorCodeValue = (typeof NodeErrorCode)[keyof typeof NodeErrorCode];

/** The daemon's one error class: why a node could not start. */
export class NodeError extends CodedError<NodeErrorCodeValue> {}
