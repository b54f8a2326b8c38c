/**
 * The crash-test writer (test/helpers/crashload.py, a libnbd client) as a child process: it
 * keeps writes in flight with FLUSHes and some FUA, records which writes were acknowledged
 * durable, and prints `flushed N` after each completed FLUSH.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { spawnTracked } from './process.ts';

/** Path of crashload.py, for its `init` and `verify` commands. */
export const crashload = fileURLToPath(new URL('./crashload.py', import.meta.url));

/** A running writer. */
export interface CrashWriter {
  /** FLUSHes completed so far. */
  readonly flushes: number;
  /** Resolves once it reported `n` completed FLUSHes; rejects if it exits first. */
  flushed(n: number): Promise<void>;
  /** Waits for it to end (its bound reached, or its connection lost) and returns its summary line; fails if it failed. */
  done(): Promise<string>;
}

/** Starts `crashload.py write` on `uri` with the model in `state`, for at most `seconds`. */
export function startCrashWriter(py: string, uri: string, state: string, seed: number, blocks: number, opts: { seconds?: number; maxOps?: number; depth?: number } = {}): CrashWriter {
  const args = [crashload, 'write', uri, state, String(seed), String(blocks), String(opts.depth ?? 16), String(opts.maxOps ?? 1_000_000), String(opts.seconds ?? 300)];
  const child = spawnTracked(py, args);
  child.stdin!.end();
  let out = '';
  let err = '';
  let flushes = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    for (const m of chunk.matchAll(/^flushed (\d+)$/gm)) flushes = Math.max(flushes, Number(m[1]));
    for (const w of waiters.filter((x) => x.n <= flushes)) w.resolve();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; summary: string }>((resolve) => {
    child.once('close', (code) => resolve({ code, summary: out.trim().split('\n').at(-1) ?? '' }));
  });
  return {
    get flushes() {
      return flushes;
    },
    flushed(n: number): Promise<void> {
      if (flushes >= n) return Promise.resolve();
      return Promise.race([
        new Promise<void>((resolve) => waiters.push({ n, resolve })),
        exited.then(({ code }) => {
          throw new Error(`writer exited (${code}) before ${n} flushes: ${err}`);
        }),
      ]);
    },
    async done(): Promise<string> {
      const { code, summary } = await exited;
      assert.equal(code, 0, `writer failed: ${err}`);
      return summary;
    },
  };
}
