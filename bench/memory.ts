/**
 * What both benchmarks do before a measurement so that it does not depend on what ran before it
 * (docs/benchmarks.md, Method, "Memory the guest has not touched").
 */
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Hands the next measurement memory that was in use a moment ago: writes `bytes` into the page
 * cache of a scratch file in `dir` and deletes it (no disk I/O: the dirty pages are dropped). On
 * a VM that backs guest memory lazily and takes back what the guest frees (the benchmark machine:
 * free page reporting), memory the guest has not touched lately costs 2-3 s of system time per
 * GiB in page faults the host serves, whether a write puts it in the page cache or a process
 * allocates it; which measurement met such memory (a server's writes, a backup started right
 * after another tool freed its memory) had been luck.
 */
export async function recycleMemory(dir: string, bytes: number): Promise<void> {
  const path = join(dir, 'recycle.tmp');
  const chunk = Buffer.alloc(4 * 1024 * 1024, 0x5a);
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < bytes; done += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
  } finally {
    await fh.close();
    await unlink(path);
  }
}
