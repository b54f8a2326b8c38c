/**
 * Read-only filesystem readers over an async byte source: ext2/ext3/ext4 and FAT12/16/32, GPT
 * and MBR partition tables, and a walk in catalog order (docs/backup.md, "File catalogs").
 * Damaged images give an FsReadError, never a hang: every loop is bounded.
 */
export { FsReadError, FsReadErrorCode } from './errors.ts';
export type { FsReadErrorCodeValue } from './errors.ts';
export { fileSource, cachedSource } from './source.ts';
export type { ByteSource, CacheOptions } from './source.ts';
export type { FileType, FsKind, FsNode, Filesystem, ReadLimits } from './types.ts';
export { readLayout, openFilesystem, partitionSource } from './volumes.ts';
export type { DiskLayout, Partition } from './volumes.ts';
export { walk, compareNames } from './walk.ts';
export type { ListedNode, WalkLimits } from './walk.ts';
