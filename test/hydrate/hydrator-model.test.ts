/**
 * The hydrator against a simple model: seeded concurrent reads, writes, write-zeroes and trims
 * through its Volume on a real Store, while the copier runs and a fake repository answers
 * fetches late or fails some of them. Every read must match the model (the image plus the
 * writes that succeeded), every chunk must be delivered once, and the disk must end as the model.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Store, type Volume } from '../../src/engine/index.ts';
import { Hydrator } from '../../src/hydrate/hydrator.ts';
import type { ChunkSource } from '../../src/hydrate/source.ts';
import { CopiedLog, decodeCopied, encodeCopied } from '../../src/hydrate/state.ts';
import { cleanup, makeTempDir, Rng, seededBytes, testSeed } from '../helpers/index.ts';

after(cleanup);

const chunkSize = 64 * 1024;

/** A fake repository: an in-memory image, fetches that take a random while and fail at a rate. */
class FakeSource {
  readonly snapshot: { chunkSizeBytes: number; sizeBytes: number };
  readonly chunkCount: number;
  bytesRead = 0;
  delivered: number[];
  failRate = 0;
  private readonly image: Buffer;
  private readonly zero: boolean[];
  private readonly rng: Rng;
  constructor(image: Buffer, zero: boolean[], rng: Rng) {
    this.image = image;
    this.zero = zero;
    this.rng = rng;
    this.snapshot = { chunkSizeBytes: chunkSize, sizeBytes: image.length };
    this.chunkCount = Math.ceil(image.length / chunkSize);
    this.delivered = new Array(this.chunkCount).fill(0);
  }
  isZero(c: number): boolean {
    return this.zero[c];
  }
  chunkBytes(c: number): number {
    return Math.min(chunkSize, this.image.length - c * chunkSize);
  }
  async fetch(chunks: readonly number[], deliver: (c: number, plain: Buffer) => Promise<void>): Promise<void> {
    for (const c of chunks) assert.ok(!this.zero[c], `zero chunk ${c} fetched`);
    await new Promise((r) => setTimeout(r, this.rng.int(4)));
    if (this.rng.next() < this.failRate) throw new Error('repository unreachable (injected)');
    for (const c of chunks) {
      this.delivered[c]++;
      this.bytesRead += this.chunkBytes(c);
      await deliver(c, Buffer.from(this.image.subarray(c * chunkSize, c * chunkSize + this.chunkBytes(c))));
    }
  }
  closed = false;
  async close(): Promise<void> {
    this.closed = true;
  }
}

test('hydrator model: concurrent reads and writes while copying match the model; one delivery per chunk', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const dir = makeTempDir('tessera-hydrator-');
  const chunks = 48;
  const size = chunks * chunkSize - 4096 * 3; // a short last chunk
  const image = seededBytes(seed, 'image', size);
  const zero: boolean[] = [];
  for (let c = 0; c < chunks; c++) {
    zero.push(rng.next() < 0.3);
    if (zero[c]) image.fill(0, c * chunkSize, Math.min(size, (c + 1) * chunkSize));
    else if (rng.next() < 0.3) image.fill(0, c * chunkSize, c * chunkSize + 8192); // zero blocks inside a data chunk
  }
  const model = Buffer.from(image);

  const store = await Store.open({ dir: join(dir, 'store'), maintenanceIntervalMs: 0 });
  await store.createDisk('d', size);
  const source = new FakeSource(image, zero, rng);
  source.failRate = 0.15;
  const { log, chunks: logged } = await CopiedLog.open(join(dir, 'state'), 'd', chunks);
  assert.deepEqual(logged, []);
  const h = new Hydrator({
    disk: 'd',
    source: source as unknown as ChunkSource,
    volume: store.openVolume('d'),
    log,
    logged,
    limits: { batchChunksMax: 3, fetchesMax: 2, retryDelayMs: 5, retryDelayMsMax: 20, copyBytesPerSecondMax: 4 * chunkSize * 10 },
  });
  let finished = false;
  h.start(async () => {
    finished = true;
  });
  const vol: Volume = h.wrap(store.openVolume('d'));

  let failures = 0;
  for (let wave = 0; wave < 40; wave++) {
    // Writes in a wave touch no byte another op of the wave touches, so the model is exact.
    const taken: [number, number][] = [];
    const free = (a: number, b: number) => taken.every(([x, y]) => b <= x || a >= y);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 8; i++) {
      const offset = rng.int(size - 1);
      const length = Math.min(size - offset, rng.range(1, chunkSize * 2));
      if (!free(offset, offset + length)) continue;
      taken.push([offset, offset + length]);
      const kind = rng.int(10);
      if (kind < 5) {
        ops.push(
          vol.read(offset, length).then(
            (got) => assert.ok(got.equals(model.subarray(offset, offset + length)), `read ${offset}+${length} differs from the model (seed ${seed})`),
            (err: Error) => {
              assert.match(err.message, /injected/, 'only injected repository errors may fail a read');
              failures++;
            },
          ),
        );
      } else {
        const data = kind < 8 ? seededBytes(seed, `w${wave}.${i}`, length) : Buffer.alloc(length);
        const op = kind < 8 ? vol.write(offset, data) : kind === 8 ? vol.writeZeroes(offset, length) : vol.trim(offset, length);
        ops.push(
          op.then(
            () => void data.copy(model, offset),
            // A failed write was never issued: the fetch before it failed.
            (err: Error) => {
              assert.match(err.message, /injected/, 'only injected repository errors may fail a write');
              failures++;
            },
          ),
        );
      }
    }
    await Promise.all(ops);
  }
  source.failRate = 0;
  for (let i = 0; i < 2000 && !finished; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(finished, `the copier did not finish: ${JSON.stringify(h.progress())}`);
  assert.equal(source.closed, true, 'a finished hydrator closes its source');
  await h.stop();
  t.diagnostic(`${failures} requests failed by injected repository errors; ${JSON.stringify(h.progress())}`);

  for (let c = 0; c < chunks; c++) assert.equal(source.delivered[c], zero[c] ? 0 : 1, `chunk ${c} delivered ${source.delivered[c]} times`);
  const plain = store.openVolume('d');
  const all = await plain.read(0, size);
  plain.close();
  vol.close();
  assert.ok(all.equals(model), `the disk differs from the model after the restore (seed ${seed})`);
  const reopened = await CopiedLog.open(join(dir, 'state'), 'd', chunks);
  assert.equal(reopened.chunks.length, zero.filter((z) => !z).length, 'every copied chunk is in the copied log');
  await reopened.log.close();
  await store.close();
});

test('copied log: records are checked, a torn or foreign tail is cut off', () => {
  const good = Buffer.concat([encodeCopied(0), encodeCopied(7), encodeCopied(3)]);
  assert.deepEqual(decodeCopied(good, 8), { chunks: [0, 7, 3], validBytes: 24 });
  assert.deepEqual(decodeCopied(Buffer.concat([good, Buffer.alloc(8)]), 8), { chunks: [0, 7, 3], validBytes: 24 }, 'zeroes are no record');
  assert.deepEqual(decodeCopied(Buffer.concat([good, encodeCopied(5).subarray(0, 6)]), 8), { chunks: [0, 7, 3], validBytes: 24 }, 'torn record');
  assert.deepEqual(decodeCopied(Buffer.concat([good, encodeCopied(8)]), 8), { chunks: [0, 7, 3], validBytes: 24 }, 'chunk out of range');
  const flipped = Buffer.from(good);
  flipped[8] ^= 1;
  assert.deepEqual(decodeCopied(flipped, 8), { chunks: [0], validBytes: 8 });
  // Golden vector: chunk 7, then the CRC-32 (zlib's) of its 4 bytes.
  assert.equal(encodeCopied(7).toString('hex'), '07000000a5e793bc');
});
