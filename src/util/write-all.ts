import type { FileHandle } from 'node:fs/promises';

/** Writes all of `data` at `position` of an open file, going on after short writes. */
export async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
