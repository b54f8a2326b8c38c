import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { BackupError, BackupErrorCode, format, parseKeyFile, seal } from '../../src/backup/index.ts';
import { blobId, makeKeyFile, sealBlob, tryOpen, unwrapKeyFile } from '../../src/backup/crypto.ts';
import { parsePackTail } from '../../src/backup/pack.ts';
import { cleanup } from '../helpers/index.ts';
import { cli, cliEnv, join, makeTempDir, openTestRepo, password, sha256File } from './harness.ts';

after(cleanup);

const isCorrupt = (err: unknown) => err instanceof BackupError && err.code === BackupErrorCode.CORRUPT;

test('pack header entries encode to the documented 42-byte layout (golden vector)', () => {
  const entries = [
    { type: format.BlobType.DATA, flags: 1, storedLength: 0x1234, plainLength: 0x100000, id: Buffer.alloc(32, 0xaa) },
    { type: format.BlobType.META, flags: 0, storedLength: 131100, plainLength: 131072, id: Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex') },
  ] as const;
  const golden =
    '0001' + '34120000' + '00001000' + 'aa'.repeat(32) +
    '0100' + '1c000200' + '00000200' + '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
  const bytes = format.encodePackEntries(entries);
  assert.equal(bytes.toString('hex'), golden);
  assert.equal(format.headerEntryBytes, 42);
  assert.deepEqual(format.decodePackEntries(bytes, 'test'), entries.map((e) => ({ ...e, id: Buffer.from(e.id) })));
  assert.throws(() => format.decodePackEntries(bytes.subarray(1), 'test'), isCorrupt);
  const badType = Buffer.from(bytes);
  badType[0] = 7;
  assert.throws(() => format.decodePackEntries(badType, 'test'), isCorrupt);
  const badFlags = Buffer.from(bytes);
  badFlags[1] = 2;
  assert.throws(() => format.decodePackEntries(badFlags, 'test'), isCorrupt);
});

test('seal is nonce, AES-256-GCM ciphertext, tag (golden vector, as the Python cryptography package computes it)', () => {
  const sealed = seal(Buffer.alloc(32, 1), Buffer.from('tessera'), Buffer.alloc(12, 2));
  assert.equal(sealed.toString('hex'), '020202020202020202020202' + '73b3ba3a2f25a0' + '714f894808e52be7e6a3f382f8742f60');
  assert.deepEqual(tryOpen(Buffer.alloc(32, 1), sealed), Buffer.from('tessera'));
  assert.equal(tryOpen(Buffer.alloc(32, 9), sealed), null, 'another key fails the tag');
  for (let i = 0; i < sealed.length; i++) {
    const damaged = Buffer.from(sealed);
    damaged[i] ^= 1;
    assert.equal(tryOpen(Buffer.alloc(32, 1), damaged), null, `a flipped bit at byte ${i} fails the tag`);
  }
});

test('blob ids are HMAC-SHA-256 of the plaintext under idKey (golden vector, as openssl dgst -mac HMAC computes it)', () => {
  assert.equal(blobId(Buffer.alloc(32, 5), Buffer.from('chunk')).toString('hex'), '144ee908ecd0dc8b8be49045dfdafea0d8e9f60a581693544c99f8dfbe992580');
});

test('blobs are compressed only when that saves at least 1/16', () => {
  const key = Buffer.alloc(32, 1);
  const text = Buffer.from('a'.repeat(65536));
  assert.equal(sealBlob(key, text).flags, format.BlobFlag.COMPRESSED);
  assert.ok(sealBlob(key, text).sealed.length < 1000);
  const random = createHash('sha512').update('x').digest();
  const noise = Buffer.concat(Array.from({ length: 1024 }, (_, i) => createHash('sha512').update(random).update(String(i)).digest()));
  const s = sealBlob(key, noise);
  assert.equal(s.flags, 0);
  assert.equal(s.sealed.length, noise.length + format.sealOverheadBytes);
});

test('key files have the documented JSON shape and unwrap only with their password (golden vector)', async () => {
  const master = Buffer.from(Array.from({ length: 64 }, (_, i) => i));
  const bytes = await makeKeyFile(master, 'password', { created: '2026-01-01T00:00:00.000Z', hostname: 'host', username: 'user' }, { salt: Buffer.alloc(16, 3), nonce: Buffer.alloc(12, 4) });
  assert.equal(
    bytes.toString(),
    '{"version":1,"kdf":"scrypt","N":32768,"r":8,"p":1,"salt":"AwMDAwMDAwMDAwMDAwMDAw==",' +
      '"data":"BAQEBAQEBAQEBAQEy8G/RrWtBSnzgX2FB+p2FdM1rnHR7QRtSwW/EkdRaZpgPNE4S1t18jn0nZ6qdtZtil81TU1I6q2D/gWhOaqFY8tifkro/lkbo0UT9qTQGQk=",' +
      '"created":"2026-01-01T00:00:00.000Z","hostname":"host","username":"user"}\n',
  );
  const f = parseKeyFile(bytes, 'key');
  assert.deepEqual(await unwrapKeyFile(f, 'password'), master);
  assert.equal(await unwrapKeyFile(f, 'Password'), null);
  assert.throws(() => parseKeyFile(Buffer.from('{"version":1,"kdf":"argon2"}'), 'key'), isCorrupt);
  assert.throws(() => parseKeyFile(Buffer.from('nope'), 'key'), isCorrupt);
  assert.throws(
    () => parseKeyFile(Buffer.from(bytes.toString().replace('"version":1', '"version":2')), 'key'),
    (err: unknown) => err instanceof BackupError && err.code === BackupErrorCode.UNSUPPORTED,
  );
});

test('a pack tail parses only when the header is intact and accounts for every byte', () => {
  const keys = { encKey: Buffer.alloc(32, 1), idKey: Buffer.alloc(32, 2) };
  const blobs = [Buffer.alloc(100, 1), Buffer.alloc(50, 2)];
  const entries = blobs.map((b, i) => ({ type: format.BlobType.DATA, flags: 0, storedLength: b.length, plainLength: b.length - 28, id: Buffer.alloc(32, i) }));
  const header = seal(keys.encKey, format.encodePackEntries(entries));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  const pack = Buffer.concat([...blobs, header, len]);
  assert.deepEqual(parsePackTail(keys, pack, pack.length, 'p'), entries);
  assert.deepEqual(parsePackTail(keys, pack.subarray(100), pack.length, 'p'), entries, 'the tail alone is enough');
  assert.equal(parsePackTail(keys, pack.subarray(pack.length - 10), pack.length, 'p', true), header.length + 4, 'a short tail says how much it needs');
  assert.throws(() => parsePackTail(keys, Buffer.concat([Buffer.alloc(1), pack]), pack.length + 1, 'p'), isCorrupt);
  const damaged = Buffer.from(pack);
  damaged[160] ^= 1;
  assert.throws(() => parsePackTail(keys, damaged, pack.length, 'p'), isCorrupt);
  const badLength = Buffer.from(pack);
  badLength.writeUInt32LE(0xffffff, pack.length - 4);
  assert.throws(() => parsePackTail(keys, badLength, pack.length, 'p'), isCorrupt);
});

const fixture = fileURLToPath(new URL('../fixtures/backup-repo-v1', import.meta.url));
/** The fixture's passwords (two key files), restore points and the SHA-256 of their images. */
const fixturePasswords = ['tessera-fixture-v1', 'second fixture password'];
const fixtureRestorePoints = {
  '2bf71ef6ad45ac2db5e17dc77c457f57f360909221e42539c644b2c02ea5b1ad': 'e037918d22241ca39e88287bceeebfc431defaab35a1652c65a68372e265a862',
  '437782a1817423bcc6d24544b1bbf2cb3d12d0459349ed7ae5d73e7dcac4bd20': 'b8d817e80f02d9d822110a101241f8933d040e280ad63d4b5ce648a0600b3689',
};

test('the format v1 fixture repository opens with both passwords, verifies clean and restores byte-exact', async () => {
  assert.deepEqual(JSON.parse(readFileSync(join(fixture, 'tessera-repository'), 'utf8')).version, 1);
  assert.deepEqual(readdirSync(join(fixture, 'snapshots')).sort(), Object.keys(fixtureRestorePoints).sort());
  for (const pw of fixturePasswords) {
    const o = await cli(['backup', 'list', '--repo', fixture, '--json'], { ...cliEnv(makeTempDir('tessera-fixture-cache-')), TESSERA_PASSWORD: pw });
    assert.equal(o.code, 0, o.stderr);
    assert.deepEqual(JSON.parse(o.stdout).map((s: { id: string }) => s.id).sort(), Object.keys(fixtureRestorePoints).sort());
  }
  // openTestRepo opens with the harness password, which is not the fixture's: check that fails.
  await assert.rejects(openTestRepo(fixture), (err: unknown) => err instanceof BackupError && err.code === BackupErrorCode.WRONG_PASSWORD);
  assert.notEqual(password, fixturePasswords[0]);

  const env = { ...cliEnv(makeTempDir('tessera-fixture-cache-')), TESSERA_PASSWORD: fixturePasswords[0] };
  const v = await cli(['backup', 'verify', '--repo', fixture, '--read-data', '--json'], env);
  assert.equal(v.code, 0, v.stdout);
  const report = JSON.parse(v.stdout);
  assert.deepEqual(report.faults, []);
  assert.ok(report.packsRead >= 2 && report.blobsChecked >= 5, `read ${report.packsRead} packs, ${report.blobsChecked} blobs`);
  const dir = makeTempDir('tessera-fixture-');
  for (const [id, sha] of Object.entries(fixtureRestorePoints)) {
    const out = join(dir, id);
    const o = await cli(['backup', 'restore', id, '--repo', fixture, '--to-file', out], env);
    assert.equal(o.code, 0, o.stderr);
    assert.equal(sha256File(out), sha, `restore point ${id} restores its image`);
  }
});
