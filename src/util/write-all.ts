import assert from 'node:assert/strict';
import type { FileHandle } from 'node:fs/promises';

/**
 * Writes all of `data` at `position` of an open file, going on after short writes. A `null`
 * position writes where the file is (and moves it on): a file written front to back, or one
 * opened for appending (where the kernel ignores positions anyway).
 */
export async function writeAll(fh: FileHandle, data: Buffer, position: number | null): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position === null ? null : position + done);
    // A write that took nothing and failed nothing would loop forever.
    assert.ok(bytesWritten > 0, 'a write of a nonempty buffer takes at least one byte');
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
