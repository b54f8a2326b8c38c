/**
 * Archival into a repository in a bucket of a real S3 server (radosgw, test/helpers/s3.ts): the
 * primary in a directory, the archive in S3 with its own password, restored through the primary.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { backupFile } from '../../src/backup/index.ts';
import { cleanup, testSeed } from '../helpers/index.ts';
import { startS3Server } from '../helpers/s3.ts';
import { assertSameFile, cliEnv, join, makeTempDir, openTestRepo, smallRepo, tessera, writeSeededImage } from './harness.ts';

after(cleanup);

test('backup archive into an S3 archive repository, then restore through the primary byte-exact', async (t) => {
  const seed = testSeed(t);
  const server = await startS3Server();
  try {
    await server.createBucket('tessera-archive');
    const dir = makeTempDir('tessera-s3-archive-');
    const image = join(dir, 'image');
    writeSeededImage(image, seed, { chunks: 40, chunkSizeBytes: smallRepo.chunkSizeBytes!, tailCutBytes: 7 });
    const p = await openTestRepo(join(dir, 'primary'), { init: smallRepo, now: () => Date.now() - 10 * 86_400_000 });
    const b = await backupFile(p, image, { name: 'vm', tenant: 'acme' });
    await p.close();
    const archive = 's3://tessera-archive/cold';
    const env = cliEnv(p.cacheDir, { ...server.env, TESSERA_ARCHIVE_PASSWORD: 'archive secret' });
    const ok = async (args: string[], extra: Record<string, string | undefined> = {}) => {
      const r = await tessera(args, { ...env, ...extra });
      assert.equal(r.code, 0, `tessera ${args.join(' ')}: ${r.stderr}\n${server.logTail()}`);
      return r.stdout;
    };
    await ok(['backup', 'init', '--repo', archive, '--chunk-size', '64K'], { TESSERA_PASSWORD: 'archive secret' });
    const out = JSON.parse(await ok(['backup', 'archive', '--repo', join(dir, 'primary'), '--archive-repo', archive, '--older-than', '7d', '--tenant', 'acme', '--json']));
    assert.deepEqual(out.archived.map((l: { id: string }) => l.id), [b.id]);
    assert.ok(out.archived[0].chunksVerified > 0);
    const restored = join(dir, 'restored');
    const r = JSON.parse(await ok(['backup', 'restore', b.id.slice(0, 10), '--repo', join(dir, 'primary'), '--to-file', restored, '--json']));
    assert.equal(r.archive, archive);
    assertSameFile(restored, image);
    assert.match(await ok(['backup', 'verify', '--read-data', '--repo', archive], { TESSERA_PASSWORD: 'archive secret' }), /no faults/);
  } finally {
    await server.stop();
  }
});
