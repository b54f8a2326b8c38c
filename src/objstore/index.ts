/**
 * Object storage (docs/objstore.md): a flat store of objects behind a small abstract base, with
 * a directory and an S3 backend that pass one conformance suite. Backup repositories live in one.
 */
export { Backend } from './backend.ts';
export type { ObjectInfo, ByteRange, ObjectWriter, ObjectSink, TemporaryInfo } from './backend.ts';
export { openBackend } from './open.ts';
export { ObjstoreError, ObjstoreErrorCode } from './errors.ts';
export type { ObjstoreErrorCodeValue } from './errors.ts';
