/**
 * The file catalog format, version 1 (docs/backup.md, "File catalogs"): golden vectors of a root
 * and a part blob that must keep decoding, refusal of other versions and damaged objects, and
 * catalog order.
 */
import assert from 'node:assert/strict';
import { pack } from 'msgpackr';
import { test } from 'node:test';
import { BackupError, BackupErrorCode, normalisePath } from '../../src/backup/index.ts';
import { comparePaths, decodeCatalogPart, decodeCatalogRoot } from '../../src/backup/catalog.ts';

/** A v1 part: three entries of `/` (file, directory, symlink) and a file over 4 GiB in `/d`. */
const partV1 = Buffer.from(
  'de0002a776657273696f6e01a4646972739292a12f9399a5612e747874a166cd01a4000005cb4271f71fb0450000c09300ce001000000599a164a164cd01edcd03e8cd03e8cd1000cb4271f71fb0838000c0c099a16ca16ccd01ff000005cb4271f71fb0c20000a5612e747874c092a22f649199a468756765a166cd01800000cb41f4000000000000cb4271f71fb1008000c09600ce00200000cd1000cb41f0000100000000cb41f8000000000000cd1000',
  'hex',
);
/** A v1 root: an MBR disk with one ext4 partition, one part. */
const rootV1 = Buffer.from(
  'de0005a6666f726d6174b4746573736572612d66696c652d636174616c6f67a776657273696f6e01a57461626c65a36d6272a7766f6c756d657391de0009a470617468a32f7031a9706172746974696f6ede0004a66e756d62657201aa73746172744279746573ce00100000a973697a654279746573ce00800000a474797065a23833a26673a465787434a56c6162656ca4726f6f74a475756964d92430303131323233332d343435352d363637372d383839392d616162626363646465656666a6737461747573a26f6ba56572726f72c0a566696c657304a56279746573cb41f4000000500000a5706172747391de0003a26964c420ababababababababababababababababababababababababababababababababa56669727374a12fa46c617374a22f64',
  'hex',
);

test('catalog format v1: a golden part decodes to its listings', () => {
  const dirs = decodeCatalogPart(partV1);
  assert.deepEqual(
    dirs.map(([d, es]) => [d, es.map((e) => e.name)]),
    [
      ['/', ['a.txt', 'd', 'l']],
      ['/d', ['huge']],
    ],
  );
  const [a, d, l] = dirs[0][1];
  assert.deepEqual(a, { name: 'a.txt', type: 'f', mode: 0o644, uid: 0, gid: 0, sizeBytes: 5, mtimeMs: 1234567890000, target: null, extents: [0, 1048576, 5] });
  assert.deepEqual([d.type, d.mode, d.uid, d.gid, d.extents], ['d', 0o755, 1000, 1000, null]);
  assert.deepEqual([l.type, l.target], ['l', 'a.txt']);
  assert.deepEqual(dirs[1][1][0].extents, [0, 2097152, 4096, 2 ** 32 + 4096, 6 * 2 ** 30, 4096]);
  assert.equal(dirs[1][1][0].sizeBytes, 5 * 2 ** 30);
});

test('catalog format v1: a golden root decodes to its volumes and parts', () => {
  const root = decodeCatalogRoot(rootV1);
  assert.equal(root.table, 'mbr');
  assert.deepEqual(root.volumes, [
    { path: '/p1', partition: { number: 1, startBytes: 1048576, sizeBytes: 8388608, type: '83' }, fs: 'ext4', label: 'root', uuid: '00112233-4455-6677-8899-aabbccddeeff', status: 'ok', error: null, files: 4, bytes: 5368709125 },
  ]);
  assert.deepEqual(root.parts.map((p) => [p.id.toString('hex'), p.first, p.last]), [['ab'.repeat(32), '/', '/d']]);
});

test('catalog objects of another version are BACKUP_UNSUPPORTED; damaged ones BACKUP_CORRUPT', () => {
  const is = (code: string) => (err: unknown) => err instanceof BackupError && err.code === code;
  assert.throws(() => decodeCatalogRoot(pack({ format: 'tessera-file-catalog', version: 2, volumes: [], parts: [] })), is(BackupErrorCode.UNSUPPORTED));
  assert.throws(() => decodeCatalogPart(pack({ version: 2, dirs: [] })), is(BackupErrorCode.UNSUPPORTED));
  assert.throws(() => decodeCatalogRoot(pack({ format: 'something-else', version: 1, volumes: [], parts: [] })), is(BackupErrorCode.CORRUPT));
  assert.throws(() => decodeCatalogRoot(Buffer.from('c1', 'hex')), is(BackupErrorCode.CORRUPT));
  assert.throws(() => decodeCatalogPart(pack({ version: 1, dirs: [['/', [['x', 'q', 0, 0, 0, 0, 0, null, null]]]] })), is(BackupErrorCode.CORRUPT));
  assert.throws(() => decodeCatalogPart(pack({ version: 1, dirs: [['/', [['x', 'f', 0, 0, 0, 0, 0, null, [1, 2]]]]] })), is(BackupErrorCode.CORRUPT));
  // One flipped byte anywhere in the golden part: decoded or refused with a BackupError, never a crash.
  for (let i = 0; i < partV1.length; i++) {
    const bad = Buffer.from(partV1);
    bad[i] ^= 0x5a;
    try {
      decodeCatalogPart(bad);
    } catch (err) {
      assert.ok(err instanceof BackupError, `byte ${i}: ${String(err)}`);
    }
  }
});

test('catalog order compares paths component by component, as UTF-8 bytes, a prefix first', () => {
  const paths = ['/a b', '/a/b', '/a', '/', '/p10', '/p2', '/p1/x', '/p1', '/é', '/z', '/a/b/c', '/ab'];
  assert.deepEqual(paths.sort(comparePaths), ['/', '/a', '/a/b', '/a/b/c', '/a b', '/ab', '/p1', '/p1/x', '/p10', '/p2', '/z', '/é']);
  assert.equal(normalisePath('a//b/./c/'), '/a/b/c');
  assert.equal(normalisePath(''), '/');
  assert.throws(() => normalisePath('/a/../b'), (err: unknown) => err instanceof BackupError && err.code === BackupErrorCode.INVALID);
});
