/**
 * The file a restore writes: chunks go in with O_DIRECT from page-aligned slots, short or
 * unaligned ones through the page cache, and everything through the page cache once the file
 * system refuses a direct write. The bytes must be the same every way.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { FileSink } from '../../src/backup/file-sink.ts';
import { isDirectAligned, SharedSlots } from '../../src/flow/index.ts';
import { BackupError } from '../../src/backup/index.ts';
import { cleanup, makeTempDir, seededBytes, testSeed } from '../helpers/index.ts';
import { join } from './harness.ts';

after(cleanup);
const MiB = 1 << 20;
const dir = makeTempDir('tessera-file-sink-');

/** Writes chunks 0..n of `image` except the zero ones, several at once, in a shuffled order. */
async function restoreImage(path: string, image: Buffer, options: Parameters<typeof FileSink.create>[3]): Promise<FileSink> {
  const sink = await FileSink.create(path, image.length, MiB, options);
  const chunks = Array.from({ length: Math.ceil(image.length / MiB) }, (_, i) => i).filter((i) => i % 4 !== 1); // every 4th stays a hole
  for (let i = chunks.length - 1; i > 0; i--) {
    const j = (i * 7919) % (i + 1);
    [chunks[i], chunks[j]] = [chunks[j], chunks[i]];
  }
  await Promise.all(chunks.map((i) => sink.write(Buffer.from(image.subarray(i * MiB, Math.min(image.length, (i + 1) * MiB))), i * MiB)));
  await sink.finish({ sync: true });
  return sink;
}

function expected(image: Buffer): Buffer {
  const out = Buffer.from(image);
  for (let i = 1; i * MiB < out.length; i += 4) out.fill(0, i * MiB, Math.min(out.length, (i + 1) * MiB));
  return out;
}

test('chunks are written directly, a short last chunk through the page cache; holes stay zero', async (t) => {
  const image = seededBytes(testSeed(t), 'sink', 10 * MiB + 1000);
  const path = join(dir, 'direct.raw');
  const sink = await restoreImage(path, image, {});
  assert.ok(readFileSync(path).equals(expected(image)));
  assert.equal(sink.stats.directRefused, false, 'this file system takes O_DIRECT');
  assert.equal(sink.stats.bytesBuffered, 1000, 'only the short last chunk went through the page cache');
  assert.equal(sink.stats.bytesDirect, 7 * MiB, 'the other written chunks went directly');
});

test('direct writes wait beyond directWritesMax in flight and go through the page cache beyond directQueueMax waiting; the bytes are the same', async (t) => {
  const image = seededBytes(testSeed(t), 'sink-max', 16 * MiB);
  const spill = await restoreImage(join(dir, 'spill.raw'), image, { directWritesMax: 1, directQueueMax: 0 });
  assert.ok(readFileSync(join(dir, 'spill.raw')).equals(expected(image)));
  assert.equal(spill.stats.directRefused, false);
  assert.equal(spill.stats.bytesDirect + spill.stats.bytesBuffered, 12 * MiB);
  assert.ok(spill.stats.bytesDirect >= MiB, `some writes went directly (${spill.stats.bytesDirect})`);
  assert.ok(spill.stats.bytesBuffered >= 6 * MiB, `the writes issued while one was in flight went through the cache (${spill.stats.bytesBuffered})`);
  const some = await restoreImage(join(dir, 'some.raw'), image, { directWritesMax: 1, directQueueMax: 2 });
  assert.ok(readFileSync(join(dir, 'some.raw')).equals(expected(image)));
  assert.ok(some.stats.bytesDirect >= 3 * MiB, `one in flight and two waiting went directly (${some.stats.bytesDirect})`);
  const queued = await restoreImage(join(dir, 'queued.raw'), image, { directWritesMax: 1 });
  assert.ok(readFileSync(join(dir, 'queued.raw')).equals(expected(image)));
  assert.equal(queued.stats.bytesDirect, 12 * MiB, 'with room to wait, every write went directly, one at a time');
  await assert.rejects(FileSink.create(join(dir, 'max0.raw'), MiB, MiB, { directWritesMax: 0 }), RangeError);
  await assert.rejects(FileSink.create(join(dir, 'queue-1.raw'), MiB, MiB, { directQueueMax: -1 }), RangeError);
});

test('without direct writes, and after the file system refuses one, the bytes are the same', async (t) => {
  const image = seededBytes(testSeed(t), 'sink2', 6 * MiB);
  const off = await restoreImage(join(dir, 'buffered.raw'), image, { direct: false });
  assert.ok(readFileSync(join(dir, 'buffered.raw')).equals(expected(image)));
  assert.deepEqual(off.stats, { bytesDirect: 0, bytesBuffered: 4 * MiB, directRefused: true, synced: true });
  // Slots off page alignment: the first direct write fails with EINVAL, the rest go buffered.
  const refused = await restoreImage(join(dir, 'refused.raw'), image, { misalignBytes: 16 });
  assert.ok(readFileSync(join(dir, 'refused.raw')).equals(expected(image)));
  assert.deepEqual(refused.stats, { bytesDirect: 0, bytesBuffered: 4 * MiB, directRefused: true, synced: true });
});

test("slots of shared memory are written directly as they are, and reused only once given back", async (t) => {
  const image = seededBytes(testSeed(t), 'slots', 6 * MiB);
  const slots = new SharedSlots(MiB, 3);
  assert.ok(isDirectAligned(slots.view(2, MiB)), 'a slot view is aligned');
  assert.ok(!isDirectAligned(slots.view(0, 1000)), 'a short view is not (its length)');
  assert.ok(!isDirectAligned(Buffer.alloc(MiB)), 'an ordinary buffer is not');
  assert.ok(!isDirectAligned(new Uint8Array(new SharedArrayBuffer(MiB))), 'other shared memory is not');
  assert.throws(() => slots.take(4), RangeError);
  const path = join(dir, 'slots.raw');
  const sink = await FileSink.create(path, image.length, MiB);
  // Six chunks through three slots, two at a time: a take waits until slots come back.
  let waited = 0;
  await Promise.all(
    [0, 2, 4].map(async (first) => {
      const pending = slots.take(2);
      let got = false;
      void pending.then(() => (got = true));
      await Promise.resolve();
      if (!got) waited++;
      const taken = await pending;
      try {
        await Promise.all(
          taken.map((slot, k) => {
            const view = slots.view(slot, MiB);
            image.copy(view, 0, (first + k) * MiB, (first + k + 1) * MiB);
            return sink.write(view, (first + k) * MiB);
          }),
        );
      } finally {
        slots.give(taken);
      }
    }),
  );
  await sink.finish({ sync: true });
  assert.ok(readFileSync(path).equals(image));
  assert.ok(waited >= 1, 'a take waited for slots to be given back');
  assert.deepEqual(sink.stats, { bytesDirect: 6 * MiB, bytesBuffered: 0, directRefused: false, synced: true });
});

test('a restore never overwrites a file', async () => {
  const path = join(dir, 'exists.raw');
  writeFileSync(path, 'keep me');
  await assert.rejects(FileSink.create(path, MiB, MiB), (err: unknown) => err instanceof BackupError && /exists already/.test(err.message));
  assert.equal(readFileSync(path, 'utf8'), 'keep me');
});
