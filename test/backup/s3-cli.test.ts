/**
 * The tessera CLI (bin/tessera as a child process, as a user runs it) with a repository in a
 * bucket of a real S3 server (radosgw, test/helpers/s3.ts), configured by the AWS variables.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { cleanup } from '../helpers/index.ts';
import { startS3Server, type S3Server } from '../helpers/s3.ts';
import { assertFailure, assertSameFile, cliEnv, join, makeTempDir, tessera, writeSeededImage } from './harness.ts';

let server: S3Server;
let dir: string;
let env: Record<string, string | undefined>;
const repo = 's3://tessera-cli/hosts/web1';

before(async () => {
  server = await startS3Server();
  await server.createBucket('tessera-cli');
  dir = makeTempDir('tessera-s3-cli-');
  env = cliEnv(makeTempDir('tessera-backup-cache-'), { ...server.env });
});
after(async () => {
  await server?.stop();
  await cleanup();
});

async function ok(args: string[], extraEnv: Record<string, string | undefined> = {}): Promise<string> {
  const r = await tessera(args, { ...env, ...extraEnv });
  assert.equal(r.code, 0, `tessera ${args.join(' ')}: ${r.stderr}\n${server.logTail()}`);
  return r.stdout;
}

test('backup into S3: init, file, list, verify --read-data and a byte-identical restore; a second backup adds no chunk', async () => {
  assert.match(await ok(['backup', 'init', '--repo', repo, '--chunk-size', '64K']), /^Created backup repository [0-9a-f]{8} at s3:\/\/tessera-cli\/hosts\/web1 /);
  const image = join(dir, 'image');
  writeSeededImage(image, 11, { chunks: 48, chunkSizeBytes: 64 * 1024, tailCutBytes: 1000 });

  const first = JSON.parse(await ok(['backup', 'file', image, '--repo', repo, '--name', 'vm1', '--json']));
  assert.ok(first.stats.chunksNew > 0);
  const second = JSON.parse(await ok(['backup', 'file', image, '--repo', repo, '--name', 'vm1', '--json']));
  assert.equal(second.stats.chunksNew, 0, 'the same image again stores no new chunk');

  const list = JSON.parse(await ok(['backup', 'list', '--repo', repo, '--json']));
  assert.deepEqual(list.map((s: { id: string }) => s.id).sort(), [first.id, second.id].sort());
  assert.match(await ok(['backup', 'verify', '--read-data', '--repo', repo]), /no faults/);

  const out = join(dir, 'restored');
  await ok(['backup', 'restore', first.id, '--repo', repo, '--to-file', out]);
  assertSameFile(out, image);
});

test('S3 failures reach the CLI user as one line naming the cause: wrong secret, missing bucket, no server', async () => {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  assertFailure(
    await tessera(['backup', 'list', '--repo', repo], { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' }),
    1,
    new RegExp(`S3 refused access to ${escape(repo)} at ${escape(server.endpoint)}: SignatureDoesNotMatch`),
  );
  assertFailure(
    await tessera(['backup', 'init', '--repo', 's3://no-such-bucket/repo'], env),
    1,
    new RegExp(`No bucket no-such-bucket at ${escape(server.endpoint)}`),
  );
  // A port nothing listens on: connection refused, retried, then reported.
  assertFailure(
    await tessera(['backup', 'list', '--repo', repo], { ...env, AWS_ENDPOINT_URL: 'http://127.0.0.1:1' }),
    1,
    /Cannot reach S3 endpoint http:\/\/127\.0\.0\.1:1 .* ECONNREFUSED/,
  );
});
