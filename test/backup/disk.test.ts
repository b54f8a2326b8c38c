/**
 * Disk backups through a real node: `tessera backup create` of disks written over NBD (nbdcopy,
 * qemu-io), incremental from changed-block tracking, consistency groups, hooks, the fallback to
 * a full backup, kill -9, and `backup restore --to-disk`.
 */
import assert from 'node:assert/strict';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type DiskSnapshotSource } from '../../src/backup/index.ts';
import { backupDisk, catalogReadPageBytes } from '../../src/backup/disk.ts';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  assertFilesEqual, cleanup, nbdcopy, qemuIo, requireTool, run, runOk, seededBytes, spawnTracked, startNode, testSeed, tesseraBin, writeSeededFile,
  type RunResult, type TesseraNode,
} from '../helpers/index.ts';
import { assertSameFile, cliBytes, cliEnv, join, makeTempDir, openTestRepo, smallRepo } from './harness.ts';

let node: TesseraNode;
let dir: string;
const MiB = 1 << 20;

before(async () => {
  node = await startNode();
  dir = makeTempDir('tessera-disk-backup-');
});
after(cleanup);

/** A fresh repository (default chunk size unless `init` says otherwise), its id and the CLI environment for it. */
async function newRepo(name: string, init = {}): Promise<{ repo: string; id: string; env: NodeJS.ProcessEnv }> {
  const repo = join(dir, name);
  const r = await openTestRepo(repo, { init });
  await r.close();
  return { repo, id: r.repo.id, env: { ...process.env, ...cliEnv(r.cacheDir) } as NodeJS.ProcessEnv };
}

/** Names of node snapshots that backups into the repository `repoId` take. */
function backupSnapshotOf(repoId: string): RegExp {
  return new RegExp(`^backup-\\d{4}-\\d\\d-\\d\\dT\\d\\d-\\d\\d-\\d\\d-\\d{3}Z-${repoId.slice(0, 16)}$`);
}

/** Runs `tessera --api NODE args` with the repository's environment. */
function tessera(env: NodeJS.ProcessEnv, args: string[]): Promise<RunResult> {
  const api = args[1] === 'create' || args[1] === 'restore' ? ['--api', node.api] : [];
  return run(tesseraBin, [...api, ...args], { env, timeoutMs: 300_000 });
}

async function tesseraJson(env: NodeJS.ProcessEnv, args: string[]): Promise<any> {
  const r = await tessera(env, [...args, '--json']);
  assert.equal(r.code, 0, `tessera ${args.join(' ')}: ${r.stderr}\nnode log: ${node.logTail().slice(-2000)}`);
  return JSON.parse(r.stdout);
}

async function snapshotsOf(disk: string): Promise<string[]> {
  return ((await node.cliJson(['snap', 'list', disk])) as { name: string }[]).map((s) => s.name);
}

/** Writes the 4 KiB blocks where `next` differs from `prev` to `uri` with qemu-io, one run per write. */
async function writeChangedBlocks(prev: string, next: string, uri: string): Promise<{ blocks: number; runs: number }> {
  const a = await readFile(prev);
  const b = await readFile(next);
  assert.equal(a.length, b.length);
  const runs: { from: number; to: number }[] = [];
  for (let off = 0; off < b.length; off += 4096) {
    if (a.subarray(off, off + 4096).equals(b.subarray(off, off + 4096))) continue;
    const last = runs.at(-1);
    if (last && last.to === off) last.to += 4096;
    else runs.push({ from: off, to: off + 4096 });
  }
  const commands: string[] = [];
  for (const [i, r] of runs.entries()) {
    const patch = join(dir, `patch-${i}`);
    await writeFile(patch, b.subarray(r.from, r.to));
    commands.push(`write -q -s ${patch} ${r.from} ${r.to - r.from}`);
  }
  for (let i = 0; i < commands.length; i += 200) {
    const res = await qemuIo(uri, [...commands.slice(i, i + 200), 'flush']);
    assert.equal(res.code, 0, res.stderr + res.stdout);
  }
  return { blocks: runs.reduce((n, r) => n + (r.to - r.from) / 4096, 0), runs: runs.length };
}

/** `backup cat ID FILE` as bytes; fails unless it succeeded. */
async function catFile(env: NodeJS.ProcessEnv, repo: string, id: string, path: string): Promise<Buffer> {
  const r = await cliBytes(['backup', 'cat', id, path, '--repo', repo], env);
  assert.equal(r.code, 0, `backup cat ${id} ${path}: ${r.stderr}`);
  return r.stdout;
}

/** Compares bytes without a diff of their dumps (which takes gigabytes for large buffers). */
function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  let at = 0;
  while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
  assert.fail(`${what}: ${got.length} bytes where ${want.length} were expected, first difference at byte ${at}`);
}

/** Applies debugfs requests to an image and fails if debugfs complained. */
async function debugfsWrite(image: string, requests: string[]): Promise<void> {
  const cmds = join(dir, `cmds-${Math.random().toString(36).slice(2)}`);
  await writeFile(cmds, requests.join('\n') + '\n');
  const r = await run(requireTool('debugfs', 'e2fsprogs'), ['-w', '-f', cmds, image]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^debugfs \d/.test(l));
  assert.deepEqual(lines, [], `debugfs complained: ${r.stderr}`);
}

test('backup create: a full then an incremental backup of an ext4 disk; restores to a file and to disks are byte-exact', async (t) => {
  const seed = testSeed(t);
  requireTool('mkfs.ext4', 'e2fsprogs');
  const { repo, id: repoId, env } = await newRepo('repo-ext4');
  // Real files: this checkout's sources and docs, plus seeded binary files.
  const src = join(dir, 'tree');
  const root = fileURLToPath(new URL('../../', import.meta.url));
  await cp(join(root, 'src'), join(src, 'src'), { recursive: true });
  await cp(join(root, 'docs'), join(src, 'docs'), { recursive: true });
  await mkdir(join(src, 'bin'));
  for (let i = 0; i < 12; i++) await writeFile(join(src, 'bin', `f${i}`), seededBytes(seed, `f${i}`, 100_000 + i * 250_000));
  const image = join(dir, 'fs.raw');
  await runOk('mkfs.ext4', ['-q', '-F', '-d', src, image, '256M']);
  await node.cliOk(['disk', 'create', 'fs', '--size', '256M']);
  await nbdcopy(image, node.nbdUri('fs'), ['--flush']);

  const [full] = await tesseraJson(env, ['backup', 'create', 'fs', '--repo', repo]);
  assert.equal(full.kind, 'disk');
  assert.equal(full.name, 'fs');
  assert.equal(full.incremental, false);
  assert.equal(full.parent, null);
  assert.equal(full.group, null);
  assert.match(full.source.snapshot, backupSnapshotOf(repoId), 'the snapshot names the time and the repository');
  assert.deepEqual(await snapshotsOf('fs'), [full.source.snapshot]);
  // Only allocated data is read: nbdcopy skips the image's holes, the rest is never read.
  assert.ok(full.stats.bytesScanned < 128 * MiB, `the full backup read ${full.stats.bytesScanned} bytes of a 256 MiB disk`);
  assert.ok(full.stats.chunksZero > 64, 'unallocated chunks are zero chunks');
  assert.equal(full.tenant, 'default', 'no --tenant: the default tenant');

  // Change real files: a file added, one removed, one overwritten; only changed blocks go over NBD.
  const image2 = join(dir, 'fs2.raw');
  await cp(image, image2);
  await writeFile(join(dir, 'new.bin'), seededBytes(seed, 'new', 3 * MiB + 123));
  await debugfsWrite(image2, [`write ${join(dir, 'new.bin')} /bin/new.bin`, 'rm /bin/f3', 'rm /docs/api.md', `write ${join(root, 'package.json')} /docs/api.md`]);
  const changed = await writeChangedBlocks(image, image2, node.nbdUri('fs'));
  t.diagnostic(`${changed.blocks} blocks changed in ${changed.runs} runs`);

  const [incr] = await tesseraJson(env, ['backup', 'create', 'fs', '--repo', repo, '--tenant', 'acme']);
  assert.equal(incr.incremental, true);
  assert.equal(incr.parent, full.id);
  assert.ok(incr.stats.bytesScanned <= 16 * MiB, `the incremental read ${incr.stats.bytesScanned} bytes for ${changed.blocks} changed blocks`);
  assert.ok(incr.stats.bytesScanned >= changed.blocks * 4096);
  assert.ok(incr.stats.chunksReused > 0, 'unchanged chunks are copied from the parent');
  assert.equal(incr.catalogReused, false, 'files were added and removed: the catalog is made anew');
  assert.deepEqual(await snapshotsOf('fs'), [incr.source.snapshot], 'the old base is deleted, the new one kept');
  t.diagnostic(`full read ${full.stats.bytesScanned} bytes in ${full.stats.durationMs} ms; incremental read ${incr.stats.bytesScanned} in ${incr.stats.durationMs} ms`);

  // The catalog reads metadata in 1 MiB pages: a few dozen requests, not thousands of tiny ones.
  t.diagnostic(`catalog pages read: full ${full.catalogPagesRead}, incremental ${incr.catalogPagesRead}`);
  for (const p of [full, incr]) assert.ok(p.catalogPagesRead > 0 && p.catalogPagesRead <= 64, `the catalog read ${p.catalogPagesRead} pages`);

  // --tenant is recorded in the restore point.
  const listed = new Map<string, { tenant: string }>((await tesseraJson(env, ['backup', 'list', '--repo', repo])).map((e: { id: string; tenant: string }) => [e.id, e]));
  assert.equal(listed.get(full.id)?.tenant, 'default');
  assert.equal(listed.get(incr.id)?.tenant, 'acme');

  // Both restore points have a file catalog built from their node snapshot: ls lists the source
  // tree, cat reads each backup's version of the files changed between them.
  for (const id of [full.id, incr.id]) {
    const ls = await tessera(env, ['backup', 'ls', id, '/', '--repo', repo]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(ls.stdout.split('\n').filter((l) => l !== ''), ['bin/', 'docs/', 'lost+found/', 'src/']);
    const docs = await tessera(env, ['backup', 'ls', id, '/docs', '--repo', repo]);
    assert.equal(docs.code, 0, docs.stderr);
    assert.deepEqual(docs.stdout.split('\n').filter((l) => l !== '').sort(), readdirSync(join(root, 'docs')).sort());
  }
  const binOf = async (id: string) => (await tessera(env, ['backup', 'ls', id, '/bin', '--repo', repo])).stdout.split('\n').filter((l) => l !== '').sort();
  assert.deepEqual(await binOf(full.id), Array.from({ length: 12 }, (_, i) => `f${i}`).sort());
  assert.deepEqual(await binOf(incr.id), [...Array.from({ length: 12 }, (_, i) => `f${i}`).filter((n) => n !== 'f3'), 'new.bin'].sort());
  assert.deepEqual(await catFile(env, repo, incr.id, '/docs/api.md'), await readFile(join(root, 'package.json')), 'the overwritten file: its new bytes');
  assert.deepEqual(await catFile(env, repo, full.id, '/docs/api.md'), await readFile(join(src, 'docs', 'api.md')), 'the full backup keeps the old bytes');
  assert.deepEqual(await catFile(env, repo, incr.id, '/bin/new.bin'), await readFile(join(dir, 'new.bin')), 'the added file');
  assert.deepEqual(await catFile(env, repo, incr.id, '/bin/f5'), seededBytes(seed, 'f5', 100_000 + 5 * 250_000), 'an unchanged file');
  const gone = await cliBytes(['backup', 'cat', incr.id, '/bin/f3', '--repo', repo], env);
  assert.equal(gone.code, 1, 'the removed file is not in the incremental');

  // What the disk holds now, read back over NBD, is what both restores give.
  const now = join(dir, 'fs-now.raw');
  await nbdcopy(node.nbdUri('fs'), now);
  await assertFilesEqual(now, image2, 'the disk after the qemu-io writes');
  const out2 = join(dir, 'restored2.raw');
  assert.equal((await tessera(env, ['backup', 'restore', incr.id, '--repo', repo, '--to-file', out2])).code, 0);
  assertSameFile(out2, image2);
  const out1 = join(dir, 'restored1.raw');
  assert.equal((await tessera(env, ['backup', 'restore', full.id.slice(0, 8), '--repo', repo, '--to-file', out1])).code, 0);
  assertSameFile(out1, image);

  const restored = await tesseraJson(env, ['backup', 'restore', incr.id, '--repo', repo, '--to-disk', 'fs-restored']);
  assert.equal(restored.created, true);
  const pulled = join(dir, 'fs-restored.raw');
  await nbdcopy(node.nbdUri('fs-restored'), pulled);
  assertSameFile(pulled, image2);
  const fsck = await run(requireTool('e2fsck', 'e2fsprogs'), ['-fn', pulled]);
  assert.equal(fsck.code, 0, fsck.stdout);

  const refused = await tessera(env, ['backup', 'restore', full.id, '--repo', repo, '--to-disk', 'fs-restored']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^tessera: error: A disk named "fs-restored" exists already; --force restores into it\n$/);
  assert.equal((await tessera(env, ['backup', 'restore', full.id, '--repo', repo, '--to-disk', 'fs-restored', '--force'])).code, 0);
  const pulled1 = join(dir, 'fs-restored1.raw');
  await nbdcopy(node.nbdUri('fs-restored'), pulled1);
  assertSameFile(pulled1, image);

  const verify = await tessera(env, ['backup', 'verify', '--repo', repo, '--read-data']);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

test('backup create of several disks is one consistency group; hooks run around the snapshot', async () => {
  const { repo, env } = await newRepo('repo-group');
  for (const d of ['g1', 'g2']) {
    await node.cliOk(['disk', 'create', d, '--size', '16M']);
    assert.equal((await qemuIo(node.nbdUri(d), ['write -q -P 0x11 0 1M', 'write -q -P 0x22 8M 64k'])).code, 0);
  }
  const log = join(dir, 'hooks.log');
  // The pre hook writes to g1 before the snapshot (so the backup has it), the post hook after (so it does not).
  const pre = `echo "$TESSERA_HOOK $TESSERA_DISKS" >> ${log} && qemu-io -f raw -c 'write -q -P 0x77 0 4k' ${node.nbdUri('g1')}`;
  const post = `echo "$TESSERA_HOOK $TESSERA_SNAPSHOT" >> ${log} && qemu-io -f raw -c 'write -q -P 0x88 0 4k' ${node.nbdUri('g1')}`;
  const points = await tesseraJson(env, ['backup', 'create', 'g1', 'g2', '--repo', repo, '--pre', pre, '--post', post]);
  assert.deepEqual(points.map((p: any) => p.name), ['g1', 'g2']);
  assert.match(points[0].group, /^[0-9a-f]{64}$/);
  assert.equal(points[0].group, points[1].group);
  assert.equal(points[0].source.snapshot, points[1].source.snapshot);
  const lines = (await readFile(log, 'utf8')).trim().split('\n');
  assert.deepEqual(lines, ['pre g1 g2', `post ${points[0].source.snapshot}`]);
  const out = join(dir, 'g1.raw');
  assert.equal((await tessera(env, ['backup', 'restore', points[0].id, '--repo', repo, '--to-file', out])).code, 0);
  const bytes = await readFile(out);
  assert.ok(bytes.subarray(0, 4096).every((b) => b === 0x77), 'what the pre hook wrote is in the backup, what the post hook wrote is not');
  assert.ok(bytes.subarray(4096, MiB).every((b) => b === 0x11));
  const list = await tesseraJson(env, ['backup', 'list', '--repo', repo]);
  assert.equal(list.filter((p: any) => p.group === points[0].group).length, 2);
  // No filesystem on these disks: not an error, the catalog says so.
  const ls = await tessera(env, ['backup', 'ls', points[0].id, '/', '--repo', repo]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.equal(ls.stdout, '');
  assert.match(ls.stderr, /holds no filesystem Tessera reads/);
  // A bad tenant is refused before any snapshot is taken.
  const snapsBefore = await snapshotsOf('g1');
  const badTenant = await tessera(env, ['backup', 'create', 'g1', '--repo', repo, '--tenant', 'no/such']);
  assert.equal(badTenant.code, 1, badTenant.stderr);
  assert.match(badTenant.stderr, /Bad tenant 'no\/such'/);
  assert.deepEqual(await snapshotsOf('g1'), snapsBefore);

  // A failing pre hook: no snapshot, the post hook still runs, one clear error.
  await writeFile(log, '');
  const before = await snapshotsOf('g1');
  const failed = await tessera(env, ['backup', 'create', 'g1', 'g2', '--repo', repo, '--pre', 'exit 3', '--post', `echo post >> ${log}`]);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /^tessera: error: the --pre hook failed \(exit 3\): exit 3; no snapshot taken\n$/);
  assert.deepEqual(await snapshotsOf('g1'), before);
  assert.equal(await readFile(log, 'utf8'), 'post\n');

  // A failing post hook: the backup completes, and the command says the hook failed.
  const postFailed = await tessera(env, ['backup', 'create', 'g2', '--repo', repo, '--post', 'exit 4']);
  assert.equal(postFailed.code, 1);
  assert.match(postFailed.stderr, /tessera: error: the --post hook failed \(exit 4\): exit 4 \(the backup itself completed\)\n$/);
  assert.match(postFailed.stdout, /^Backed up g2 as restore point [0-9a-f]{8} \(incremental\)/);

  // A snapshot that fails (unknown disk) still runs the post hook and creates nothing.
  await writeFile(log, '');
  const unknown = await tessera(env, ['backup', 'create', 'g1', 'nope', '--repo', repo, '--post', `echo post >> ${log}`]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^tessera: error: No disk named "nope"\n$/);
  const dup = await tessera(env, ['backup', 'create', 'g1', 'g1', '--repo', repo]);
  assert.equal(dup.code, 2);
  assert.match(dup.stderr, /disk g1 is named twice/);
});

test('backup create falls back to a full backup when the base snapshot was deleted, and says so', async () => {
  const { repo, env } = await newRepo('repo-fallback');
  await node.cliOk(['disk', 'create', 'fb', '--size', '32M']);
  assert.equal((await qemuIo(node.nbdUri('fb'), ['write -q -P 0x5a 2M 3M'])).code, 0);
  const [first] = await tesseraJson(env, ['backup', 'create', 'fb', '--repo', repo]);
  await node.cliOk(['snap', 'rm', 'fb', first.source.snapshot]);
  assert.equal((await qemuIo(node.nbdUri('fb'), ['write -q -P 0x5b 20M 4k'])).code, 0);
  const r = await tessera(env, ['backup', 'create', 'fb', '--repo', repo, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`the base snapshot fb@${first.source.snapshot} of restore point ${first.id.slice(0, 8)} is gone: full backup of fb`));
  const [second] = JSON.parse(r.stdout);
  assert.equal(second.incremental, false);
  assert.match(second.fullReason, /is gone/);
  // Whatever the chunk size (a power of two up to 1 MiB): the 3 MiB at 2 MiB, and the chunk at 20 MiB.
  const chunk = first.chunkSizeBytes;
  assert.equal(second.stats.bytesScanned, 3 * MiB + chunk, 'the whole allocated data is read again');
  assert.equal(second.stats.chunksReused, (3 * MiB) / chunk, 'its unchanged chunks dedup against the first backup');
  assert.deepEqual(await snapshotsOf('fb'), [second.source.snapshot]);
  const out = join(dir, 'fb.raw');
  assert.equal((await tessera(env, ['backup', 'restore', second.id, '--repo', repo, '--to-file', out])).code, 0);
  const now = join(dir, 'fb-now.raw');
  await nbdcopy(node.nbdUri('fb'), now);
  assertSameFile(out, now);
});

test('an incremental whose changes touch no metadata keeps the parent catalog; one that does makes a new one', async (t) => {
  const seed = testSeed(t);
  requireTool('mkfs.ext4', 'e2fsprogs');
  const { repo, env } = await newRepo('repo-catalog-reuse');
  const src = join(dir, 'reuse-tree');
  await mkdir(join(src, 'data'), { recursive: true });
  for (let i = 0; i < 8; i++) await writeFile(join(src, 'data', `f${i}`), seededBytes(seed, `r${i}`, 300_000));
  const image = join(dir, 'reuse.raw');
  await runOk('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, image, '64M']);
  await node.cliOk(['disk', 'create', 'cr', '--size', '64M']);
  await nbdcopy(image, node.nbdUri('cr'), ['--flush']);
  const [full] = await tesseraJson(env, ['backup', 'create', 'cr', '--repo', repo]);
  assert.equal(full.catalogReused, false);

  // Overwrite a file's bytes in place, on the block device: no inode, directory or bitmap changes.
  const blocks = await runOk(requireTool('debugfs', 'e2fsprogs'), ['-R', 'blocks /data/f3', image]);
  const first = Number(blocks.trim().split(/\s+/)[0]);
  const fresh = seededBytes(seed, 'overwrite', 8192);
  const patch = join(dir, 'reuse-patch');
  await writeFile(patch, fresh);
  assert.equal((await qemuIo(node.nbdUri('cr'), [`write -q -s ${patch} ${first * 4096} 8192`, 'flush'])).code, 0);
  const [second] = await tesseraJson(env, ['backup', 'create', 'cr', '--repo', repo]);
  assert.equal(second.incremental, true);
  assert.equal(second.catalogReused, true, 'only file data changed: the parent catalog is kept');
  const f3 = seededBytes(seed, 'r3', 300_000);
  fresh.copy(f3, 0);
  assertSameBytes(await catFile(env, repo, second.id, '/data/f3'), f3, 'cat reads the new bytes through the kept catalog');
  assertSameBytes(await catFile(env, repo, full.id, '/data/f3'), seededBytes(seed, 'r3', 300_000), 'the full backup keeps the old bytes');

  // A new file: the metadata changed, so the catalog is made anew and lists it.
  const image2 = join(dir, 'reuse2.raw');
  await nbdcopy(node.nbdUri('cr'), image2);
  await writeFile(join(dir, 'reuse-new'), seededBytes(seed, 'new', 5000));
  await debugfsWrite(image2, [`write ${join(dir, 'reuse-new')} /data/new`]);
  const now = join(dir, 'reuse-now.raw');
  await nbdcopy(node.nbdUri('cr'), now);
  await writeChangedBlocks(now, image2, node.nbdUri('cr'));
  const [third] = await tesseraJson(env, ['backup', 'create', 'cr', '--repo', repo]);
  assert.equal(third.catalogReused, false);
  const ls = await tessera(env, ['backup', 'ls', third.id, '/data', '--repo', repo]);
  assert.deepEqual(ls.stdout.split('\n').filter((l) => l !== ''), [...Array.from({ length: 8 }, (_, i) => `f${i}`), 'new']);
  assertSameBytes(await catFile(env, repo, third.id, '/data/new'), seededBytes(seed, 'new', 5000), 'the new file');
});

test('incremental backups after trims, zeroes, rewrites and a resize restore byte-exact', async (t) => {
  const seed = testSeed(t);
  const { repo, env } = await newRepo('repo-shapes');
  const random = join(dir, 'shapes.raw');
  await writeSeededFile(random, seed, 'shapes', 16 * MiB);
  await node.cliOk(['disk', 'create', 'sh', '--size', '16M']);
  await nbdcopy(random, node.nbdUri('sh'), ['--flush']);
  const backupAndCompare = async (what: string) => {
    const [p] = await tesseraJson(env, ['backup', 'create', 'sh', '--repo', repo]);
    const out = join(dir, `sh-restored-${p.id}.raw`);
    const r = await tessera(env, ['backup', 'restore', p.id, '--repo', repo, '--to-file', out]);
    assert.equal(r.code, 0, r.stderr);
    const now = join(dir, 'sh-now.raw');
    await nbdcopy(node.nbdUri('sh'), now);
    await assertFilesEqual(out, now, what);
    return p;
  };
  await backupAndCompare('the full backup');
  // Whole chunks trimmed and zeroed, a partial overwrite, a block rewritten with the same bytes.
  const io = await qemuIo(node.nbdUri('sh'), ['discard -q 2M 2M', 'write -q -z 5M 1M', 'write -q -P 0x33 7M 100k', 'discard -q 9M 4k', 'flush']);
  assert.equal(io.code, 0, io.stderr);
  const second = await backupAndCompare('after trims and zeroes');
  assert.equal(second.incremental, true);
  assert.ok(second.stats.bytesScanned <= 5 * MiB, `only changed chunks are read: ${second.stats.bytesScanned} bytes`);
  // A bigger disk: the new tail is backed up too.
  await node.cliOk(['disk', 'resize', 'sh', '--size', '20M']);
  assert.equal((await qemuIo(node.nbdUri('sh'), ['write -q -P 0x44 18M 512k', 'flush'])).code, 0);
  const third = await backupAndCompare('after a resize');
  assert.equal(third.incremental, true);
  assert.equal(third.sizeBytes, 20 * MiB);
});

test('backup create --local killed with SIGKILL mid-way: the next backup into that repository removes the snapshot it left, never one a running backup or another repository needs; it restores byte-exact, verify is clean', async (t) => {
  const seed = testSeed(t);
  const a = await newRepo('repo-kill', smallRepo); // 64 KiB chunks, 256 KiB packs: index files often
  const b = await newRepo('repo-kill-other', smallRepo);
  const random = join(dir, 'random.raw');
  await writeSeededFile(random, seed, 'kill', 64 * MiB);
  await node.cliOk(['disk', 'create', 'kb', '--size', '64M']);
  await nbdcopy(random, node.nbdUri('kb'), ['--flush']);
  // Another repository backs the same disk up: its base, and a snapshot named like one a killed
  // backup into it left, are its own; so is one named without a repository (older Tessera).
  const [b1] = await tesseraJson(b.env, ['backup', 'create', 'kb', '--repo', b.repo]);
  assert.match(b1.source.snapshot, backupSnapshotOf(b.id));
  const otherKilled = `backup-2025-01-01T00-00-00-000Z-${b.id.slice(0, 16)}`;
  const unnamed = 'backup-2025-01-01T00-00-00-000Z';
  for (const name of [otherKilled, unnamed]) await node.cliOk(['snap', 'create', 'kb', name]);

  const count = (sub: string) => {
    try {
      return readdirSync(join(a.repo, sub)).filter((n) => /^[0-9a-f]{64}$/.test(n)).length;
    } catch {
      return 0;
    }
  };
  const child = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'kb', '--repo', a.repo, '--local'], { env: a.env });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let killedAt = 0;
  for (let i = 0; i < 12000 && child.exitCode === null; i++) {
    if (count('index') >= 3) {
      child.kill('SIGKILL');
      killedAt = count('index');
      break;
    }
    await sleep(5);
  }
  await exited;
  assert.ok(killedAt >= 3, `killed after index files were written (the backup finished first or failed: ${stderr})`);
  assert.equal(count('snapshots'), 0, 'killed before its restore point');
  const killed = (await snapshotsOf('kb')).filter((n) => backupSnapshotOf(a.id).test(n));
  assert.equal(killed.length, 1, 'the killed backup left its snapshot');

  // A backup into the same repository, held in its --post hook: its snapshot is taken and its
  // writer marker (which names it) is live, its restore point not written yet.
  const ready = join(dir, 'held-ready');
  const go = join(dir, 'held-go');
  const post = `echo "$TESSERA_SNAPSHOT" > ${ready}.tmp && mv ${ready}.tmp ${ready}; while [ ! -e ${go} ] && kill -0 $PPID 2>/dev/null; do sleep 0.1; done`;
  const held = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'kb', '--repo', a.repo, '--local', '--post', post, '--json'], { env: a.env });
  let heldOut = '';
  let heldErr = '';
  held.stdout!.setEncoding('utf8').on('data', (c: string) => (heldOut += c));
  held.stderr!.setEncoding('utf8').on('data', (c: string) => (heldErr += c));
  const heldExit = new Promise<number | null>((resolve) => held.once('exit', (code) => resolve(code)));
  for (let i = 0; !existsSync(ready); i++) {
    assert.ok(i < 12000 && held.exitCode === null, `the held backup did not reach its --post hook: ${heldErr}`);
    await sleep(10);
  }
  const heldSnap = readFileSync(ready, 'utf8').trim();
  assert.match(heldSnap, backupSnapshotOf(a.id));

  const [rerun] = await tesseraJson(a.env, ['backup', 'create', 'kb', '--repo', a.repo, '--local']);
  assert.equal(rerun.incremental, false);
  assert.ok(rerun.stats.chunksReused > 0, 'chunks the killed run uploaded are reused');
  assert.deepEqual(rerun.staleSnapshotsRemoved, killed, 'the snapshot the killed backup left is removed');
  const expected = [b1.source.snapshot, otherKilled, unnamed, heldSnap, rerun.source.snapshot].sort();
  assert.deepEqual((await snapshotsOf('kb')).sort(), expected, "the running backup's snapshot and the other repository's stay");

  // The held backup completes from its snapshot; the rerun's is the base of a restore point and stays.
  writeFileSync(go, '');
  assert.equal(await heldExit, 0, heldErr);
  const [heldPoint] = JSON.parse(heldOut);
  assert.equal(heldPoint.source.snapshot, heldSnap);
  assert.deepEqual(heldPoint.staleSnapshotsRemoved, []);
  assert.deepEqual((await snapshotsOf('kb')).sort(), expected);

  // The other repository's next backup removes what its own killed backup left, and only that.
  const [b2] = await tesseraJson(b.env, ['backup', 'create', 'kb', '--repo', b.repo]);
  assert.equal(b2.incremental, true);
  assert.deepEqual(b2.staleSnapshotsRemoved, [otherKilled]);
  assert.deepEqual((await snapshotsOf('kb')).sort(), [unnamed, heldSnap, rerun.source.snapshot, b2.source.snapshot].sort());

  for (const point of [rerun, heldPoint]) {
    const out = join(dir, `kb-${point.id}.raw`);
    assert.equal((await tessera(a.env, ['backup', 'restore', point.id, '--repo', a.repo, '--to-file', out])).code, 0);
    assertSameFile(out, random);
  }
  const verify = await tessera(a.env, ['backup', 'verify', '--repo', a.repo, '--read-data']);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

test('backupDisk: a node read that fails while the catalog is built fails the backup (not a damaged catalog)', async () => {
  const r = await openTestRepo(join(dir, 'repo-catalog-io'), { init: smallRepo });
  const marker = await r.repo.startWriter();
  try {
    await r.cache.sync(r.repo);
    const image = seededBytes(1, 'catalog-io', 4 * MiB);
    const source = (failCatalog: boolean): DiskSnapshotSource => ({
      disk: 'cio',
      snapshot: 'backup-x',
      sizeBytes: image.length,
      extents: async (visit) => visit({ offset: 0, length: image.length, type: 'data' }),
      read: async (offset, into) => {
        // Chunk reads are 64 KiB here; the catalog reads 1 MiB pages.
        if (failCatalog && into.length === catalogReadPageBytes) throw new Error('node lost');
        image.copy(into, 0, offset, offset + into.length);
      },
    });
    await assert.rejects(backupDisk(r, source(true)), /node lost/);
    const ok = await backupDisk(r, source(false));
    assert.ok(ok.snapshot.catalog !== null, 'an unrecognised image still gets a catalog');
    assert.ok(ok.catalogPagesRead >= 1);
  } finally {
    await marker.stop();
    await r.close();
  }
});
