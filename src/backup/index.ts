/** Backups: the repository format of docs/backup.md, its backends, and the commands' logic. */
export { Backend, pathBytesMax, objectBytesMax } from './backend.ts';
export type { ObjectInfo, ByteRange } from './backend.ts';
export { DirBackend } from './backend-dir.ts';
export { openBackend } from './open-backend.ts';
export { BackupError, BackupErrorCode } from './errors.ts';
export type { BackupErrorCodeValue } from './errors.ts';
export { Repository } from './repository.ts';
export type { RepoConfig, Snapshot, SnapshotEntry, SnapshotStats, KeyInfo, InitOptions, IndexFile, WriterMarker, PruneMark } from './repository.ts';
export { IndexCache, cacheRoot } from './cache.ts';
export type { BlobLocation } from './cache.ts';
export { WorkerPool, defaultWorkerCount, workersMax } from './pool.ts';
export { BackupWriter, backupFile, checkName } from './writer.ts';
export type { BackupFileOptions, BackupProgress, BackupResult, WriterLimits } from './writer.ts';
export { restoreToFile } from './restore.ts';
export type { RestoreLimits, RestoreProgress } from './restore.ts';
export * as format from './format.ts';
export { seal, tryOpen, makeKeyFile, parseKeyFile, unwrapKeyFile, encodeObject, decodeObject, sealBlob, blobId } from './crypto.ts';
export { parsePackTail, readPackHeader } from './pack.ts';
