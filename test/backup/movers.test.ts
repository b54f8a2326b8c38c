/**
 * Data movers: the backup worker pool's tasks and its shared queue, and a restore through a
 * backend that holds some reads back (hedged range reads). Events are counted; no duration is
 * compared. The hedger and the thread pool alone: test/flow/.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { IndexCache, Repository, WorkerPool, backupFile, restoreToFile } from '../../src/backup/index.ts';
import { type ByteRange } from '../../src/objstore/index.ts';
import { SharedSlots } from '../../src/flow/index.ts';
import { tasksPerWorker } from '../../src/flow/thread-pool.ts';
import { cleanup, testSeed, writeSeededFile } from '../helpers/index.ts';
import { assertSameFile, ForwardingBackend, join, makeTempDir, openTestRepo, password, smallRepo } from './harness.ts';

after(cleanup);

test('worker pool: while one worker runs a long request, the other takes every short one queued behind it', async () => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  // Both workers stay in use (busyMin): this is about the queue, not the adaptive limit.
  const pool = new WorkerPool(keys, { workers: 2, busyMin: 2 });
  try {
    // Random bytes do not compress: sealing 96 MiB takes far longer than hashing 40 KiB.
    let longDone = false;
    let shortBeforeLong = 0;
    const long = pool.seal(randomBytes(96 << 20)).then(() => (longDone = true));
    const small = new SharedSlots(1024, 1);
    const shorts = Array.from({ length: 40 }, () =>
      pool.hashAt({ memory: small.memory, offset: 0, length: 1024 }).then(() => {
        if (!longDone) shortBeforeLong++;
      }),
    );
    await Promise.all([long, ...shorts]);
    // With requests assigned to a worker when queued, about half would wait behind the long one.
    assert.equal(shortBeforeLong, 40, 'every short request finished before the long one');
    assert.ok(pool.stats().max === 2 * tasksPerWorker && pool.stats().limit >= 1);
  } finally {
    await pool.close();
  }
});

test('worker pool: hashSealAt gives the id hashAt gives and the blob sealAt makes, in one task', async () => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const pool = new WorkerPool(keys, { workers: 1 });
  try {
    const slots = new SharedSlots(200_000, 1);
    const plain = Buffer.concat([randomBytes(50_000), Buffer.alloc(150_000, 7)]); // compresses
    plain.copy(slots.view(0, plain.length));
    const at = { memory: slots.memory, offset: slots.offsetOf(0), length: plain.length };
    const both = await pool.hashSealAt(at);
    assert.deepEqual(both.id, await pool.hashAt(at));
    assert.equal(both.plainLength, plain.length);
    assert.ok(both.sealed.length < plain.length, 'compressed');
    assert.deepEqual(await pool.open(both.sealed, both, 'test blob'), plain);
  } finally {
    await pool.close();
  }
});

test('worker pool: blobs open into slots of shared memory, and one larger than its slot is refused as damaged', async () => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const pool = new WorkerPool(keys, { workers: 1 });
  try {
    const small = randomBytes(100_000);
    const large = Buffer.concat([small, small, small]); // compresses: sealed smaller than its plaintext
    const a = await pool.seal(Buffer.from(small), true);
    const b = await pool.seal(Buffer.from(large), true);
    const spec = (blob: typeof a, offset: number) => ({ offset, storedLength: blob.sealed.length, flags: blob.flags, plainLength: blob.plainLength, id: blob.id!, what: 'test blob' });
    const data = Buffer.concat([a.sealed, b.sealed]);
    const slots = new SharedSlots(300_000, 2);
    const into = { memory: slots.memory, offsets: [slots.offsetOf(1), slots.offsetOf(0)], slotBytes: 300_000 };
    assert.deepEqual(await pool.openManyInto(Buffer.from(data), [spec(a, 0), spec(b, a.sealed.length)], into), [100_000, 300_000]);
    assert.ok(slots.view(1, 100_000).equals(small) && slots.view(0, 300_000).equals(large));
    await assert.rejects(pool.openManyInto(Buffer.from(data), [spec(a, 0), spec(b, a.sealed.length)], { ...into, slotBytes: 200_000 }), { code: 'BACKUP_CORRUPT' });
  } finally {
    await pool.close();
  }
});

test('worker pool: started before its keys, it runs the tasks queued meanwhile with them; keys that never come fail the tasks', async () => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  let give!: (k: typeof keys) => void;
  const pool = new WorkerPool(new Promise((resolve) => (give = resolve)), { workers: 2 });
  const reference = new WorkerPool(keys, { workers: 1 });
  try {
    const plain = randomBytes(50_000);
    const early = pool.seal(Buffer.from(plain), true);
    let settled = false;
    void early.finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(settled, false, 'a task waits for the keys');
    give(keys);
    const sealed = await early;
    // Sealed and hashed with the keys given: the other pool opens it, and the ids agree.
    const expectId = (await reference.seal(Buffer.from(plain), true)).id!;
    assert.ok(sealed.id!.equals(expectId));
    assert.ok((await reference.open(sealed.sealed, { flags: sealed.flags, plainLength: sealed.plainLength, id: expectId }, 'test blob')).equals(plain));
  } finally {
    await pool.close();
    await reference.close();
  }
  let refuse!: (err: Error) => void;
  const never = new WorkerPool(new Promise((_, reject) => (refuse = reject)), { workers: 1 });
  try {
    const task = never.seal(randomBytes(10));
    refuse(new Error('wrong password'));
    await assert.rejects(task, /wrong password/);
    await assert.rejects(never.seal(randomBytes(10)), /wrong password/);
  } finally {
    await never.close();
  }
});

/**
 * A directory backend whose chosen range reads of packs do not answer until released: a slow
 * disk, a stuck connection. The second request for the same range goes through.
 */
class HoldingBackend extends ForwardingBackend {
  private readonly seen = new Set<string>();
  private reads = 0;
  private readonly waiting: (() => void)[] = [];
  /** Reads held back so far, and how many of them have not answered yet. */
  held = 0;
  pending = 0;
  private readonly holdRead: (n: number) => boolean;
  constructor(dir: string, holdRead: (n: number) => boolean) {
    super(dir);
    this.holdRead = holdRead;
  }
  /** Lets every held read answer. */
  releaseAll(): void {
    for (const w of this.waiting.splice(0)) w();
  }
  protected override async _get(path: string, range: ByteRange | undefined): Promise<Buffer> {
    const key = `${path}@${range?.offset}+${range?.length}`;
    if (path.startsWith('data/') && range !== undefined && !this.seen.has(key)) {
      this.seen.add(key);
      if (this.holdRead(this.reads++)) {
        this.held++;
        this.pending++;
        await new Promise<void>((resolve) => this.waiting.push(resolve));
        this.pending--;
      }
    }
    return this.inner.get(path, range);
  }
}

test('restore through a backend that never answers some range reads finishes byte-exact: the stuck reads are hedged', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-movers-');
  const image = join(dir, 'image');
  await writeSeededFile(image, seed, 'image', 400 * smallRepo.chunkSizeBytes!); // random: ~100 packs
  const w = await openTestRepo(join(dir, 'repo'), { init: smallRepo });
  const b = await backupFile(w, image, { name: 'img' });
  await w.close();

  // Every 16th range read from the 12th on is held until the restore is over (6 of about 100).
  const backend = new HoldingBackend(join(dir, 'repo'), (n) => n >= 12 && n % 16 === 12);
  const repo = await Repository.open(backend, password);
  const cache = IndexCache.open(repo.id, w.cacheDir);
  const pool = new WorkerPool(repo.keys, { workers: 2 });
  // If hedging failed, the held reads answer after a minute and the assertions below fail.
  const safety = setTimeout(() => backend.releaseAll(), 60_000);
  try {
    const out = join(dir, 'restored');
    const r = await restoreToFile({ repo, cache, pool }, b.snapshot, out);
    const pendingAtEnd = backend.pending;
    t.diagnostic(`held ${backend.held} reads; ${JSON.stringify(r.movers)}`);
    assert.ok(backend.held >= 4, `reads were held back (${backend.held})`);
    assert.equal(pendingAtEnd, backend.held, 'the restore finished while every held read was still unanswered');
    assert.equal(r.movers.hedges.hedgesWon, backend.held, 'each held read was won by its hedge');
    assert.equal(r.movers.hedges.abandoned, backend.held);
    assertSameFile(out, image);
    assert.ok(r.movers.reads.limit >= 1 && r.movers.reads.limitHigh <= 32);
  } finally {
    clearTimeout(safety);
    backend.releaseAll();
    await pool.close();
    await cache.close();
  }
});

test('restore with hedging off waits for a held read (the control of the test above)', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-movers-off-');
  const image = join(dir, 'image');
  await writeSeededFile(image, seed, 'image', 120 * smallRepo.chunkSizeBytes!);
  const w = await openTestRepo(join(dir, 'repo'), { init: smallRepo });
  const b = await backupFile(w, image, { name: 'img' });
  await w.close();
  const backend = new HoldingBackend(join(dir, 'repo'), (n) => n === 12);
  const repo = await Repository.open(backend, password);
  const cache = IndexCache.open(repo.id, w.cacheDir);
  const pool = new WorkerPool(repo.keys, { workers: 2 });
  try {
    let finished = false;
    const restore = restoreToFile({ repo, cache, pool }, b.snapshot, join(dir, 'restored'), { hedge: false }).then((r) => ((finished = true), r));
    // Wait until the held read is in, then until every other read could have been done.
    while (backend.held === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(finished, false, 'without hedging the restore waits for the held read');
    backend.releaseAll();
    const r = await restore;
    assert.equal(r.movers.hedges.hedged, 0);
    assertSameFile(join(dir, 'restored'), image);
  } finally {
    backend.releaseAll();
    await pool.close();
    await cache.close();
  }
});
