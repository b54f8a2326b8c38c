/**
 * The conformance suite every object store Backend must pass (docs/objstore.md). A test file
 * per backend calls `backendConformance` with a factory of fresh, empty backends:
 *
 *   backendConformance('DirBackend', { create: async () => new DirBackend(tempDir()) });
 *
 * Each test creates its own backend and closes it; `destroy` (optional) removes what it stored.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Backend, ObjstoreError, ObjstoreErrorCode } from '../../src/objstore/index.ts';

/** How the suite gets backends. */
export interface BackendFactory {
  /** A new backend over empty storage (a fresh directory, a fresh S3 prefix). */
  create(): Promise<Backend>;
  /** Removes what the backend stored, after the test closed it. */
  destroy?(backend: Backend): Promise<void>;
  /** Size of the large-object test; default 40 MiB (over the 16 MiB pack target). */
  largeObjectBytes?: number;
}

/** Rejects with a ObjstoreError of `code`. */
async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ObjstoreError, `a ObjstoreError, got ${String(err)}`);
    assert.equal(err.code, code, `code of: ${err.message}`);
    return true;
  });
}

function sortedPaths(infos: { path: string }[]): string[] {
  return infos.map((i) => i.path).sort();
}

/** Declares the suite (a node:test `describe`) for one backend. */
export function backendConformance(name: string, factory: BackendFactory): void {
  async function withBackend(fn: (b: Backend) => Promise<void>): Promise<void> {
    const b = await factory.create();
    try {
      await fn(b);
    } finally {
      await b.close();
      await factory.destroy?.(b);
    }
  }

  describe(`${name} backend conformance`, () => {
    test(`${name} get returns what put stored, and stat its size`, () =>
      withBackend(async (b) => {
        const data = randomBytes(1000);
        await b.put('config', data);
        await b.put('data/ab/ab01', Buffer.from('x'));
        assert.deepEqual(await b.get('config'), data);
        assert.deepEqual(await b.get('data/ab/ab01'), Buffer.from('x'));
        assert.deepEqual(await b.stat('config'), { path: 'config', sizeBytes: 1000 });
        assert.deepEqual(await b.stat('data/ab/ab01'), { path: 'data/ab/ab01', sizeBytes: 1 });
      }));

    test(`${name} putParts stores its parts back to back, empty parts and many parts included`, () =>
      withBackend(async (b) => {
        // 3000 parts: more than one writev takes (IOV_MAX is 1024), some empty, some large.
        const parts = Array.from({ length: 3000 }, (_, i) => (i % 7 === 3 ? Buffer.alloc(0) : randomBytes(i % 500 === 0 ? 70_000 : 1 + (i % 97))));
        await b.putParts('data/cd/cd01', parts);
        const whole = Buffer.concat(parts);
        assert.deepEqual(await b.get('data/cd/cd01'), whole);
        assert.deepEqual(await b.stat('data/cd/cd01'), { path: 'data/cd/cd01', sizeBytes: whole.length });
        await b.putParts('data/cd/cd02', []);
        assert.equal((await b.get('data/cd/cd02')).length, 0);
        await assert.rejects(b.putParts('Bad/Path', [Buffer.from('x')]), { code: 'OBJSTORE_INVALID' });
      }));

    test(`${name} writeObject stores its writes back to back at the path given at commit, and nothing before`, () =>
      withBackend(async (b) => {
        const parts = Array.from({ length: 200 }, (_, i) => randomBytes(i % 50 === 0 ? 70_000 : 1 + i));
        const w = b.writeObject('data');
        for (const p of parts.slice(0, 100)) w.write(p);
        await new Promise((resolve) => setTimeout(resolve, 20)); // writes in the background meanwhile
        for (const p of parts.slice(100)) w.write(p);
        const whole = Buffer.concat(parts);
        assert.equal(w.bytes, whole.length);
        assert.deepEqual(await b.list('data/'), [], 'no object before the commit');
        await w.commit('data/ef/ef01');
        assert.deepEqual(await b.get('data/ef/ef01'), whole);
        assert.deepEqual(await b.list('data/'), [{ path: 'data/ef/ef01', sizeBytes: whole.length }]);
        assert.deepEqual(await b.listTemporaries(), [], 'no temporary left behind');
        assert.throws(() => w.write(Buffer.from('x')), /committed or aborted/);
        await assert.rejects(w.commit('data/ef/ef02'), /committed or aborted/);
        // No write at all is an empty object.
        const empty = b.writeObject('data');
        await empty.commit('data/ef/ef03');
        assert.equal((await b.get('data/ef/ef03')).length, 0);
      }));

    test(`${name} writeObject aborted, or committed outside its directory, stores nothing and leaves nothing`, () =>
      withBackend(async (b) => {
        const a = b.writeObject('data');
        a.write(randomBytes(100_000));
        await a.abort();
        await a.abort(); // twice is no error
        const c = b.writeObject('data');
        c.write(randomBytes(1000));
        await rejectsWith(c.commit('index/0123'), ObjstoreErrorCode.INVALID);
        const d = b.writeObject('data');
        d.write(randomBytes(1000));
        await rejectsWith(d.commit('data/Bad'), ObjstoreErrorCode.INVALID);
        assert.throws(() => b.writeObject('Bad'), { code: 'OBJSTORE_INVALID' });
        assert.deepEqual(await b.list(''), []);
        assert.deepEqual(await b.listTemporaries(), []);
      }));

    test(`${name} empty objects are stored and read back`, () =>
      withBackend(async (b) => {
        await b.put('empty', Buffer.alloc(0));
        assert.equal((await b.get('empty')).length, 0);
        assert.deepEqual(await b.stat('empty'), { path: 'empty', sizeBytes: 0 });
      }));

    test(`${name} range get returns exactly the bytes asked for`, () =>
      withBackend(async (b) => {
        const data = randomBytes(10_000);
        await b.put('index/r', data);
        assert.deepEqual(await b.get('index/r', { offset: 0, length: 1 }), data.subarray(0, 1));
        assert.deepEqual(await b.get('index/r', { offset: 1234, length: 5000 }), data.subarray(1234, 6234));
        assert.deepEqual(await b.get('index/r', { offset: 9999, length: 1 }), data.subarray(9999));
        assert.deepEqual(await b.get('index/r', { offset: 0, length: 10_000 }), data);
      }));

    test(`${name} range get past the end or malformed is OBJSTORE_INVALID`, () =>
      withBackend(async (b) => {
        await b.put('index/r', randomBytes(100));
        await rejectsWith(b.get('index/r', { offset: 50, length: 51 }), ObjstoreErrorCode.INVALID);
        await rejectsWith(b.get('index/r', { offset: 100, length: 1 }), ObjstoreErrorCode.INVALID);
        await rejectsWith(b.get('index/r', { offset: -1, length: 1 }), ObjstoreErrorCode.INVALID);
        await rejectsWith(b.get('index/r', { offset: 0, length: 0 }), ObjstoreErrorCode.INVALID);
        await rejectsWith(b.get('index/r', { offset: 0.5, length: 1 }), ObjstoreErrorCode.INVALID);
      }));

    test(`${name} missing objects are OBJSTORE_NOT_FOUND for get and null for stat`, () =>
      withBackend(async (b) => {
        await rejectsWith(b.get('snapshots/none'), ObjstoreErrorCode.NOT_FOUND);
        await rejectsWith(b.get('snapshots/none', { offset: 0, length: 1 }), ObjstoreErrorCode.NOT_FOUND);
        assert.equal(await b.stat('snapshots/none'), null);
        await b.put('data/ab/abcd', Buffer.from('x'));
        // A "directory" is not an object.
        assert.equal(await b.stat('data/ab'), null);
        await rejectsWith(b.get('data/ab'), ObjstoreErrorCode.NOT_FOUND);
      }));

    test(`${name} list returns every object under a prefix with its size, and nothing else`, () =>
      withBackend(async (b) => {
        assert.deepEqual(await b.list(''), []);
        assert.deepEqual(await b.list('snapshots/'), []);
        await b.put('tessera-repository', Buffer.from('{}'));
        await b.put('snapshots/s1', Buffer.alloc(3));
        await b.put('snapshots/s2', Buffer.alloc(5));
        await b.put('snapshotsx', Buffer.alloc(1));
        await b.put('data/ab/ab01', Buffer.alloc(7));
        await b.put('data/ab/ab02', Buffer.alloc(8));
        await b.put('data/cd/cd01', Buffer.alloc(9));
        const snaps = (await b.list('snapshots/')).sort((x, y) => x.path.localeCompare(y.path));
        assert.deepEqual(snaps, [
          { path: 'snapshots/s1', sizeBytes: 3 },
          { path: 'snapshots/s2', sizeBytes: 5 },
        ]);
        assert.deepEqual(sortedPaths(await b.list('data/')), ['data/ab/ab01', 'data/ab/ab02', 'data/cd/cd01']);
        assert.deepEqual(sortedPaths(await b.list('data/ab/')), ['data/ab/ab01', 'data/ab/ab02']);
        assert.deepEqual(sortedPaths(await b.list('data/ab/ab0')), ['data/ab/ab01', 'data/ab/ab02']);
        assert.deepEqual(sortedPaths(await b.list('data/c')), ['data/cd/cd01']);
        assert.deepEqual(sortedPaths(await b.list('snapshots')), ['snapshots/s1', 'snapshots/s2', 'snapshotsx']);
        assert.deepEqual(await b.list('index/'), []);
        assert.equal((await b.list('')).length, 7);
      }));

    test(`${name} list of many objects returns all of them`, () =>
      withBackend(async (b) => {
        // Over 1000, the page size of S3's ListObjectsV2.
        const paths = Array.from({ length: 1100 }, (_, i) => `index/${i.toString(16).padStart(4, '0')}`);
        for (let i = 0; i < paths.length; i += 50) await Promise.all(paths.slice(i, i + 50).map((p) => b.put(p, Buffer.from(p))));
        assert.deepEqual(sortedPaths(await b.list('index/')), paths);
      }));

    test(`${name} put replaces an existing object whole`, () =>
      withBackend(async (b) => {
        await b.put('writers/w', randomBytes(5000));
        const second = randomBytes(10);
        await b.put('writers/w', second);
        assert.deepEqual(await b.get('writers/w'), second);
        assert.deepEqual(await b.stat('writers/w'), { path: 'writers/w', sizeBytes: 10 });
        assert.deepEqual(await b.list('writers/'), [{ path: 'writers/w', sizeBytes: 10 }]);
      }));

    test(`${name} delete removes the object and is idempotent`, () =>
      withBackend(async (b) => {
        await b.put('prune/p', Buffer.from('mark'));
        await b.delete('prune/p');
        assert.equal(await b.stat('prune/p'), null);
        await rejectsWith(b.get('prune/p'), ObjstoreErrorCode.NOT_FOUND);
        assert.deepEqual(await b.list('prune/'), []);
        await b.delete('prune/p');
        await b.delete('never/was');
      }));

    test(`${name} concurrent puts of one path leave exactly one of the values whole`, () =>
      withBackend(async (b) => {
        const values = Array.from({ length: 8 }, () => randomBytes(64 * 1024));
        await Promise.all(values.map((v) => b.put('snapshots/same', v)));
        const got = await b.get('snapshots/same');
        assert.ok(values.some((v) => v.equals(got)), 'the stored object is one of the values put');
        assert.deepEqual(sortedPaths(await b.list('snapshots/')), ['snapshots/same']);
      }));

    test(`${name} concurrent puts of different paths all land, readers never see a partial object`, () =>
      withBackend(async (b) => {
        const objects = Array.from({ length: 32 }, (_, i) => ({ path: `data/${(i % 4).toString(16).padStart(2, '0')}/o${i}`, data: randomBytes(16 * 1024 + i) }));
        let partial = 0;
        const readers = (async () => {
          for (let round = 0; round < 20; round++) {
            for (const o of objects) {
              const got = await b.get(o.path).catch((err: ObjstoreError) => {
                assert.equal(err.code, ObjstoreErrorCode.NOT_FOUND);
                return null;
              });
              if (got !== null && !got.equals(o.data)) partial++;
            }
          }
        })();
        await Promise.all(objects.map((o) => b.put(o.path, o.data)));
        await readers;
        assert.equal(partial, 0, 'no read saw a partial object');
        for (const o of objects) assert.deepEqual(await b.get(o.path), o.data);
        assert.equal((await b.list('data/')).length, objects.length);
      }));

    test(`${name} bad paths and prefixes are OBJSTORE_INVALID and touch nothing`, () =>
      withBackend(async (b) => {
        const bad = ['', '/abs', 'a//b', 'a/', '../x', 'a/../b', 'UPPER', 'sp ace', 'a\\b', '.hidden', 'a/.tmp', 'x'.repeat(600), 'é'];
        for (const path of bad) {
          await rejectsWith(b.put(path, Buffer.from('x')), ObjstoreErrorCode.INVALID);
          await rejectsWith(b.get(path), ObjstoreErrorCode.INVALID);
          await rejectsWith(b.stat(path), ObjstoreErrorCode.INVALID);
          await rejectsWith(b.delete(path), ObjstoreErrorCode.INVALID);
        }
        await rejectsWith(b.list('../'), ObjstoreErrorCode.INVALID);
        await rejectsWith(b.list('/'), ObjstoreErrorCode.INVALID);
        assert.deepEqual(await b.list(''), []);
      }));

    test(`${name} a large object round-trips intact, whole and by range`, () =>
      withBackend(async (b) => {
        const size = factory.largeObjectBytes ?? 40 * 1024 * 1024;
        const data = randomBytes(size);
        await b.put('data/ff/large', data);
        assert.deepEqual(await b.stat('data/ff/large'), { path: 'data/ff/large', sizeBytes: size });
        const got = await b.get('data/ff/large');
        assert.equal(got.length, size);
        assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'));
        const mid = Math.floor(size / 2);
        assert.deepEqual(await b.get('data/ff/large', { offset: mid, length: 1 << 20 }), data.subarray(mid, mid + (1 << 20)));
      }));
  });
}
