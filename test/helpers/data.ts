/**
 * Seeded test data. Every random choice of a test derives from one seed, printed as a test
 * diagnostic; setting TESSERA_TEST_SEED to it replays the same data and operations.
 */
import { createCipheriv, createHash, randomInt } from 'node:crypto';
import { open } from 'node:fs/promises';

/** Something that can print a diagnostic line (a node:test TestContext). */
export interface Diagnostics {
  diagnostic(message: string): void;
}

/**
 * The seed of a test: TESSERA_TEST_SEED if set, else a fresh random one. It is printed so a
 * failure can be replayed with `TESSERA_TEST_SEED=<seed> node --test <file>`.
 */
export function testSeed(t: Diagnostics): number {
  const fromEnv = process.env.TESSERA_TEST_SEED;
  const seed = fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) >>> 0 : randomInt(0, 2 ** 32);
  t.diagnostic(`seed ${seed} (replay: TESSERA_TEST_SEED=${seed})`);
  return seed;
}

/** A small deterministic PRNG (mulberry32) for choosing offsets, sizes and operations. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
}

function streamCipher(seed: number, stream: string) {
  const key = createHash('sha256').update(`${seed}:${stream}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
}

/**
 * Pseudo-random bytes determined by (seed, stream): the same arguments always give the same
 * bytes; different streams give unrelated bytes. Fast (AES-CTR), so usable for GiB of data.
 */
export function seededBytes(seed: number, stream: string, length: number): Buffer {
  return streamCipher(seed, stream).update(Buffer.alloc(length));
}

/** Writes `sizeBytes` of seededBytes(seed, stream) to a new file at `path`. */
export async function writeSeededFile(path: string, seed: number, stream: string, sizeBytes: number): Promise<void> {
  const cipher = streamCipher(seed, stream);
  const chunkBytes = 4 * 1024 * 1024;
  const zero = Buffer.alloc(chunkBytes);
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < sizeBytes; done += chunkBytes) {
      const n = Math.min(chunkBytes, sizeBytes - done);
      await fh.write(cipher.update(n === chunkBytes ? zero : zero.subarray(0, n)));
    }
  } finally {
    await fh.close();
  }
}

/** Parses sizes as the CLI takes them: 512, 64K, 256M, 1G (binary units). */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)$/i.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[m[2]!.toUpperCase()]!;
  return Number(m[1]) * 2 ** shift;
}

/** A mebibyte, for readable sizes: 64 * MiB. */
export const MiB = 1024 * 1024;
