/**
 * SHA-256 of a whole file and of each of its chunks, computed in a worker thread so that the
 * event loop keeps serving the transfer's frames (a file of 1 GiB is ~0.7 s of a core).
 */
import { startThread } from '../util/thread.ts';
import { TransferError, TransferErrorCode } from './errors.ts';

/** A file's digests. */
export interface FileDigest {
  /** SHA-256 of the whole file (what sha256sum prints). */
  whole: Buffer;
  /** SHA-256 of each chunk, in order. */
  chunks: Buffer[];
}

const threadModule = new URL('./digest-thread.ts', import.meta.url);

/** Hashes the first `sizeBytes` of the file at `path`, chunk by chunk of `chunkBytes`. */
export function digestFile(path: string, sizeBytes: number, chunkBytes: number): Promise<FileDigest> {
  return new Promise((resolve, reject) => {
    const worker = startThread(threadModule, { workerData: { path, sizeBytes, chunkBytes } });
    let settled = false;
    worker.once('message', (m: { ok: true; whole: Uint8Array; chunks: Uint8Array[] } | { ok: false; message: string; code: string | null }) => {
      settled = true;
      void worker.terminate();
      if (m.ok) resolve({ whole: Buffer.from(m.whole), chunks: m.chunks.map((c) => Buffer.from(c)) });
      else reject(new TransferError(TransferErrorCode.IO, `Cannot read ${path} to hash it: ${m.message}`));
    });
    worker.once('error', (err) => {
      if (!settled) reject(new TransferError(TransferErrorCode.IO, `The digest thread failed: ${err.message}`, { cause: err }));
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new TransferError(TransferErrorCode.IO, `The digest thread exited (${code}) before answering`));
    });
  });
}
