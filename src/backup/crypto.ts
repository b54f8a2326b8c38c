/**
 * The repository's cryptography and compression (docs/backup.md, "Keys and encryption"): seal and
 * open with AES-256-GCM, HMAC-SHA-256 blob ids, zstd, scrypt-wrapped master keys, and the
 * encrypted msgpack objects (config, index, snapshots, markers). Pure functions over Buffers.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { constants as zlibConstants, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { native } from '../native/index.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { wrappingKey, type KeyFile } from './kdf.ts';

export { parseKeyFile, type KeyFile } from './kdf.ts';
import { BlobFlag, compressionGainDivisor, masterKeyBytes, nonceBytes, saltBytes, scryptParams, sealOverheadBytes, tagBytes, zstdLevel } from './format.ts';


/** The two halves of the master key. */
export interface Keys {
  /** AES-256-GCM key of every sealed blob and file. */
  encKey: Buffer;
  /** HMAC-SHA-256 key of blob ids. */
  idKey: Buffer;
}

/** Splits a 64-byte master key. */
export function splitMasterKey(master: Buffer): Keys {
  if (master.length !== masterKeyBytes) throw new BackupError(BackupErrorCode.CORRUPT, `Master key is ${master.length} bytes, not ${masterKeyBytes}`);
  return { encKey: Buffer.from(master.subarray(0, 32)), idKey: Buffer.from(master.subarray(32, 64)) };
}

const keyObjects = new WeakMap<Buffer, KeyObject>();

/**
 * The key as a KeyObject, made once per key buffer: a cipher or HMAC given the raw bytes imports
 * them anew each time (~18 µs a blob, where the cipher itself takes ~4 µs to set up).
 */
function keyObject(key: Buffer): KeyObject {
  let k = keyObjects.get(key);
  if (k === undefined) keyObjects.set(key, (k = createSecretKey(key)));
  return k;
}

/** nonce(12) ‖ AES-256-GCM(key, plaintext) ‖ tag(16), with a random nonce. */
export function seal(key: Buffer, plaintext: Buffer, nonce: Buffer = randomBytes(nonceBytes)): Buffer {
  const cipher = createCipheriv('aes-256-gcm', keyObject(key), nonce);
  const out = Buffer.allocUnsafeSlow(plaintext.length + sealOverheadBytes);
  nonce.copy(out, 0);
  let at = nonceBytes;
  at += cipher.update(plaintext).copy(out, at);
  at += cipher.final().copy(out, at);
  cipher.getAuthTag().copy(out, at);
  return out;
}

/** Opens a sealed buffer, or returns null if it fails authentication (wrong key or damaged). */
export function tryOpen(key: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < sealOverheadBytes) return null;
  const decipher = createDecipheriv('aes-256-gcm', keyObject(key), sealed.subarray(0, nonceBytes));
  decipher.setAuthTag(sealed.subarray(sealed.length - tagBytes));
  const body = decipher.update(sealed.subarray(nonceBytes, sealed.length - tagBytes));
  try {
    const tail = decipher.final();
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch {
    return null;
  }
}

/** Opens a sealed buffer; a failed authentication is BACKUP_CORRUPT naming `what`. */
export function openSealed(key: Buffer, sealed: Buffer, what: string): Buffer {
  const plain = tryOpen(key, sealed);
  if (plain === null) throw new BackupError(BackupErrorCode.CORRUPT, `${what} fails its authentication check (damaged)`);
  return plain;
}

/** HMAC-SHA-256(idKey, plaintext): the id of a blob. */
export function blobId(idKey: Buffer, plaintext: Buffer): Buffer {
  return createHmac('sha256', keyObject(idKey)).update(plaintext).digest();
}

/** SHA-256 of some bytes. */
export function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Bytes zstd can need for `n` bytes of input at worst (ZSTD_COMPRESSBOUND, rounded up). */
function zstdBound(n: number): number {
  return n + (n >> 8) + 128;
}

/** Up to this input size, zstd() gives the compressor an output buffer of the worst case (see there). */
const zstdOneShotBytesMax = 16 << 20;

/**
 * zstd at the format's level. Given room for the worst case, zstd compresses the input where it
 * lies in one pass; with Node's default 16 KiB of output room it copies the input into its own
 * window first and compresses that with its slower external-dictionary loop (10–15% more CPU on
 * 1 MiB chunks).
 */
export function zstd(data: Buffer): Buffer {
  const chunkSize = data.length <= zstdOneShotBytesMax ? zstdBound(data.length) : undefined;
  if (native !== null && chunkSize !== undefined) {
    // The native helper (docs/native.md) writes the same frame into one buffer of the worst case.
    const out = Buffer.allocUnsafeSlow(chunkSize);
    const n = native.compress(data, out, zstdLevel);
    if (n >= 0) return out.subarray(0, n);
  }
  return zstdCompressSync(data, { params: { [zlibConstants.ZSTD_c_compressionLevel]: zstdLevel }, chunkSize });
}

/** Up to this bound, unzstd() decompresses into one buffer of the bound (see there). */
const unzstdOneBufferBytesMax = 16 << 20;

/**
 * Undoes zstd(); `maxBytes` bounds the output, `what` names the data in errors. A blob (whose
 * plaintext length is known, at most a chunk) is decompressed into one buffer of that length, not
 * the default 16 KiB pieces joined at the end: 12–17% less CPU on a restore's 1 MiB chunks.
 */
export function unzstd(data: Buffer, maxBytes: number, what: string): Buffer {
  try {
    if (native !== null && maxBytes <= unzstdOneBufferBytesMax) {
      const out = Buffer.allocUnsafeSlow(maxBytes);
      return out.subarray(0, native.decompress(data, out));
    }
    const chunkSize = maxBytes <= unzstdOneBufferBytesMax ? Math.max(maxBytes, 64) : undefined;
    return zstdDecompressSync(data, { maxOutputLength: Math.max(maxBytes, 1), chunkSize });
  } catch (err) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} does not decompress`, { cause: err });
  }
}

/** A blob as stored: sealed payload, its flags, and its plaintext length. */
export interface SealedBlob {
  sealed: Buffer;
  flags: number;
  plainLength: number;
}

/** Compresses (if that saves at least 1/16) and seals one blob's plaintext. */
export function sealBlob(encKey: Buffer, plain: Buffer): SealedBlob {
  const packed = zstd(plain);
  const compressed = packed.length <= plain.length - plain.length / compressionGainDivisor;
  return { sealed: seal(encKey, compressed ? packed : plain), flags: compressed ? BlobFlag.COMPRESSED : 0, plainLength: plain.length };
}

/** Opens one blob and checks its length and id; any mismatch is BACKUP_CORRUPT naming `what`. */
export function openBlob(keys: Keys, sealed: Buffer, expect: { flags: number; plainLength: number; id: Buffer }, what: string): Buffer {
  const payload = openSealed(keys.encKey, sealed, what);
  const plain = expect.flags & BlobFlag.COMPRESSED ? unzstd(payload, expect.plainLength, what) : payload;
  checkPlain(keys, plain, expect, what);
  return plain;
}

/**
 * openBlob() into `dst` (a restore's slot of shared memory), returning the plaintext's length.
 * With the native helper a compressed blob is decompressed where it goes, without a buffer of
 * its own and a copy; a plaintext larger than `dst` is BACKUP_CORRUPT.
 */
export function openBlobInto(keys: Keys, sealed: Buffer, expect: { flags: number; plainLength: number; id: Buffer }, what: string, dst: Buffer): number {
  if (native === null || !(expect.flags & BlobFlag.COMPRESSED) || expect.plainLength > dst.length) {
    const plain = openBlob(keys, sealed, expect, what);
    if (plain.length > dst.length) throw new BackupError(BackupErrorCode.CORRUPT, `${what} is ${plain.length} bytes, more than the ${dst.length} it may be`);
    plain.copy(dst);
    return plain.length;
  }
  const payload = openSealed(keys.encKey, sealed, what);
  let n: number;
  try {
    n = native.decompress(payload, dst.subarray(0, expect.plainLength));
  } catch (err) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} does not decompress`, { cause: err });
  }
  checkPlain(keys, dst.subarray(0, n), expect, what);
  return n;
}

function checkPlain(keys: Keys, plain: Buffer, expect: { plainLength: number; id: Buffer }, what: string): void {
  if (plain.length !== expect.plainLength) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} is ${plain.length} bytes, the index says ${expect.plainLength}`);
  }
  if (!blobId(keys.idKey, plain).equals(expect.id)) throw new BackupError(BackupErrorCode.CORRUPT, `${what} does not match its id`);
}

/** Largest plaintext of an encrypted object (an index or snapshot file). */
const objectPlainBytesMax = 1 << 30;

/** seal(encKey, zstd(msgpack(object))): the bytes of config, index, snapshot, marker files. */
export function encodeObject(encKey: Buffer, object: unknown): Buffer {
  return seal(encKey, zstd(pack(object)));
}

/** Undoes encodeObject; damage is BACKUP_CORRUPT naming `what`. The shape is the caller's to check. */
export function decodeObject(encKey: Buffer, bytes: Buffer, what: string): unknown {
  const packed = unzstd(openSealed(encKey, bytes, what), objectPlainBytesMax, what);
  try {
    return unpack(packed);
  } catch (err) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} is not valid msgpack`, { cause: err });
  }
}

/** Wraps the master key under `password`; `salt` and `nonce` are random unless given (golden tests). */
export async function makeKeyFile(
  master: Buffer,
  password: string,
  meta: { created: string; hostname: string; username: string },
  fixed: { salt?: Buffer; nonce?: Buffer } = {},
): Promise<Buffer> {
  const salt = fixed.salt ?? randomBytes(saltBytes);
  const { N, r, p } = scryptParams;
  const wrapping = await wrappingKey(password, salt, { N, r, p });
  const file: KeyFile = { version: 1, kdf: 'scrypt', N, r, p, salt: salt.toString('base64'), data: seal(wrapping, master, fixed.nonce).toString('base64'), ...meta };
  return Buffer.from(JSON.stringify(file) + '\n');
}

/** The master key a key file wraps, or null if `password` is not its password. */
export async function unwrapKeyFile(f: KeyFile, password: string): Promise<Buffer | null> {
  const wrapping = await wrappingKey(password, Buffer.from(f.salt, 'base64'), f);
  return tryOpen(wrapping, Buffer.from(f.data, 'base64'));
}
