/**
 * Every command that takes a restore point id follows an archived one into its archive through
 * the primary repository (docs/backup.md, "Archival"): `backup restore --to-disk`, `ls`, `cat`,
 * `restore-file` and `instant-restore` (the node reads the archive's copy with the archive's
 * password, and a resume after a node restart asks for that password again), against a real
 * node and an ext4 image of real files.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Repository, backupFile } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { cleanup, nbdcopy, seededBytes, startNode, type TesseraNode } from '../helpers/index.ts';
import { makeExtImage, walkTree } from '../helpers/fs-images.ts';
import { assertFailure, assertSameFile, cli, cliBytes, cliEnv, join, makeTempDir, openTestRepo, password, smallRepo } from './harness.ts';

const day = 86_400_000;
const archivePassword = 'the archive has a password of its own';
/** The copier's rate while a test needs chunks left missing: one 64 KiB chunk a second. */
const slowRate = String(64 * 1024);

let node: TesseraNode;
let dir: string;
let tree: string;
let image: string;
let primaryDir: string;
let archiveDir: string;
/** The restore point's id in the primary, and its copy's id in the archive. */
let id: string;
let copyId: string;
let env: Record<string, string | undefined>;

before(async () => {
  delete process.env.TESSERA_RESTORE_RATE;
  node = await startNode();
  dir = makeTempDir('tessera-archive-follow-');
  tree = join(dir, 'tree');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  mkdirSync(join(tree, 'data', 'sub'), { recursive: true });
  writeFileSync(join(tree, 'etc', 'hostname'), 'archived-host\n');
  // 4 MiB of random bytes: 64 chunks that take a minute to copy at the slow rate.
  writeFileSync(join(tree, 'data', 'big.bin'), seededBytes(1, 'big', 4 << 20));
  writeFileSync(join(tree, 'data', 'sub', 'odd.bin'), seededBytes(1, 'odd', 200_003));
  symlinkSync('../etc/hostname', join(tree, 'data', 'link'));
  image = join(dir, 'fs.img');
  await makeExtImage(image, tree, 'ext4', '16M');

  primaryDir = join(dir, 'primary');
  archiveDir = join(dir, 'archive');
  const p = await openTestRepo(primaryDir, { init: smallRepo, now: () => Date.now() - 40 * day });
  try {
    id = (await backupFile(p, image, { name: 'fs' })).id;
  } finally {
    await p.close();
  }
  await Repository.init(new DirBackend(archiveDir), archivePassword, smallRepo);
  env = cliEnv(p.cacheDir, { TESSERA_ARCHIVE_PASSWORD: archivePassword });
  const archived = await cli(['backup', 'archive', '--repo', primaryDir, '--archive-repo', archiveDir, '--older-than', '30d', '--json'], env);
  assert.equal(archived.code, 0, archived.stderr);
  const [line] = JSON.parse(archived.stdout).archived;
  assert.equal(line.id, id);
  copyId = line.archiveId;
  assert.deepEqual(readdirSync(join(primaryDir, 'snapshots')), [], 'the restore point is gone from the primary');
});
after(async () => {
  delete process.env.TESSERA_RESTORE_RATE;
  await node?.stop();
  await cleanup();
});

test('backup restore --to-disk follows an archived restore point into its archive: the disk is the image', async () => {
  const r = await cli(['--api', node.api, 'backup', 'restore', id.slice(0, 8), '--repo', primaryDir, '--to-disk', 'from-archive', '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.archive, archiveDir);
  assert.equal(out.id, copyId, 'the copy in the archive was read');
  assert.equal(out.created, true);
  const pulled = join(dir, 'from-archive.raw');
  await nbdcopy(node.nbdUri('from-archive'), pulled);
  assertSameFile(pulled, image);
  const text = await cli(['--api', node.api, 'backup', 'restore', id.slice(0, 8), '--repo', primaryDir, '--to-disk', 'from-archive', '--force'], env);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^Restored ${copyId.slice(0, 8)} \\(fs\\) from the archive at ${archiveDir} to disk from-archive: `));
});

test('backup ls, cat and restore-file follow an archived restore point into its archive', async () => {
  const ls = await cli(['backup', 'ls', id.slice(0, 8), '/data', '--repo', primaryDir], env);
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(ls.stdout.split('\n').filter((l) => l !== ''), ['big.bin', 'link', 'sub/']);
  const long = await cli(['backup', 'ls', id.slice(0, 8), '/data', '--long', '--repo', primaryDir], env);
  assert.match(long.stdout, /link -> \.\.\/etc\/hostname\n/);

  for (const path of ['/data/big.bin', '/data/sub/odd.bin', '/etc/hostname']) {
    const cat = await cliBytes(['backup', 'cat', id.slice(0, 8), path, '--repo', primaryDir], env);
    assert.equal(cat.code, 0, cat.stderr);
    assert.ok(cat.stdout.equals(readFileSync(join(tree, path))), `backup cat ${path} gives the file's bytes`);
  }

  const to = makeTempDir('tessera-archive-follow-files-');
  const rf = await cli(['backup', 'restore-file', id.slice(0, 8), '/data', '--to', to, '--repo', primaryDir, '--json'], env);
  assert.equal(rf.code, 0, rf.stderr);
  assert.deepEqual(JSON.parse(rf.stdout), { path: '/data', to: join(to, 'data'), files: 2, dirs: 2, links: 1, skipped: 0, bytes: (4 << 20) + 200_003 });
  const seconds = (m: Map<string, object>) => new Map([...m].map(([k, v]) => [k, { ...v, mtimeMs: Math.floor((v as { mtimeMs: number }).mtimeMs / 1000) }]));
  assert.deepEqual(seconds(walkTree(join(to, 'data'))), seconds(walkTree(join(tree, 'data'))));
  for (const f of ['big.bin', 'sub/odd.bin']) assert.ok(readFileSync(join(to, 'data', f)).equals(readFileSync(join(tree, 'data', f))));

  // The archive is opened with the archive's password: the primary's does not open it.
  const noArchivePassword = { ...env, TESSERA_ARCHIVE_PASSWORD: undefined };
  assertFailure(await cli(['backup', 'ls', id.slice(0, 8), '/', '--repo', primaryDir], noArchivePassword), 1, /Wrong password for the repository at .*archive.*TESSERA_ARCHIVE_PASSWORD/);
});

interface Info {
  disk: string;
  repo: string;
  snapshot: string;
  state: string;
  chunksMissing: number;
  archivedFrom: { repo: string; snapshot: string } | null;
}

async function status(disk: string): Promise<Info> {
  const o = await cli(['--api', node.api, 'backup', 'instant-restore', 'status', '--json'], env);
  assert.equal(o.code, 0, o.stderr);
  const found = (JSON.parse(o.stdout) as Info[]).find((i) => i.disk === disk);
  assert.ok(found, `no instant restore of ${disk}: ${o.stdout}`);
  return found;
}

test('backup instant-restore of an archived restore point: the node reads the copy with the archive password; resume asks for that password again', async () => {
  process.env.TESSERA_RESTORE_RATE = slowRate;
  await node.restart();
  // The API checks archivedFrom at the boundary: an object naming a primary and a whole restore point id.
  const post = async (archivedFrom: unknown) => {
    const body = { disk: 'refused', repo: archiveDir, snapshot: copyId, password: archivePassword, archivedFrom };
    const res = await fetch(`${node.api}/api/v1/instant-restores`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const { code, message } = ((await res.json()) as { error: { code: string; message: string } }).error;
    return { status: res.status, error: { code, message } };
  };
  assert.deepEqual(await post('x'), { status: 400, error: { code: 'BAD_REQUEST', message: "Field 'archivedFrom' must be an object {repo, snapshot}" } });
  assert.equal((await post({ repo: primaryDir })).error.message, "In 'archivedFrom': Missing field 'snapshot'");
  const short = await post({ repo: primaryDir, snapshot: id.slice(0, 8) });
  assert.equal(short.status, 400);
  assert.match(short.error.message, /archivedFrom must be \{repo, snapshot\}/);
  const start = await cli(['--api', node.api, 'backup', 'instant-restore', id.slice(0, 8), '--repo', primaryDir, '--to-disk', 'instant'], env);
  assert.equal(start.code, 0, `${start.stderr}\nnode log: ${node.logTail().slice(-2000)}`);
  assert.match(start.stdout, new RegExp(`^Disk instant is served from restore point ${id.slice(0, 8)}, archived to ${archiveDir} as ${copyId.slice(0, 8)} `));
  const started = await status('instant');
  assert.equal(started.repo, archiveDir, 'the node reads the archive');
  assert.equal(started.snapshot, copyId);
  assert.deepEqual(started.archivedFrom, { repo: primaryDir, snapshot: id });
  // The state file says where the restore point came from, and holds no password.
  const state = readFileSync(join(node.dataDir, 'instant-restore', 'instant.json'), 'utf8');
  assert.deepEqual(JSON.parse(state).archivedFrom, { repo: primaryDir, snapshot: id });
  for (const pw of [password, archivePassword]) assert.ok(!state.includes(pw), 'no password in the state file');

  // A node restart drops the password; the restore waits for the archive's, not the primary's.
  delete process.env.TESSERA_RESTORE_RATE;
  await node.restart();
  const waiting = await status('instant');
  assert.equal(waiting.state, 'needs-password');
  assert.ok(waiting.chunksMissing > 0);
  const primaryOnly = await cli(['--api', node.api, 'backup', 'instant-restore', 'resume', 'instant'], { ...env, TESSERA_ARCHIVE_PASSWORD: undefined });
  assertFailure(primaryOnly, 1, /Wrong password/);
  const resumed = await cli(['--api', node.api, 'backup', 'instant-restore', 'resume', 'instant'], env);
  assert.equal(resumed.code, 0, resumed.stderr);

  const pulled = join(dir, 'instant.raw');
  await nbdcopy(node.nbdUri('instant'), pulled);
  assertSameFile(pulled, image);
  for (let i = 0; (await status('instant')).state !== 'done'; i++) {
    assert.ok(i < 1800, `the instant restore is not done: ${JSON.stringify(await status('instant'))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const final = join(dir, 'instant-done.raw');
  await nbdcopy(node.nbdUri('instant'), final);
  assertSameFile(final, image);
});
