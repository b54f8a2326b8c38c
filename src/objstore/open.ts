/** Opening an object store from what the user typed: a directory path or an s3:// URL. */
import { resolve } from 'node:path';
import type { Backend } from './backend.ts';
import { DirBackend } from './dir.ts';
import { openS3Backend } from './s3.ts';
import { ObjstoreError, ObjstoreErrorCode } from './errors.ts';

/**
 * The backend of a location: `s3://bucket/prefix` or a directory path (absolute or
 * relative; `file://` URLs are not accepted, to keep one spelling). For `s3://`, `env` (the
 * process's by default; a CLI run passes its own) holds the AWS_* variables.
 */
export async function openBackend(location: string, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
  if (typeof location !== 'string' || location === '') throw new ObjstoreError(ObjstoreErrorCode.INVALID, 'The repository location is empty');
  // Endpoint, region and credentials come from the AWS variables of `env` (s3.ts).
  if (location.startsWith('s3://')) return openS3Backend(location, env);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Unsupported repository URL ${location}: expected a directory path or s3://bucket/prefix`);
  }
  return new DirBackend(resolve(location));
}
