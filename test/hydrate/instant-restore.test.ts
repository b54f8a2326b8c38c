/**
 * Instant restore through a real node and real NBD clients (docs/backup.md, "Instant restore"):
 * an ext4 image of real files backed up with `backup file`, served at once while it is copied in,
 * written before the copier got there, killed with SIGKILL half-way and resumed, and read while
 * the repository is gone.
 */
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdirSync, openSync, closeSync, writeSync, renameSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Repository } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import {
  assertFilesEqual, cleanup, makeTempDir, nbdcopy, qemuIo, requireTool, runOk, run, seededBytes, startNode, tesseraBin, type TesseraNode, MiB,
} from '../helpers/index.ts';

const password = 'instant restore test password';
/** The copier's rate while a test needs chunks left missing: one 64 KiB chunk a second. */
const slowRate = String(64 * 1024);

let dir: string;
let repo: string;
let cacheDir: string;
let source: string;
let node: TesseraNode;
let restorePoint: string;
let mkfs: string;
let e2fsck: string;
/** The file system's part of the image; the rest is a tail of seeded bytes the tests write into. */
const fsBytes = 48 * MiB;
const imageBytes = 64 * MiB;

function env(): NodeJS.ProcessEnv {
  return { ...process.env, TESSERA_PASSWORD: password, TESSERA_CACHE_DIR: cacheDir };
}

async function cli(args: string[]): Promise<string> {
  // `backup init` and `backup file` need no node and take no --api.
  const offline = args[0] === 'backup' && (args[1] === 'init' || args[1] === 'file');
  const r = offline ? await run(tesseraBin, args, { env: env(), timeoutMs: 300_000 }) : await node.cli(args, { env: env(), timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`tessera ${args.join(' ')} exited ${r.code}\n${r.stdout}${r.stderr}\nnode log: ${node.logTail().slice(-3000)}`);
  return r.stdout;
}

interface Info {
  disk: string;
  state: string;
  chunks: number;
  chunksZero: number;
  chunksCopied: number;
  chunksMissing: number;
  bytesCopied: number;
  chunksFetchedForClients: number;
  startedMs: number;
  finishedMs: number | null;
  lastError: string | null;
}

async function status(disk: string): Promise<Info> {
  const all = JSON.parse(await cli(['backup', 'instant-restore', 'status', '--json'])) as Info[];
  const found = all.find((i) => i.disk === disk);
  assert.ok(found, `no instant restore of ${disk} in ${JSON.stringify(all)}`);
  return found;
}

/** Polls the status of `disk` until `until` holds (bounded: a stuck restore fails the test with its status). */
async function waitFor(disk: string, what: string, until: (i: Info) => boolean, timeoutMs = 180_000): Promise<Info> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = await status(disk);
    if (until(i)) return i;
    if (Date.now() > deadline) throw new Error(`instant restore of ${disk} not ${what} after ${timeoutMs} ms: ${JSON.stringify(i)}\nnode log: ${node.logTail().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function startRestore(disk: string): Promise<{ cliMs: number }> {
  const t0 = performance.now();
  await cli(['backup', 'instant-restore', restorePoint.slice(0, 8), '--repo', repo, '--to-disk', disk]);
  return { cliMs: performance.now() - t0 };
}

/** Restarts the node with the copier limited to `rate` bytes per second (or unlimited). */
async function restartWithRate(rate: string | null, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (rate === null) delete process.env.TESSERA_RESTORE_RATE;
  else process.env.TESSERA_RESTORE_RATE = rate;
  await node.restart(signal);
}

/** Writes `data` at `offset` of a file. */
function patch(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

before(async () => {
  mkfs = requireTool('mkfs.ext4', 'e2fsprogs');
  e2fsck = requireTool('e2fsck', 'e2fsprogs');
  dir = makeTempDir('tessera-instant-');
  repo = join(dir, 'repo');
  cacheDir = join(dir, 'cache');
  // Real files: this checkout's source, tests and docs.
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  for (const part of ['src', 'test', 'docs']) cpSync(new URL(`../../${part}`, import.meta.url), join(tree, part), { recursive: true });
  source = join(dir, 'source.img');
  closeSync(openSync(source, 'w'));
  truncateSync(source, fsBytes);
  await runOk(mkfs, ['-q', '-F', '-d', tree, source]);
  truncateSync(source, imageBytes);
  patch(source, fsBytes, seededBytes(1, 'tail', imageBytes - fsBytes));
  await runOk(e2fsck, ['-fn', source]);

  delete process.env.TESSERA_RESTORE_RATE;
  node = await startNode();
  await cli(['backup', 'init', '--repo', repo, '--chunk-size', '64K']);
  const r = JSON.parse(await cli(['backup', 'file', source, '--repo', repo, '--name', 'ext4', '--json'])) as { id: string };
  restorePoint = r.id;
});
after(async () => {
  await node?.stop();
  await cleanup();
});

test('instant restore serves reads and writes at once, keeps writes made before the copier, survives kill -9 and resumes', async (t) => {
  await restartWithRate(slowRate);
  const { cliMs } = await startRestore('r1');
  const t0 = performance.now();
  const first = await qemuIo(node.nbdUri('r1'), ['read 0 65536']);
  assert.equal(first.code, 0, first.stdout + first.stderr);
  assert.doesNotMatch(first.stdout, /error/i);
  t.diagnostic(`time to first read: instant-restore command ${cliMs.toFixed(0)} ms (CLI start included), then first qemu-io read ${(performance.now() - t0).toFixed(0)} ms (qemu-io start included)`);

  // Writes into the tail, far ahead of a copier doing one chunk a second: each hydrates its chunk first.
  const expected = join(dir, 'expected-r1.img');
  copyFileSync(source, expected);
  const writes: { offset: number; data: Buffer; cmd: string }[] = [
    { offset: imageBytes - 4096, data: Buffer.alloc(4096, 0xab), cmd: `write -P 0xab ${imageBytes - 4096} 4096` },
    { offset: fsBytes + 64 * 1024 * 7 - 500, data: Buffer.alloc(1000, 0xcd), cmd: `write -P 0xcd ${fsBytes + 64 * 1024 * 7 - 500} 1000` },
    { offset: fsBytes + 5 * MiB + 512, data: Buffer.alloc(8192, 0), cmd: `write -z ${fsBytes + 5 * MiB + 512} 8192` },
  ];
  const w = await qemuIo(node.nbdUri('r1'), writes.map((x) => x.cmd));
  assert.equal(w.code, 0, w.stdout + w.stderr);
  for (const x of writes) patch(expected, x.offset, x.data);

  const mid = await status('r1');
  assert.equal(mid.state, 'copying');
  assert.ok(mid.chunksMissing > 0 && mid.chunksFetchedForClients >= 4, `mid-way status: ${JSON.stringify(mid)}`);

  // A snapshot now would hold zeroes where chunks are missing: refused.
  const snap = await node.cli(['snap', 'create', 'r1', 'early'], { env: env() });
  assert.equal(snap.code, 1);
  assert.match(snap.stderr, /being restored/);

  // Crash half-way: what was copied or written must survive, the rest is copied after the resume.
  const copiedBefore = mid.chunksCopied;
  await restartWithRate(null, 'SIGKILL');
  const waiting = await status('r1');
  assert.equal(waiting.state, 'needs-password');
  const refused = await qemuIo(node.nbdUri('r1'), ['read 0 4096']);
  assert.notEqual(refused.code, 0, 'a restore waiting for its password must refuse NBD clients');
  assert.match(refused.stdout + refused.stderr, /instant-restore resume/);

  const resumedAt = performance.now();
  await cli(['backup', 'instant-restore', 'resume', 'r1']);
  const resumed = await status('r1');
  assert.ok(resumed.chunksCopied >= copiedBefore - 64, `the copied log kept what was copied: ${JSON.stringify(resumed)} before ${copiedBefore}`);
  // Read the whole disk while the copier runs; the copier and the reads share fetches.
  const during = join(dir, 'during-r1.img');
  await nbdcopy(node.nbdUri('r1'), during);
  await assertFilesEqual(during, expected, 'disk r1 read during the copy');
  const done = await waitFor('r1', 'done', (i) => i.state === 'done');
  const ms = performance.now() - resumedAt;
  t.diagnostic(`resume to done: ${done.chunksCopied} chunks, ${(ms / 1000).toFixed(1)} s`);

  const final = join(dir, 'final-r1.img');
  await nbdcopy(node.nbdUri('r1'), final);
  await assertFilesEqual(final, expected, 'disk r1 after the restore');
  const fsck = await run(e2fsck, ['-fn', final]);
  assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
  // An ordinary disk now: snapshots work.
  await cli(['snap', 'create', 'r1', 'after']);
});

test('instant restore copies a whole image in the background and the disk becomes ordinary (full hydration speed)', async (t) => {
  await restartWithRate(null);
  await startRestore('r2');
  const done = await waitFor('r2', 'done', (i) => i.state === 'done');
  const seconds = (done.finishedMs! - done.startedMs) / 1000;
  t.diagnostic(`full hydration: ${(done.bytesCopied / MiB).toFixed(1)} MiB of data (${done.chunksCopied} chunks, ${done.chunksZero} zero) in ${seconds.toFixed(2)} s = ${(done.bytesCopied / MiB / seconds).toFixed(1)} MiB/s`);
  assert.equal(done.chunksMissing, 0);
  assert.equal(done.chunksFetchedForClients, 0);
  // Done means the node let go of the repository: no live writer marker is left (the one of the
  // node killed in the first test stays until a prune, but names a dead pid).
  const opened = await Repository.open(new DirBackend(repo), password);
  for (let i = 0; ; i++) {
    const live = (await opened.listWriters()).filter((w) => opened.writerIsLive(w.marker));
    if (live.length === 0) break;
    assert.ok(i < 300, `live writer markers left after the restore: ${JSON.stringify(live)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const out = join(dir, 'r2.img');
  await nbdcopy(node.nbdUri('r2'), out);
  await assertFilesEqual(out, source, 'disk r2');
  // Holes stay holes: the disk holds about the data, not the image size.
  const disk = JSON.parse(await cli(['disk', 'info', 'r2', '--json'])) as { allocatedBytes: number };
  assert.ok(disk.allocatedBytes <= done.bytesCopied, `allocated ${disk.allocatedBytes} > copied ${done.bytesCopied}`);
});

test('instant restore gives EIO for missing chunks while the repository is gone, other disks unaffected, and recovers', async () => {
  await restartWithRate(slowRate);
  await startRestore('r3');
  const warm = await qemuIo(node.nbdUri('r3'), ['read 0 65536']);
  assert.equal(warm.code, 0, warm.stdout + warm.stderr);

  renameSync(join(repo, 'data'), join(repo, 'data.away'));
  try {
    const missing = await qemuIo(node.nbdUri('r3'), [`read ${imageBytes - 65536} 4096`]);
    assert.match(missing.stdout + missing.stderr, /Input\/output error/, 'a read of a missing chunk while the repository is gone');
    const present = await qemuIo(node.nbdUri('r3'), ['read 0 65536']);
    assert.equal(present.code, 0, `a read of a copied chunk still works: ${present.stdout}${present.stderr}`);
    assert.doesNotMatch(present.stdout, /error/i);
    const other = await qemuIo(node.nbdUri('r2'), [`read ${imageBytes - 65536} 65536`]);
    assert.equal(other.code, 0, other.stdout + other.stderr);
    assert.doesNotMatch(other.stdout, /error/i);
    const retrying = await waitFor('r3', 'retrying', (i) => i.state === 'retrying');
    assert.match(retrying.lastError ?? '', /./);
  } finally {
    renameSync(join(repo, 'data.away'), join(repo, 'data'));
  }
  const back = await qemuIo(node.nbdUri('r3'), [`read ${imageBytes - 65536} 4096`]);
  assert.equal(back.code, 0, back.stdout + back.stderr);
  assert.doesNotMatch(back.stdout, /error/i);
  const out = join(dir, 'r3.img');
  await nbdcopy(node.nbdUri('r3'), out);
  await assertFilesEqual(out, source, 'disk r3 after the outage');
  await waitFor('r3', 'done', (i) => i.state === 'done');

  // Cancel: stops the restore and deletes its disk.
  await startRestore('r4');
  await cli(['backup', 'instant-restore', 'cancel', 'r4']);
  const disks = JSON.parse(await cli(['disk', 'list', '--json'])) as { name: string }[];
  assert.ok(!disks.some((d) => d.name === 'r4'), 'cancel deletes the disk');
});
