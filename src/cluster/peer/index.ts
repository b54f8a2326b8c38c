/** The peer protocol (docs/cluster.md, "The peer protocol"): what the rest of the cluster room uses. */
export { PeerServer } from './server.ts';
export type { PeerServerOptions, PeerNodeOptions } from './server.ts';
export { PeerPool } from './pool.ts';
export type { PeerPoolOptions, PeerAddress } from './pool.ts';
export { PeerConnection } from './connection.ts';
export type { PeerClock, PeerHandler, PeerReply, PeerRequest, PeerResponse, ReplyBodies, RequestBodies, RequestType, InflightStats } from './connection.ts';
export { validatePeerRequest } from './gate.ts';
export type { DiskView, GateContext, PeerRejection } from './gate.ts';
export type { PeerLimits } from './limits.ts';
export { DEFAULT_PEER_LIMITS } from './limits.ts';
export { MessageType, Version, Limit as PeerLimit, Size as PeerSize } from './spec.ts';
export type { MessageTypeValue } from './spec.ts';
export type * from './messages.ts';
export { OP_KINDS, IO_KINDS } from './messages.ts';
