/**
 * The repository's storage (src/backup/storage.ts): every failure of an object store reaches the
 * backup code as a BackupError of the matching code with the store's message, and nothing else
 * is touched.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { BackupError, BackupErrorCode, Repository, openRepoBackend } from '../../src/backup/index.ts';
import { repoBackend } from '../../src/backup/storage.ts';
import { ObjstoreError, ObjstoreErrorCode } from '../../src/objstore/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { cleanup } from '../helpers/index.ts';
import { ForwardingBackend, join, makeTempDir, password } from './harness.ts';

after(cleanup);

/** What `fn` throws, or rejects with. */
async function caught(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected a failure');
}

/** Asserts `err` is a BackupError of `code` carrying the ObjstoreError `raw` threw, message and all. */
function assertMapped(err: unknown, raw: unknown, code: string): void {
  assert.ok(raw instanceof ObjstoreError, `the store's own failure is an ObjstoreError, got ${String(raw)}`);
  assert.ok(err instanceof BackupError, `a BackupError, got ${String(err)}`);
  assert.equal(err.code, code);
  assert.equal(err.message, raw.message, 'the message is the store\'s, unchanged');
  assert.ok(err.cause instanceof ObjstoreError && err.cause.code === raw.code);
}

test('repository storage: a missing object, a bad path, a bad range and a bad commit are BackupErrors with the store\'s messages', async () => {
  const dir = makeTempDir('tessera-storage-');
  const raw = new DirBackend(dir);
  const b = repoBackend(raw);
  assert.equal(repoBackend(b), b, 'wrapping twice is wrapping once');
  assert.equal(b.location, raw.location);
  assert.equal(b.requestsMax, raw.requestsMax);
  await b.put('index/r', Buffer.alloc(10));
  assertMapped(await caught(() => b.get('snapshots/none')), await caught(() => raw.get('snapshots/none')), BackupErrorCode.NOT_FOUND);
  assertMapped(await caught(() => b.get('Bad')), await caught(() => raw.get('Bad')), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.put('Bad', Buffer.alloc(1))), await caught(() => raw.put('Bad', Buffer.alloc(1))), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.putParts('Bad', [])), await caught(() => raw.putParts('Bad', [])), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.stat('Bad')), await caught(() => raw.stat('Bad')), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.delete('Bad')), await caught(() => raw.delete('Bad')), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.list('../')), await caught(() => raw.list('../')), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.deleteTemporary('data/x')), await caught(() => raw.deleteTemporary('data/x')), BackupErrorCode.INVALID);
  const range = { offset: 5, length: 10 };
  assertMapped(await caught(() => b.get('index/r', range)), await caught(() => raw.get('index/r', range)), BackupErrorCode.INVALID);
  assertMapped(await caught(() => b.writeObject('Bad')), await caught(() => raw.writeObject('Bad')), BackupErrorCode.INVALID);
  const w = b.writeObject('data');
  w.write(Buffer.from('pack'));
  assert.equal(w.bytes, 4);
  const rw = raw.writeObject('data');
  assertMapped(await caught(() => w.commit('index/0123')), await caught(() => rw.commit('index/0123')), BackupErrorCode.INVALID);
  // A bug, not the world: a writer used after it is done throws a plain Error, left as it is.
  const late = await caught(() => w.write(Buffer.from('x')));
  assert.ok(late instanceof Error && !(late instanceof BackupError) && /committed or aborted/.test(late.message));
  const ok = b.writeObject('data');
  ok.write(Buffer.from('whole'));
  await ok.commit('data/ab/ab01');
  assert.deepEqual(await b.get('data/ab/ab01'), Buffer.from('whole'));
  assert.deepEqual(await b.stat('data/ab/ab01'), { path: 'data/ab/ab01', sizeBytes: 5 });
  assert.deepEqual((await b.list('data/')).map((o) => o.path), ['data/ab/ab01']);
  assert.deepEqual(await b.listTemporaries(), []);
  await b.delete('data/ab/ab01');
  assert.equal(await raw.stat('data/ab/ab01'), null);
  await b.close();
});

test('repository storage: a failing store is BACKUP_STORAGE; what a backend throws that is no ObjstoreError passes unchanged', async () => {
  const dir = makeTempDir('tessera-storage-');
  const notADir = join(dir, 'file');
  await new DirBackend(dir).put('file', Buffer.from('x'));
  const raw = new DirBackend(notADir);
  assertMapped(await caught(() => repoBackend(raw).put('config', Buffer.from('x'))), await caught(() => raw.put('config', Buffer.from('x'))), BackupErrorCode.STORAGE);
  const own = new BackupError(BackupErrorCode.CORRUPT, 'A test backend says so');
  class Throwing extends ForwardingBackend {
    protected override async _get(): Promise<Buffer> {
      throw own;
    }
  }
  assert.equal(await caught(() => repoBackend(new Throwing(dir)).get('config')), own);
});

test('repository storage: openRepoBackend fails with BackupErrors, and a repository opened on a bare backend reports them too', async () => {
  const dir = makeTempDir('tessera-storage-');
  const err = await caught(() => openRepoBackend('ftp://host/repo'));
  assert.ok(err instanceof BackupError && err.code === BackupErrorCode.INVALID && /^Unsupported repository URL ftp:\/\/host\/repo/.test(err.message), String(err));
  const empty = await caught(() => openRepoBackend(''));
  assert.ok(empty instanceof BackupError && empty.code === BackupErrorCode.INVALID);
  const b = await openRepoBackend(join(dir, 'repo'));
  assert.equal(repoBackend(b), b, 'already a repository backend');
  const repo = await Repository.init(new DirBackend(join(dir, 'repo')), password);
  const missing = await caught(() => repo.backend.get('snapshots/none'));
  assert.ok(missing instanceof BackupError && missing.code === BackupErrorCode.NOT_FOUND, String(missing));
  const none = await caught(() => Repository.open(new DirBackend(join(dir, 'none')), password));
  assert.ok(none instanceof BackupError && none.code === BackupErrorCode.NOT_FOUND && /No backup repository at/.test(none.message), String(none));
});
