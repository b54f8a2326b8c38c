import type { FileHandle } from 'node:fs/promises';

/** Writes all of `data` at `position` of an open file, going on after short writes. */
export async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Writes `parts` back to back from `position` of an open file in as few `writev` calls as the
 * kernel allows, going on after short writes.
 */
export async function writevAll(fh: FileHandle, parts: readonly Buffer[], position: number): Promise<void> {
  let rest = parts.filter((p) => p.length > 0);
  let at = position;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    let done = bytesWritten;
    while (rest.length > 0 && done >= rest[0].length) {
      done -= rest[0].length;
      rest = rest.slice(1);
    }
    if (done > 0) rest = [rest[0].subarray(done), ...rest.slice(1)];
  }
}
