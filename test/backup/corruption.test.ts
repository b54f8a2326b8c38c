import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { backupFile, format } from '../../src/backup/index.ts';
import { backupSnapshotName, latestDiskRestorePoints, staleBackupSnapshots } from '../../src/backup/disk.ts';
import { scanIndex, scanMap } from '../../src/backup/scan.ts';
import { cleanup, testSeed } from '../helpers/index.ts';
import { assertFailure, cli, cliEnv, join, makeTempDir, openTestRepo, smallRepo, writeSeededImage } from './harness.ts';

after(cleanup);

/** Flips one byte of a file. */
function flipByte(path: string, at: number): void {
  const b = readFileSync(path);
  assert.ok(at >= 0 && at < b.length, `offset ${at} in ${b.length} bytes`);
  b[at] ^= 0x5a;
  writeFileSync(path, b);
}

describe('backup verify on damaged repositories', () => {
  let dir: string;
  let pristine: string;
  let env: Record<string, string | undefined>;
  let a: string;
  let b: string;
  /** A data pack only restore point a uses, and its first blob's offset. */
  let packOfA: string;
  /** Index file → the restore points that use a blob only it lists. */
  let indexUsers: Map<string, Set<string>>;

  before(async () => {
    const seed = testSeed({ diagnostic: (m) => console.log(m) });
    dir = makeTempDir('tessera-backup-damage-');
    pristine = join(dir, 'repo');
    const r = await openTestRepo(pristine, { init: smallRepo });
    env = cliEnv(r.cacheDir);
    try {
      writeSeededImage(join(dir, 'a'), seed, { chunks: 48, chunkSizeBytes: smallRepo.chunkSizeBytes! });
      writeSeededImage(join(dir, 'b'), seed + 1, { chunks: 48, chunkSizeBytes: smallRepo.chunkSizeBytes! });
      a = (await backupFile(r, join(dir, 'a'), { name: 'a' })).id;
      b = (await backupFile(r, join(dir, 'b'), { name: 'b' })).id;
      const index = await scanIndex(r.repo);
      const usedBy = new Map<string, Set<string>>();
      for (const id of [a, b]) {
        const scan = await scanMap(r.repo, r.pool, index, await r.repo.readSnapshot(id));
        for (const blob of scan.blobs) usedBy.set(blob, (usedBy.get(blob) ?? new Set()).add(id));
      }
      const onlyA = [...index.packs.values()].find(({ pack }) => pack.blobs[0][0] === format.BlobType.DATA && pack.blobs.every((x) => [...(usedBy.get(x[5].toString('hex')) ?? [])].join() === a));
      assert.ok(onlyA, 'a data pack only restore point a uses');
      packOfA = onlyA.pack.id.toString('hex');
      indexUsers = new Map();
      for (const [, { pack, indexIds }] of index.packs) {
        for (const indexId of indexIds) {
          const users = indexUsers.get(indexId) ?? new Set<string>();
          for (const x of pack.blobs) for (const u of usedBy.get(x[5].toString('hex')) ?? []) users.add(u);
          indexUsers.set(indexId, users);
        }
      }
    } finally {
      await r.close();
    }
    const clean = await cli(['backup', 'verify', '--repo', pristine, '--read-data'], env);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  });

  /** A copy of the pristine repository to damage. */
  function copy(name: string): string {
    const d = join(dir, name);
    rmSync(d, { recursive: true, force: true });
    cpSync(pristine, d, { recursive: true });
    return d;
  }

  async function verifyFails(repoDir: string, readData: boolean, subject: RegExp, affected: string[], unaffected: string[]): Promise<void> {
    const o = await cli(['backup', 'verify', '--repo', repoDir, ...(readData ? ['--read-data'] : [])], env);
    assert.equal(o.code, 1, `verify exits 1; stdout: ${o.stdout} stderr: ${o.stderr}`);
    assert.match(o.stdout, subject);
    for (const id of affected) assert.ok(o.stdout.includes(id), `names ${id}:\n${o.stdout}`);
    for (const id of unaffected) assert.ok(!o.stdout.includes(id), `does not name ${id}:\n${o.stdout}`);
    assert.match(o.stderr, /^tessera: error: verify found \d+ faults affecting \d+ restore points\n$/);
  }

  test('verify --read-data catches a flipped byte in a pack and names the restore point using it', async () => {
    const d = copy('pack-byte');
    const path = join(d, format.packPath(packOfA));
    flipByte(path, 100);
    const structural = await cli(['backup', 'verify', '--repo', d], env);
    assert.equal(structural.code, 0, 'the structure alone is intact');
    await verifyFails(d, true, new RegExp(`pack ${packOfA}: Pack ${packOfA} does not match its name`), [a], [b]);
    const o = await cli(['backup', 'verify', '--repo', d, '--read-data'], env);
    assert.match(o.stdout, /blob [0-9a-f]{64}: Blob [0-9a-f]{64} in pack [0-9a-f]{64} fails its authentication check/);
  });

  test('verify --read-data catches a flipped byte in a pack header', async () => {
    const d = copy('pack-header');
    const path = join(d, format.packPath(packOfA));
    flipByte(path, readFileSync(path).length - 10);
    await verifyFails(d, true, new RegExp(`Header of pack ${packOfA} fails its authentication check`), [a], [b]);
  });

  test('verify catches a missing pack without reading data', async () => {
    const d = copy('pack-missing');
    rmSync(join(d, format.packPath(packOfA)));
    await verifyFails(d, false, new RegExp(`Pack ${packOfA} is missing`), [a], [b]);
  });

  test('verify catches a flipped byte in an index file and names the restore points it indexed', async () => {
    const d = copy('index-byte');
    const [indexId, users] = [...indexUsers].find(([, u]) => u.size === 1)!;
    flipByte(join(d, 'index', indexId), 50);
    const user = [...users][0];
    await verifyFails(d, false, new RegExp(`index file ${indexId}: Index file ${indexId} does not match its name`), [user], [user === a ? b : a]);
  });

  test('verify catches a flipped byte in a restore point file and names it', async () => {
    const d = copy('snapshot-byte');
    flipByte(join(d, 'snapshots', b), 40);
    await verifyFails(d, false, new RegExp(`restore point ${b}: Restore point ${b} does not match its name`), [b], [a]);
  });

  test('restore of a damaged restore point fails with one line; the other still restores', async () => {
    const d = copy('restore-damaged');
    flipByte(join(d, format.packPath(packOfA)), 100);
    const bad = await cli(['backup', 'restore', a, '--repo', d, '--to-file', join(dir, 'out-a')], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^tessera: error: Blob [0-9a-f]{64} in pack [0-9a-f]{64} fails its authentication check \(damaged\)\n$/);
    const good = await cli(['backup', 'restore', b, '--repo', d, '--to-file', join(dir, 'out-b')], env);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(readFileSync(join(dir, 'out-b')).equals(readFileSync(join(dir, 'b'))));
  });

  test('a damaged restore point: list shows it and fails, policies and prune stop, disk backups pass it over, forget by id removes it', async () => {
    const d = copy('forget-damaged');
    flipByte(join(d, 'snapshots', b), 40);
    const advice = new RegExp(`restore point ${b.slice(0, 8)} is damaged: \`tessera backup verify\` says what it affects, \`tessera backup forget ${b.slice(0, 8)}\` removes it`);
    const list = await cli(['backup', 'list', '--repo', d], env);
    assertFailure(list, 1, advice);
    assert.match(list.stdout, new RegExp(`^${a.slice(0, 8)} .* file +a .* here$`, 'm'));
    assert.match(list.stdout, new RegExp(`^${b.slice(0, 8)} +- +damaged +- .* here$`, 'm'));
    const json = await cli(['backup', 'list', '--repo', d, '--json'], env);
    assert.equal(json.code, 1);
    assert.deepEqual(JSON.parse(json.stdout).map((e: { id: string; damaged?: boolean }) => [e.id, e.damaged === true]), [[a, false], [b, true]]);
    assertFailure(await cli(['backup', 'forget', '--repo', d, '--keep-last', '1'], env), 1, /Forget by policy stops: restore point/);
    assertFailure(await cli(['backup', 'prune', '--repo', d], env), 1, /Prune stops: restore point/);
    assertFailure(await cli(['backup', 'forget', '--repo', d, b.slice(0, 8), '--keep-last', '1'], env), 2, /ids or a policy .*, not both/);
    // The parents of disk backups: the damaged one is passed over; the snapshots interrupted
    // backups left are kept, as its base cannot be known.
    const r = await openTestRepo(d);
    try {
      assert.deepEqual((await latestDiskRestorePoints(r.repo, ['a', 'b'])).damaged, [b]);
      await assert.rejects(staleBackupSnapshots(r.repo, 'b', [backupSnapshotName(0, r.repo.id)], 'current'), { code: 'BACKUP_CORRUPT', message: advice });
    } finally {
      await r.close();
    }
    const dry = await cli(['backup', 'forget', '--repo', d, b.slice(0, 8), '--dry-run'], env);
    assert.equal(dry.stdout, `Would forget ${b.slice(0, 8)} (damaged)\n`);
    const gone = await cli(['backup', 'forget', '--repo', d, b.slice(0, 8), '--prune', '--grace', '0'], env);
    assert.equal(gone.code, 0, gone.stderr);
    assert.match(gone.stdout, new RegExp(`^Forgot ${b.slice(0, 8)} \\(damaged\\)\nPruned: `));
    assert.equal((await cli(['backup', 'list', '--repo', d], env)).code, 0);
    assert.equal((await cli(['backup', 'verify', '--repo', d, '--read-data'], env)).code, 0);
    assertFailure(await cli(['backup', 'forget', '--repo', d, b.slice(0, 8)], env), 1, new RegExp(`No restore point ${b.slice(0, 8)} in`));
  });
});
