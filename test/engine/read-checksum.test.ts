/**
 * Client reads check a record's checksum where they read its whole payload (docs/engine.md, "A
 * failing drive"): a byte changed under the store is ENGINE_IO for that read only, naming the disk
 * and offset, and marked as a checksum failure; reads elsewhere go on.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { EngineError, Store } from '../../src/engine/index.ts';
import { makeTempDir } from '../helpers/index.ts';

const KiB = 1024;

function marked(tag: string, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let o = 0; o < bytes; o += tag.length) b.write(tag, o);
  return b;
}

/** Flips one byte of the first place in the store's log where `needle` is found. */
function corrupt(dir: string, needle: Buffer, at: number): void {
  const logDir = path.join(dir, 'log');
  for (const name of fs.readdirSync(logDir)) {
    const file = path.join(logDir, name);
    const bytes = fs.readFileSync(file);
    const i = bytes.indexOf(needle);
    if (i < 0) continue;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([bytes[i + at] ^ 0xff]), 0, 1, i + at);
    fs.closeSync(fd);
    return;
  }
  assert.fail('the marked bytes are in no segment');
}

test('a read of a whole record whose bytes changed under the store fails with ENGINE_IO marked as a checksum failure; other reads go on', async () => {
  const dir = makeTempDir();
  const store = await Store.open({ dir, maintenanceIntervalMs: 0 });
  try {
    await store.createDisk('d', 1024 * KiB);
    const v = store.openVolume('d');
    const small = marked('small-record.', 4 * KiB);
    const large = marked('large-record.', 64 * KiB);
    const other = marked('other-record.', 4 * KiB);
    await v.write(8 * KiB, small);
    await v.write(128 * KiB, large);
    await v.write(512 * KiB, other);
    await v.flush();
    assert.ok((await v.read(8 * KiB, 4 * KiB)).equals(small));
    assert.ok((await v.read(128 * KiB, 64 * KiB)).equals(large));

    corrupt(dir, small.subarray(0, 26), 100);
    corrupt(dir, large.subarray(0, 26), 40 * KiB);
    for (const [offset, length] of [[8 * KiB, 4 * KiB], [128 * KiB, 64 * KiB]]) {
      await assert.rejects(v.read(offset, length), (err: unknown) => {
        assert.ok(err instanceof EngineError);
        assert.equal(err.code, 'ENGINE_IO');
        assert.deepEqual(err.readFault, { disk: 'd', offset, checksum: true });
        assert.match(err.message, new RegExp(`Read of disk "d" failed at byte ${offset}: .* fail their record's checksum`));
        return true;
      });
    }
    // Reads of other records, and of the rest of the disk, are not affected.
    assert.ok((await v.read(512 * KiB, 4 * KiB)).equals(other));
    assert.ok((await v.read(0, 8 * KiB)).every((b) => b === 0));
    // A read of part of the damaged large record is not checked (scrub finds it): the bytes come back.
    const part = await v.read(128 * KiB, 4 * KiB);
    assert.ok(part.equals(large.subarray(0, 4 * KiB)));
    v.close();
  } finally {
    await store.close();
  }
});
