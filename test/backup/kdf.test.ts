/**
 * The wrapping key's derivation: derived once per process and password, and derived ahead by the
 * CLI while the backup modules load (src/cli/key-ahead.ts) for the key file the open tries first.
 */
import assert from 'node:assert/strict';
import { scryptSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { BackupErrorCode, Repository } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { parseKeyFile, wrappingKey, wrappingKeyKept } from '../../src/backup/kdf.ts';
import { deriveKeyAhead } from '../../src/cli/key-ahead.ts';
import { cleanup } from '../helpers/index.ts';
import { join, makeTempDir, password, smallRepo } from './harness.ts';

after(cleanup);

const cheap = { N: 1024, r: 8, p: 1 };

test('a wrapping key is scrypt of the password and salt, derived once per process', async () => {
  const salt = Buffer.alloc(16, 7);
  const a = wrappingKey('pw-a', salt, cheap);
  assert.equal(wrappingKey('pw-a', salt, cheap), a, 'the same derivation is not started twice');
  assert.notEqual(wrappingKey('pw-b', salt, cheap), a, 'another password is another key');
  assert.notEqual(wrappingKey('pw-a', Buffer.alloc(16, 8), cheap), a, 'another salt is another key');
  assert.deepEqual(await a, scryptSync('pw-a', salt, 32, cheap));
  assert.notDeepEqual(await wrappingKey('pw-b', salt, cheap), await a);
});

test('a failed derivation is not kept', async () => {
  const salt = Buffer.alloc(16, 9);
  const bad = { N: 1000, r: 8, p: 1 }; // N must be a power of two
  await assert.rejects(wrappingKey('pw', salt, bad));
  assert.equal(wrappingKeyKept('pw', salt, bad), false);
});

/** The first key file of a directory repository, in the order its backend lists them. */
function firstKeyFile(dir: string) {
  const name = readdirSync(join(dir, 'keys')).filter((n) => !n.startsWith('.'))[0]!;
  return parseKeyFile(readFileSync(join(dir, 'keys', name)), name);
}

test('the CLI derives a directory repository key ahead, for the password in TESSERA_PASSWORD only', async () => {
  const dir = makeTempDir('tessera-kdf-');
  const repo = join(dir, 'repo');
  await Repository.init(new DirBackend(repo), password, smallRepo);
  const f = firstKeyFile(repo);
  const salt = Buffer.from(f.salt, 'base64');

  deriveKeyAhead(['backup', 'list', '--repo', repo], {});
  deriveKeyAhead(['backup', 'list', '--repo', `s3://${repo}`], { TESSERA_PASSWORD: 'other' });
  deriveKeyAhead(['backup', 'list', '--repo', join(dir, 'none')], { TESSERA_PASSWORD: 'other' });
  assert.equal(wrappingKeyKept('other', salt, f), false);

  deriveKeyAhead(['backup', 'list', `--repo=${repo}`], { TESSERA_PASSWORD: 'wrong' });
  assert.equal(wrappingKeyKept('wrong', salt, f), true, 'derived for the password given');
  // The open uses the key derived ahead; a wrong password still fails as one.
  await assert.rejects(Repository.open(new DirBackend(repo), 'wrong'), (err: { code?: string }) => err.code === BackupErrorCode.WRONG_PASSWORD);

  deriveKeyAhead(['backup', 'list'], { TESSERA_PASSWORD: password, TESSERA_REPO: repo });
  assert.equal(wrappingKeyKept(password, salt, f), true, '--repo may come from TESSERA_REPO');
  const opened = await Repository.open(new DirBackend(repo), password);
  assert.equal(opened.id.length, 64);
});
