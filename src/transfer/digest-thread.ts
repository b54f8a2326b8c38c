/**
 * The digest thread: reads a file in order and hashes it, the whole file and each chunk, off
 * the event loop (digest.ts starts one a job). Reads are positioned and synchronous: this thread
 * does nothing else.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

interface Job {
  path: string;
  sizeBytes: number;
  chunkBytes: number;
}

const { path, sizeBytes, chunkBytes } = workerData as Job;
try {
  const fd = openSync(path, 'r');
  const whole = createHash('sha256');
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(chunkBytes);
  try {
    for (let offset = 0; offset < sizeBytes; offset += chunkBytes) {
      const length = Math.min(chunkBytes, sizeBytes - offset);
      let filled = 0;
      while (filled < length) {
        const n = readSync(fd, buf, filled, length - filled, offset + filled);
        if (n === 0) throw Object.assign(new Error(`${path} ends at ${offset + filled} bytes, before its ${sizeBytes}`), { code: 'ESHORT' });
        filled += n;
      }
      const view = buf.subarray(0, length);
      whole.update(view);
      chunks.push(createHash('sha256').update(view).digest());
    }
  } finally {
    closeSync(fd);
  }
  parentPort!.postMessage({ ok: true, whole: whole.digest(), chunks });
} catch (err) {
  parentPort!.postMessage({ ok: false, message: (err as Error).message, code: (err as NodeJS.ErrnoException).code ?? null });
}
