/**
 * The password-derived key that wraps a repository's master key (scrypt), and a memo of the keys
 * this process derived, so that one derived ahead (see src/cli/key-ahead.ts) is not derived
 * again when the repository opens. Light on purpose (node:crypto and the error type only): it is
 * loaded before the backup modules.
 */
import { scrypt } from 'node:crypto';
import { BackupError, BackupErrorCode } from './errors.ts';

/** scrypt's cost parameters, as a key file records them. */
export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** A key file as stored in `keys/<id>` (plaintext JSON). */
export interface KeyFile {
  version: 1;
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  /** Base64 of 16 random bytes. */
  salt: string;
  /** Base64 of seal(wrappingKey, masterKey). */
  data: string;
  /** ISO 8601. */
  created: string;
  hostname: string;
  username: string;
}

/** Parses a key file; anything malformed is BACKUP_CORRUPT naming `what`. */
export function parseKeyFile(bytes: Buffer, what: string): KeyFile {
  let f: KeyFile;
  try {
    f = JSON.parse(bytes.toString('utf8')) as KeyFile;
  } catch (err) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} is not JSON`, { cause: err });
  }
  const ok =
    f !== null && typeof f === 'object' && f.kdf === 'scrypt' && typeof f.salt === 'string' && typeof f.data === 'string' &&
    [f.N, f.r, f.p].every((n) => Number.isSafeInteger(n) && n > 0) && f.N <= 1 << 22 && f.r <= 64 && f.p <= 16;
  if (!ok) throw new BackupError(BackupErrorCode.CORRUPT, `${what} is not a key file this version reads`);
  if (f.version !== 1) throw new BackupError(BackupErrorCode.UNSUPPORTED, `${what} has version ${f.version}; this Tessera reads version 1`);
  return f;
}

/** Length of a wrapping key (AES-256). */
const wrappingKeyBytes = 32;
/** Derived keys kept per process (one per repository key file a command opens, in practice). */
const memoMax = 8;
const memo = new Map<string, Promise<Buffer>>();

/** The memo's key of a derivation. */
function memoId(password: string, salt: Buffer, params: ScryptParams): string {
  return `${params.N}:${params.r}:${params.p}:${salt.toString('base64')}:${password}`;
}

/** scrypt's memory: 128·N·r bytes, with room to spare (Node's default limit is 32 MiB). */
function maxmem(N: number, r: number): number {
  return 256 * N * r;
}

/**
 * The wrapping key for `password` with `salt` and `params`, derived on the thread pool (~0.1 s
 * at the default cost) or taken from the memo. A failed derivation is not kept.
 */
export function wrappingKey(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const id = memoId(password, salt, params);
  let key = memo.get(id);
  if (key === undefined) {
    key = new Promise<Buffer>((resolve, reject) => {
      // Only the cost fields: `params` may be a whole key file, whose other fields are no options.
      const { N, r, p } = params;
      scrypt(password, salt, wrappingKeyBytes, { N, r, p, maxmem: maxmem(N, r) }, (err, k) => (err ? reject(err) : resolve(k)));
    });
    const kept = key;
    kept.catch(() => memo.get(id) === kept && memo.delete(id));
    if (memo.size >= memoMax) memo.delete(memo.keys().next().value!);
    memo.set(id, kept);
  }
  return key;
}

/** Whether the memo holds (or is deriving) this key: for tests of keys derived ahead. */
export function wrappingKeyKept(password: string, salt: Buffer, params: ScryptParams): boolean {
  return memo.has(memoId(password, salt, params));
}
