/**
 * Shared pieces of the backup tests: temporary repositories, seeded images with holes, zero and
 * repeated chunks, and the CLI run in-process or as a child.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../../src/cli/run.ts';
import { IndexCache, Repository, WorkerPool, type InitOptions } from '../../src/backup/index.ts';
import { Backend, type ByteRange, type ObjectInfo } from '../../src/objstore/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { makeTempDir, Rng, run, seededBytes, tesseraBin, type RunResult } from '../helpers/index.ts';

export { makeTempDir };

/** The password of test repositories. */
export const password = 'correct horse battery staple';

/** A repository in a temporary directory with its cache and worker pool; close() releases them. */
export interface TestRepo {
  dir: string;
  cacheDir: string;
  repo: Repository;
  cache: IndexCache;
  pool: WorkerPool;
  close(): Promise<void>;
}

/** Opens the repository in `dir` (created with init options if `init` is given). */
export async function openTestRepo(dir: string, options: { init?: InitOptions; cacheDir?: string; now?: () => number } = {}): Promise<TestRepo> {
  const backend = new DirBackend(dir);
  const repo = options.init ? await Repository.init(backend, password, { ...options.init, now: options.now }) : await Repository.open(backend, password, { now: options.now });
  const cacheDir = options.cacheDir ?? makeTempDir('tessera-backup-cache-');
  const cache = IndexCache.open(repo.id, cacheDir);
  const pool = new WorkerPool(repo.keys, { workers: 2 });
  return {
    dir,
    cacheDir,
    repo,
    cache,
    pool,
    async close() {
      await pool.close();
      await cache.close();
    },
  };
}

/** Small chunks and packs, so that small images make many packs and index files. */
export const smallRepo: InitOptions = { chunkSizeBytes: 64 * 1024, packSizeTargetBytes: 256 * 1024 };

/** Kinds of chunk a seeded image is made of. */
export interface ImageSpec {
  chunks: number;
  chunkSizeBytes: number;
  /** Bytes cut off the last chunk (so the size is not a multiple of the chunk size). */
  tailCutBytes?: number;
}

/**
 * Writes a seeded image: holes, written zeroes, random chunks, compressible chunks, repeats of
 * earlier chunks and chunks with only a few bytes set. Returns its size.
 */
export function writeSeededImage(path: string, seed: number, spec: ImageSpec): number {
  const rng = new Rng(seed);
  const size = spec.chunks * spec.chunkSizeBytes - (spec.tailCutBytes ?? 0);
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    const written: Buffer[] = [];
    for (let i = 0; i < spec.chunks; i++) {
      const at = i * spec.chunkSizeBytes;
      const len = Math.min(spec.chunkSizeBytes, size - at);
      const r = rng.int(100);
      let data: Buffer | null;
      if (r < 25) data = null; // hole
      else if (r < 35) data = Buffer.alloc(len);
      else if (r < 50 && written.length > 0) data = written[rng.int(written.length)].subarray(0, len);
      else if (r < 65) data = Buffer.from(`chunk ${i} of seed ${seed} `.repeat(Math.ceil(len / 20)).slice(0, len));
      else if (r < 75) {
        data = Buffer.alloc(len);
        data.writeUInt32LE(rng.int(2 ** 32), rng.int(len - 4));
      } else data = seededBytes(seed, `chunk-${i}`, len);
      if (data !== null) {
        writeSync(fd, data, 0, data.length, at);
        if (data.length === spec.chunkSizeBytes) written.push(data);
      }
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Asserts two files have the same bytes. */
export function assertSameFile(actual: string, expected: string): void {
  const a = readFileSync(actual);
  const e = readFileSync(expected);
  assert.equal(a.length, e.length, `size of ${actual}`);
  assert.ok(a.equals(e), `${actual} differs from ${expected}`);
}

/** Outcome of one CLI run. */
export interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Environment of CLI runs against a test repository: password, cache dir, no terminal. */
export function cliEnv(cacheDir: string, extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { TESSERA_PASSWORD: password, TESSERA_CACHE_DIR: cacheDir, ...extra };
}

/** Runs the CLI in this process. */
export async function cli(args: string[], env: Record<string, string | undefined>): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env });
  return { code, stdout, stderr };
}

/** Runs the CLI in this process, keeping stdout as bytes (`backup cat` of binary files). */
export async function cliBytes(args: string[], env: Record<string, string | undefined>): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  const out: Buffer[] = [];
  let stderr = '';
  const code = await runCli(args, {
    stdout: (t) => out.push(Buffer.from(t)),
    writeBytes: async (b) => void out.push(Buffer.from(b)),
    stderr: (t) => (stderr += t),
    env,
  });
  return { code, stdout: Buffer.concat(out), stderr };
}

/** Runs bin/tessera as a child process. */
export async function tessera(args: string[], env: Record<string, string | undefined>): Promise<RunResult> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  delete childEnv.TESSERA_REPO;
  delete childEnv.TESSERA_PASSWORD;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  return run(tesseraBin, args, { env: childEnv, timeoutMs: 120_000 });
}

/** Checks a failure: exit `code`, nothing on stdout, one `tessera: error:` line matching `pattern`. */
export function assertFailure(o: Outcome, code: number, pattern: RegExp): void {
  assert.equal(o.code, code, `exit code; stdout: ${o.stdout} stderr: ${o.stderr}`);
  const lines = o.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr, got: ${o.stderr}`);
  assert.match(lines[0], /^tessera: error: /);
  assert.match(lines[0], pattern);
}

/** Total bytes of the packs under `dir`/data. */
export async function packBytes(dir: string): Promise<number> {
  return (await new DirBackend(dir).list('data/')).reduce((n, o) => n + o.sizeBytes, 0);
}

export { join };

/**
 * A backend over a directory that forwards every operation: tests subclass it and override the
 * one they make fail or stall.
 */
export class ForwardingBackend extends Backend {
  readonly location: string;
  protected readonly inner: DirBackend;
  constructor(dir: string) {
    super();
    this.inner = new DirBackend(dir);
    this.location = dir;
  }
  protected _get(path: string, range: ByteRange | undefined): Promise<Buffer> {
    return this.inner.get(path, range);
  }
  protected _put(path: string, data: Buffer): Promise<void> {
    return this.inner.put(path, data);
  }
  protected _list(prefix: string): Promise<ObjectInfo[]> {
    return this.inner.list(prefix);
  }
  protected _stat(path: string): Promise<ObjectInfo | null> {
    return this.inner.stat(path);
  }
  protected _delete(path: string): Promise<void> {
    return this.inner.delete(path);
  }
}
