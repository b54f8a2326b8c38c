/**
 * Tessera's optional native helpers (docs/native.md), loaded once per thread. `native` is null
 * when the module is not built, does not load, or TESSERA_NATIVE=0 is set; callers then use
 * Node's own APIs, with the same results.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { crc32 as zlibCrc32 } from 'node:zlib';

export interface Native {
  /** zstd-compresses `src` into `dst` at `level`: the frame's length, or -1 if `dst` is too small. */
  compress(src: Uint8Array, dst: Uint8Array, level: number): number;
  /**
   * Decompresses `src`, exactly one zstd frame, into `dst`: the plaintext's length. A damaged
   * or truncated frame, bytes after it or a plaintext larger than `dst` throw (code ERR_ZSTD).
   */
  decompress(src: Uint8Array, dst: Uint8Array): number;
  /** lseek(fd, offset, SEEK_HOLE if `hole` else SEEK_DATA): the offset found, -1 if none (ENXIO). */
  seek(fd: number, offset: number, hole: boolean): number;
  /** zlib's CRC-32 of `data` continuing from `value`, by ISA-L (absent when built without it). */
  crc32?(data: Uint8Array, value: number): number;
}

/** Where the module is built (scripts/build-native.sh). */
export const nativePath = new URL('../../build/tessera-native.node', import.meta.url);

function load(): { native: Native | null; status: string } {
  if (process.env.TESSERA_NATIVE === '0') return { native: null, status: 'off (TESSERA_NATIVE=0)' };
  try {
    return { native: createRequire(import.meta.url)(fileURLToPath(nativePath)) as Native, status: 'loaded' };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { native: null, status: code === 'MODULE_NOT_FOUND' ? 'not built (docs/native.md)' : `failed to load: ${(err as Error).message}` };
  }
}

const loaded = load();
/** The helpers, or null. */
export const native: Native | null = loaded.native;
/** Whether the helpers are in use, and if not why: for `tessera --version` and the tests. */
export const nativeStatus: string = loaded.status;

const nativeCrc32 = loaded.native?.crc32;
/**
 * zlib's CRC-32 (IEEE) of `data`, continuing from `value`: the log's and the index's checksum.
 * ISA-L's through the native helpers when they have it (10 GB/s on the benchmark's VM, where
 * Node's zlib made 1.7–3.4), else Node's zlib; the two give the same numbers.
 */
export const crc32: (data: Uint8Array, value?: number) => number =
  nativeCrc32 !== undefined ? (data, value = 0) => nativeCrc32(data, value) : zlibCrc32;
