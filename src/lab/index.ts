/**
 * `lab`: emulated networks for tests (docs/lab.md). Hosts are network namespaces, links are
 * TUN pairs joined by a forwarding stage (build/tessera-wire) with delay, jitter, rate, loss
 * and a bounded queue, changed live.
 */
export { labUp, labDown, labShow, labSet, labExecCommand, requireRoot } from './lab.ts';
export type { LinkView } from './lab.ts';
export { parseTopology, checkTopology, routesOf } from './topology.ts';
export type { Topology, HostSpec, LinkSpec, Route } from './topology.ts';
export { defaultStateDir } from './state.ts';
export type { LabState, HostState, LinkState } from './state.ts';
export type { WireStats, DirectionStats } from './wire.ts';
export { formatDelay, formatLoss, formatRate } from './units.ts';
export type { LinkParams } from './units.ts';
export { LabError, LabErrorCode } from './errors.ts';
export type { LabErrorCodeValue } from './errors.ts';
