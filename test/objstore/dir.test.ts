import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ObjstoreError, ObjstoreErrorCode } from '../../src/objstore/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { BufferPool } from '../../src/flow/index.ts';
import { backendConformance } from './conformance.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tessera-backend-'));
  dirs.push(d);
  return d;
}

backendConformance('DirBackend', { create: async () => new DirBackend(join(tempDir(), 'repo')) });

test('DirBackend leaves no temporary file behind and lists none', async () => {
  const root = tempDir();
  const b = new DirBackend(root);
  await b.put('data/ab/ab01', Buffer.from('x'));
  // A temporary file a killed writer left behind is not an object.
  writeFileSync(join(root, 'data/ab/.tmp-0123456789abcdef'), 'partial');
  assert.deepEqual(await b.list('data/'), [{ path: 'data/ab/ab01', sizeBytes: 1 }]);
  assert.deepEqual(readdirSync(join(root, 'data/ab')).sort(), ['.tmp-0123456789abcdef', 'ab01']);
});

test('DirBackend reports a full disk as OBJSTORE_STORAGE with the cause, and keeps the old object (put and writeObject)', async (t) => {
  const mnt = tempDir();
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tessera-test', mnt], { stdio: 'pipe' });
  } catch (err) {
    assert.fail(`this test mounts a 256 KiB tmpfs to fill it and needs root (or CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  t.after(() => execFileSync('umount', [mnt]));
  mkdirSync(join(mnt, 'repo'));
  const b = new DirBackend(join(mnt, 'repo'));
  await b.put('snapshots/s', Buffer.from('old'));
  await assert.rejects(b.put('snapshots/s', Buffer.alloc(512 * 1024, 1)), (err: unknown) => {
    assert.ok(err instanceof ObjstoreError);
    assert.equal(err.code, ObjstoreErrorCode.STORAGE);
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOSPC');
    assert.match(err.message, /ENOSPC/);
    return true;
  });
  assert.deepEqual(await b.get('snapshots/s'), Buffer.from('old'));
  assert.deepEqual(readdirSync(join(mnt, 'repo/snapshots')), ['s'], 'the temporary file is removed');
  // An object written as its bytes come (a pack) fails at commit, whichever write filled the disk.
  const w = b.writeObject('data');
  for (let i = 0; i < 8; i++) w.write(Buffer.alloc(64 * 1024, i));
  await assert.rejects(w.commit('data/ab/ab01'), (err: unknown) => {
    assert.ok(err instanceof ObjstoreError);
    assert.equal(err.code, ObjstoreErrorCode.STORAGE);
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOSPC');
    return true;
  });
  assert.deepEqual(await b.list('data/'), []);
  assert.deepEqual(readdirSync(join(mnt, 'repo/data')), [], 'the temporary file is removed');
});

test('DirBackend reports an unreadable root as OBJSTORE_STORAGE, a missing one as empty', async () => {
  const root = tempDir();
  const file = join(root, 'not-a-dir');
  writeFileSync(file, 'x');
  assert.deepEqual(await new DirBackend(join(root, 'missing')).list(''), []);
  await assert.rejects(new DirBackend(file).put('config', Buffer.from('x')), (err: unknown) => err instanceof ObjstoreError && err.code === ObjstoreErrorCode.STORAGE);
});

test('DirBackend reads a range into the memory alloc gives it; a shared BufferPool reuses what comes back', async () => {
  const backend = new DirBackend(join(tempDir(), 'repo'));
  const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 13) & 0xff));
  await backend.put('data/ab/obj', bytes);
  const pool = new BufferPool({ pooledBytesMax: 1 << 20, shared: true });
  const got = await backend.get('data/ab/obj', { offset: 1000, length: 200_000 }, { alloc: (n) => pool.take(n) });
  assert.ok(got.equals(bytes.subarray(1000, 201_000)));
  assert.ok(got.buffer instanceof SharedArrayBuffer, 'read into the pool memory, not a buffer of its own');
  pool.give(Buffer.from(got.buffer));
  // The next read of a size of the same class gets the same memory.
  const again = await backend.get('data/ab/obj', { offset: 0, length: 150_000 }, { alloc: (n) => pool.take(n) });
  assert.equal(again.buffer, got.buffer);
  assert.ok(again.equals(bytes.subarray(0, 150_000)));
  assert.notEqual(pool.take(200_000).buffer, again.buffer, 'not given back: not handed out again');
  await assert.rejects(backend.get('data/ab/obj', { offset: 0, length: 1000 }, { alloc: () => Buffer.alloc(10) }), /alloc\(1000\) returned 10 bytes/);
});
