/** Instant restore: a disk served over NBD straight from a backup while it is copied in (docs/backup.md, "Instant restore"). */
export { InstantRestores } from './manager.ts';
export type { InstantRestoreInfo, InstantRestoreStateName, InstantRestoresOptions, StartOptions } from './manager.ts';
export type { HydratorLimits } from './hydrator.ts';
export type { ArchivedOrigin } from './state.ts';
export { HydrateError, HydrateErrorCode } from './errors.ts';
export type { HydrateErrorCodeValue } from './errors.ts';
export { awsVariables } from './source.ts';
