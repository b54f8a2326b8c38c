/** writeAll, the one whole-buffer write loop: short writes continued, at a position or where the file is. */
import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { FileHandle } from 'node:fs/promises';
import { writeAll } from '../../src/util/write-all.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';

after(cleanup);

/** A file handle over a real one that writes at most `bytesMax` bytes per call, as a kernel may. */
function shortWriting(fh: FileHandle, bytesMax: number, calls: (number | null)[]): FileHandle {
  return {
    write: (buf: Buffer, offset: number, length: number, position: number | null) => {
      calls.push(position);
      return fh.write(buf, offset, Math.min(length, bytesMax), position);
    },
  } as unknown as FileHandle;
}

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

test('writeAll goes on after short writes at a position, each call further on', async () => {
  const path = join(makeTempDir(), 'f');
  const fh = await open(path, 'w+');
  try {
    const calls: (number | null)[] = [];
    await writeAll(shortWriting(fh, 3, calls), bytes(10, 1), 100);
    assert.deepEqual(calls, [100, 103, 106, 109]);
  } finally {
    await fh.close();
  }
  const file = await readFile(path);
  assert.equal(file.length, 110);
  assert.deepEqual(file.subarray(100), bytes(10, 1));
});

test('writeAll with a null position writes where the file is, appending after short writes', async () => {
  const path = join(makeTempDir(), 'f');
  const fh = await open(path, 'a+');
  try {
    const calls: (number | null)[] = [];
    await writeAll(shortWriting(fh, 4, calls), bytes(10, 2), null);
    await writeAll(shortWriting(fh, 4, calls), bytes(5, 3), null);
    assert.deepEqual(calls, [null, null, null, null, null]);
  } finally {
    await fh.close();
  }
  assert.deepEqual(await readFile(path), Buffer.concat([bytes(10, 2), bytes(5, 3)]));
});

test('writeAll asserts progress rather than loop on a write that takes nothing', async () => {
  const stuck = { write: async () => ({ bytesWritten: 0 }) } as unknown as FileHandle;
  await assert.rejects(writeAll(stuck, bytes(1, 0), 0), assert.AssertionError);
});
