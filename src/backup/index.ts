/** Backups: the repository format of docs/backup.md, its backends, and the commands' logic. */
export { Backend, pathBytesMax, objectBytesMax } from './backend.ts';
export type { ObjectInfo, ByteRange } from './backend.ts';
export { DirBackend } from './backend-dir.ts';
export { BackupError, BackupErrorCode } from './errors.ts';
export type { BackupErrorCodeValue } from './errors.ts';
