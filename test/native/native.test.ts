/**
 * The native helpers (docs/native.md): zstd into and out of given memory, agreeing with Node's
 * zlib both ways; typed errors on damaged frames and bad arguments; SEEK_DATA/SEEK_HOLE on a
 * sparse file; and backups and restores through the CLI with and without the helpers
 * (TESSERA_NATIVE=0), each reading what the other wrote.
 */
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { constants as zlibConstants, crc32 as zlibCrc32, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { crc32, native as loaded, nativeStatus, type Native } from '../../src/native/index.ts';
import { assertSameFile, cliEnv, join, makeTempDir, tessera } from '../backup/harness.ts';
import { cleanup, Rng, seededBytes, testSeed } from '../helpers/index.ts';

after(cleanup);

/** The module, or a failure that says how to get it. */
function helpers(): Native {
  assert.ok(loaded !== null, `the native helpers are ${nativeStatus}: install gcc and libzstd-dev (apt-get install gcc libzstd-dev), then npm install`);
  return loaded;
}

/** Plaintexts of several kinds and sizes, random ones from the seed. */
function samples(seed: number): { what: string; data: Buffer }[] {
  const out: { what: string; data: Buffer }[] = [];
  for (const size of [0, 1, 4095, 65536, 1 << 20]) {
    out.push({ what: `${size} random bytes`, data: seededBytes(seed, `random-${size}`, size) });
    out.push({ what: `${size} bytes of text`, data: Buffer.from('tessera native helpers '.repeat(Math.ceil(size / 23)).slice(0, size)) });
    out.push({ what: `${size} zero bytes`, data: Buffer.alloc(size) });
  }
  return out;
}

/** A Buffer over page-aligned shared memory, as a restore's slots are. */
function sharedBuffer(bytes: number): Buffer {
  const memory = new (globalThis as unknown as { WebAssembly: { Memory: new (d: object) => { buffer: SharedArrayBuffer } } }).WebAssembly.Memory({
    initial: Math.ceil(bytes / 65536),
    maximum: Math.ceil(bytes / 65536),
    shared: true,
  }).buffer;
  return Buffer.from(memory, 0, bytes);
}

function zstdError(code: string) {
  return (err: unknown) => (err as NodeJS.ErrnoException).code === code;
}

describe('native helpers', () => {
  let seed: number;
  before(() => {
    seed = testSeed({ diagnostic: (m) => console.log(`# ${m}`) });
  });

  test('are built and loaded (npm install builds them)', () => {
    assert.equal(nativeStatus, 'loaded', `the native helpers are ${nativeStatus}: install gcc and libzstd-dev, then npm install`);
  });

  test("zstd frames of the helpers and of Node's zlib read each other", () => {
    const n = helpers();
    for (const { what, data } of samples(seed)) {
      const room = Buffer.alloc(data.length + (data.length >> 8) + 128);
      const length = n.compress(data, room, 1);
      assert.ok(length > 0, what);
      const frame = room.subarray(0, length);
      assert.ok(zstdDecompressSync(frame).equals(data), `${what}: the helper's frame read by zlib`);
      const theirs = zstdCompressSync(data, { params: { [zlibConstants.ZSTD_c_compressionLevel]: 1 } });
      const into = Buffer.alloc(data.length);
      assert.equal(n.decompress(theirs, into), data.length, what);
      assert.ok(into.equals(data), `${what}: zlib's frame read by the helper`);
    }
  });

  test('decompress writes into shared memory, and compress reads from it', () => {
    const n = helpers();
    const data = Buffer.from('a chunk in a slot of shared memory '.repeat(29000)); // just under the slot's 1 MiB
    const slot = sharedBuffer(1 << 20);
    const frame = zstdCompressSync(data);
    assert.equal(n.decompress(frame, slot), data.length);
    assert.ok(slot.subarray(0, data.length).equals(data));
    const room = Buffer.alloc(data.length);
    const length = n.compress(slot.subarray(0, data.length), room, 1);
    assert.ok(zstdDecompressSync(room.subarray(0, length)).equals(data));
  });

  test('damaged frames, small destinations and bad arguments are typed errors, never a crash', () => {
    const n = helpers();
    const data = seededBytes(seed, 'damage', 100_000);
    const frame = zstdCompressSync(Buffer.concat([data, data]));
    const out = Buffer.alloc(200_000);
    assert.throws(() => n.decompress(frame.subarray(0, frame.length - 7), out), zstdError('ERR_ZSTD'), 'truncated');
    assert.throws(() => n.decompress(Buffer.concat([frame, Buffer.from([1, 2, 3])]), out), zstdError('ERR_ZSTD'), 'bytes after the frame');
    assert.throws(() => n.decompress(Buffer.concat([frame, frame]), out), zstdError('ERR_ZSTD'), 'two frames');
    assert.throws(() => n.decompress(Buffer.from('not a zstd frame at all'), out), zstdError('ERR_ZSTD'), 'no magic');
    assert.throws(() => n.decompress(Buffer.alloc(0), out), zstdError('ERR_ZSTD'), 'empty');
    assert.throws(() => n.decompress(frame, Buffer.alloc(199_999)), zstdError('ERR_ZSTD'), 'destination one byte short');
    const rng = new Rng(seed);
    for (let i = 0; i < 200; i++) {
      // Random damage may decode to other bytes (a blob's id check catches that) or fail: never crash.
      const bad = Buffer.from(frame);
      for (let f = 0; f < 1 + rng.int(4); f++) bad[rng.int(bad.length)] = rng.int(256);
      try {
        assert.ok(n.decompress(bad, out) <= out.length);
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, 'ERR_ZSTD', String(err));
      }
    }
    assert.equal(n.compress(data, Buffer.alloc(1000), 1), -1, 'compress into too little room');
    const wrong = n as unknown as Record<string, (...a: unknown[]) => unknown>;
    assert.throws(() => wrong.decompress('text', out), zstdError('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => wrong.decompress(frame), zstdError('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => wrong.decompress(frame, new Uint16Array(10)), zstdError('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => wrong.compress(data, out, 'one'), zstdError('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => wrong.seek(-1, 0, false), zstdError('EBADF'));
    assert.throws(() => wrong.seek(0, -1, false), zstdError('ERR_INVALID_ARG_TYPE'));
  });

  test("crc32 is ISA-L's, and equals zlib's for any bytes, views and continuations", () => {
    const n = helpers();
    assert.ok(n.crc32 !== undefined, 'the native helpers were built without ISA-L: install libisal-dev (apt-get install libisal-dev), then npm install');
    const rng = new Rng(seed);
    for (const size of [0, 1, 3, 60, 4095, 4096, 65537, 1 << 20]) {
      const data = seededBytes(seed, `crc-${size}`, size);
      assert.equal(n.crc32(data, 0), zlibCrc32(data), `${size} bytes`);
      assert.equal(crc32(data), zlibCrc32(data), `${size} bytes through the engine's crc32`);
      const cut = size === 0 ? 0 : rng.int(size);
      assert.equal(crc32(data.subarray(cut), crc32(data.subarray(0, cut))), zlibCrc32(data), `${size} bytes, continued at ${cut}`);
      const inner = data.subarray(1, Math.max(1, size - 1));
      assert.equal(crc32(inner), zlibCrc32(inner), `a view inside ${size} bytes`);
    }
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926, 'the CRC-32 check value');
    const shared = sharedBuffer(65536);
    shared.fill(7);
    assert.equal(crc32(shared), zlibCrc32(Buffer.alloc(65536, 7)));
    assert.throws(() => (n.crc32 as unknown as (...a: unknown[]) => number)('text', 0), zstdError('ERR_INVALID_ARG_TYPE'));
  });

  test('seek finds the data and holes of a sparse file', () => {
    const n = helpers();
    const path = join(makeTempDir('tessera-native-seek-'), 'sparse');
    const fd = openSync(path, 'w+');
    try {
      const MiB = 1 << 20;
      ftruncateSync(fd, 8 * MiB);
      writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, MiB);
      writeSync(fd, Buffer.alloc(8192, 2), 0, 8192, 5 * MiB);
      assert.equal(n.seek(fd, 0, false), MiB);
      assert.equal(n.seek(fd, MiB, true), MiB + 4096);
      assert.equal(n.seek(fd, MiB + 4096, false), 5 * MiB);
      assert.equal(n.seek(fd, 5 * MiB, true), 5 * MiB + 8192);
      assert.equal(n.seek(fd, 5 * MiB + 8192, false), -1, 'no data after the last run');
      assert.equal(n.seek(fd, 6 * MiB, true), 6 * MiB, 'a hole where it is asked');
      assert.equal(n.seek(fd, 9 * MiB, false), -1, 'past the end');
    } finally {
      closeSync(fd);
    }
  });

  test('backup file skips holes with the helpers and reads them without; each restores what the other backed up', async () => {
    helpers();
    const dir = makeTempDir('tessera-native-cli-');
    const env = cliEnv(makeTempDir('tessera-native-cache-'));
    const off = { ...env, TESSERA_NATIVE: '0' };
    const repo = join(dir, 'repo');
    const ok = async (args: string[], e: Record<string, string | undefined>) => {
      const r = await tessera(args, e);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    };
    await ok(['backup', 'init', '--repo', repo, '--chunk-size', '64K'], env);
    // 32 chunks of 64 KiB: holes, data, a chunk with 4 KiB of data in a hole, a short last chunk.
    const chunk = 64 * 1024;
    const size = 32 * chunk - 1000;
    const image = join(dir, 'image.raw');
    const rng = new Rng(seed);
    const fd = openSync(image, 'w');
    const holes = new Set<number>();
    try {
      ftruncateSync(fd, size);
      for (let i = 0; i < 32; i++) {
        const kind = i === 31 ? 0 : rng.int(4);
        const at = i * chunk;
        const length = Math.min(chunk, size - at);
        if (kind === 0) writeSync(fd, seededBytes(seed, `c${i}`, length), 0, length, at);
        else if (kind === 1) writeSync(fd, Buffer.from(`chunk ${i} `.repeat(length)).subarray(0, length), 0, length, at);
        else if (kind === 2) writeSync(fd, seededBytes(seed, `p${i}`, 4096), 0, 4096, at + 8 * 4096);
        else holes.add(i);
      }
    } finally {
      closeSync(fd);
    }
    const withHelpers = JSON.parse(await ok(['backup', 'file', image, '--repo', repo, '--name', 'img', '--json'], env));
    const without = JSON.parse(await ok(['backup', 'file', image, '--repo', repo, '--name', 'img', '--json'], off));
    assert.equal(withHelpers.stats.bytesScanned, size - holes.size * chunk, `the ${holes.size} chunks in holes are not read`);
    assert.equal(withHelpers.stats.chunksZero, holes.size);
    assert.equal(without.stats.bytesScanned, size, 'without the helpers every chunk is read');
    assert.equal(without.stats.chunksZero, holes.size);
    const a = join(dir, 'a.raw');
    const b = join(dir, 'b.raw');
    await ok(['backup', 'restore', withHelpers.id, '--repo', repo, '--to-file', a], off);
    await ok(['backup', 'restore', without.id, '--repo', repo, '--to-file', b], env);
    assertSameFile(a, image);
    assertSameFile(b, image);
    await ok(['backup', 'verify', '--repo', repo, '--read-data'], off);
  });
});
