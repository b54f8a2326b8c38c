/**
 * A real ext4 file system through snapshots, clones and revert: built with mkfs.ext4 -d, moved
 * with nbdcopy, modified with debugfs, checked with e2fsck and by dumping every file.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { assertFilesEqual, makeTempDir, nbdcopy, requireTool, Rng, run, runOk, seededBytes, useNode, testSeed } from '../helpers/index.ts';

const node = useNode();
const dir = makeTempDir();

/** Every regular file under `root`, by path relative to it. */
async function readTree(root: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    files.set(relative(root, path), await readFile(path));
  }
  return files;
}

/** Generates a tree of files of many sizes (empty, sub-block, multi-MiB, odd) under `root/data`. */
async function makeSourceTree(root: string, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const sizes = [0, 1, 511, 4096, 4097, 65_536, 1_000_003, 3 * 1024 * 1024 + 17];
  for (let i = 0; i < 48; i++) sizes.push(rng.range(1, 200_000));
  for (const [i, size] of sizes.entries()) {
    const sub = join(root, 'data', `d${i % 5}`, i % 3 === 0 ? 'deep' : '');
    await mkdir(sub, { recursive: true });
    await writeFile(join(sub, `f${i}.bin`), seededBytes(seed, `file-${i}`, size));
  }
}

/** Runs e2fsck -fn and fails with its report unless the file system is clean. */
async function assertClean(image: string, what: string): Promise<void> {
  const r = await run(requireTool('e2fsck', 'e2fsprogs'), ['-fn', image]);
  assert.equal(r.code, 0, `${what}: e2fsck -fn exited ${r.code}\n${r.stdout}${r.stderr}`);
}

/** Dumps /data of an image with debugfs rdump and returns its files. */
async function dumpTree(image: string, name: string): Promise<Map<string, Buffer>> {
  const out = join(dir, `dump-${name}`);
  await mkdir(out);
  await runOk(requireTool('debugfs', 'e2fsprogs'), ['-R', `rdump /data ${out}`, image]);
  return readTree(join(out, 'data'));
}

/** Applies debugfs requests to an image (read-write) and fails if debugfs reported an error. */
async function debugfsWrite(image: string, requests: string[]): Promise<void> {
  const cmds = join(dir, `cmds-${Math.random().toString(36).slice(2)}`);
  await writeFile(cmds, requests.join('\n') + '\n');
  const r = await run(requireTool('debugfs', 'e2fsprogs'), ['-w', '-f', cmds, image]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^debugfs \d/.test(l));
  assert.deepEqual(lines, [], `debugfs complained: ${r.stderr}`);
}

function assertSameFiles(actual: Map<string, Buffer>, expected: Map<string, Buffer>, what: string): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: file names`);
  for (const [path, data] of expected) assert.ok(actual.get(path)!.equals(data), `${what}: content of ${path}`);
}

test('ext4 survives snapshot, clone, modification and revert with every version clean and intact', async (t) => {
  const seed = testSeed(t);
  requireTool('mkfs.ext4', 'e2fsprogs');
  const src = join(dir, 'src');
  await makeSourceTree(src, seed);
  const original = await readTree(join(src, 'data'));
  const image = join(dir, 'image.raw');
  await runOk('mkfs.ext4', ['-q', '-F', '-d', src, image, '256M']);
  await assertClean(image, 'the image mkfs made');

  await node.cliOk(['disk', 'create', 'fs', '--size', '256M']);
  await nbdcopy(image, node.nbdUri('fs'), ['--flush']);
  await node.cliOk(['snap', 'create', 'fs', 'v1']);
  await node.cliOk(['disk', 'clone', 'fs@v1', 'fsclone']);

  // Change the clone: a new file, a new directory, a file removed.
  const extra = join(dir, 'extra.bin');
  await writeFile(extra, seededBytes(seed, 'extra', 300_000));
  const cloneImage = join(dir, 'clone.raw');
  await nbdcopy(node.unixUri('fsclone'), cloneImage);
  await debugfsWrite(cloneImage, [
    `write ${extra} /data/extra.bin`,
    'mkdir /data/newdir',
    `write ${extra} /data/newdir/again.bin`,
    'rm /data/d1/f1.bin',
  ]);
  await assertClean(cloneImage, 'the clone modified by debugfs');
  await nbdcopy(cloneImage, node.nbdUri('fsclone'), ['--flush']);

  // Change the original too, then revert it to the snapshot.
  const headImage = join(dir, 'head.raw');
  await nbdcopy(node.nbdUri('fs'), headImage);
  await debugfsWrite(headImage, ['rm /data/d0/deep/f0.bin', 'rm /data/d2/f2.bin', `write ${extra} /data/head-only.bin`]);
  await nbdcopy(headImage, node.nbdUri('fs'), ['--flush']);
  const changedHead = join(dir, 'head-changed.raw');
  await nbdcopy(node.nbdUri('fs'), changedHead);
  await assertFilesEqual(headImage, changedHead, 'the modified original before revert');
  await node.cliOk(['snap', 'revert', 'fs', 'v1']);

  // Every version: pulled afresh, clean, and with the expected files.
  const pulled = async (uri: string, name: string) => {
    const path = join(dir, `${name}.raw`);
    await nbdcopy(uri, path);
    await assertClean(path, name);
    return path;
  };
  const reverted = await pulled(node.nbdUri('fs'), 'reverted');
  await assertFilesEqual(image, reverted, 'the original after revert');
  assertSameFiles(await dumpTree(reverted, 'reverted'), original, 'the original after revert');

  const snapshot = await pulled(node.unixUri('fs@v1'), 'snapshot');
  await assertFilesEqual(image, snapshot, 'the snapshot');

  const clone = await pulled(node.nbdUri('fsclone'), 'clone-final');
  await assertFilesEqual(cloneImage, clone, 'the clone');
  const expectedClone = new Map(original);
  expectedClone.delete(join('d1', 'f1.bin'));
  expectedClone.set('extra.bin', await readFile(extra));
  expectedClone.set(join('newdir', 'again.bin'), await readFile(extra));
  assertSameFiles(await dumpTree(clone, 'clone'), expectedClone, 'the clone');

  // Data survives a restart of the node too.
  await node.restart();
  const afterRestart = await pulled(node.nbdUri('fsclone'), 'clone-restarted');
  await assertFilesEqual(cloneImage, afterRestart, 'the clone after a restart');
});
