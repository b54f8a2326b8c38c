/**
 * `tessera disk import` against real peers: qemu-nbd serving a qcow2 image, nbdkit, a raw file
 * with holes, another Tessera node's export. Each import is compared byte for byte with its
 * source (nbdcopy out of the node, cmp); only allocated extents are copied; bad sources get a
 * clear error and leave no disk behind.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ImportResult } from '../../src/api/client/index.ts';
import { assertFilesEqual, freePort, makeTempDir, MiB, nbdcopy, qemuImg, requireTool, runOk, seededBytes, spawnTracked, startNode, testSeed, until, useNode } from '../helpers/index.ts';
import { existsSync } from 'node:fs';

const node = useNode();
const dir = makeTempDir();

/** Writes a sparse raw image of `sizeBytes` with seeded data at each [offset, length). */
async function sparseImage(path: string, seed: number, sizeBytes: number, runs: Array<[number, number]>): Promise<number> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    for (const [offset, length] of runs) await fh.write(seededBytes(seed, `run-${offset}`, length), 0, length, offset);
  } finally {
    await fh.close();
  }
  return runs.reduce((n, [, l]) => n + l, 0);
}

/** Copies disk `name` out of the node into a file and compares it with `expected`. */
async function assertDiskEquals(name: string, expected: string): Promise<void> {
  const out = join(dir, `${name}.out.raw`);
  await nbdcopy(node.nbdUri(name), out);
  await assertFilesEqual(expected, out, `disk ${name} against its source`);
}

async function diskNames(): Promise<string[]> {
  return (await node.cliJson<Array<{ name: string }>>(['disk', 'list'])).map((d) => d.name);
}

/** Starts a child that serves NBD on a Unix socket; resolves once the socket exists. */
async function serveOn(cmd: string, args: string[], socket: string) {
  const child = spawnTracked(cmd, args);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => void (stderr += c));
  await until(() => existsSync(socket), 10_000, `${cmd} listening on ${socket}: ${stderr}`, 20);
  return child;
}

const runs: Array<[number, number]> = [
  [0, 64 * 1024],
  [5 * MiB + 4096, 3 * MiB],
  [20 * MiB, 12 * 1024],
  [40 * MiB - 512, 4 * MiB + 512],
  [63 * MiB, MiB],
];

test('a raw file with holes imports byte for byte with 1 and with 4 streams, its holes not copied', async (t) => {
  const seed = testSeed(t);
  const src = join(dir, 'holes.raw');
  const data = await sparseImage(src, seed, 64 * MiB, runs);
  for (const streams of [1, 4]) {
    const r = await node.cliJson<ImportResult>(['disk', 'import', src, `file-${streams}`, '--streams', String(streams)]);
    assert.equal(r.sizeBytes, 64 * MiB);
    assert.equal(r.streams, streams);
    assert.equal(r.sparse, true, 'SEEK_DATA/SEEK_HOLE found the holes');
    // File systems report data in whole blocks: at most a block more around each run.
    assert.ok(r.bytesCopied >= data && r.bytesCopied <= data + runs.length * 2 * 4096, `copied ${r.bytesCopied}, data ${data}`);
    assert.equal(r.bytesSkipped, r.sizeBytes - r.bytesCopied);
    await assertDiskEquals(`file-${streams}`, src);
  }
  // The text form names what was done.
  const text = await node.cliOk(['disk', 'import', src, 'file-text']);
  assert.match(text, /^Imported .*holes\.raw to disk file-text \(64\.0 MiB\): .* copied, .* skipped as holes or zeroes, in .* over 4 streams\n$/);
});

test('a file whose size is not a multiple of 512 gives a disk rounded up, the tail reading as zeroes', async (t) => {
  const src = join(dir, 'odd.raw');
  await runOk('sh', ['-c', `head -c 1000000 /dev/urandom > ${src}`]);
  const r = await node.cliJson<ImportResult>(['disk', 'import', src, 'odd']);
  assert.equal(r.sizeBytes, 1000448);
  const out = join(dir, 'odd.out.raw');
  await nbdcopy(node.nbdUri('odd'), out);
  const padded = join(dir, 'odd.padded.raw');
  await runOk('cp', [src, padded]);
  await runOk('truncate', ['-s', '1000448', padded]);
  await assertFilesEqual(padded, out, 'odd-sized import');
  void t;
});

test('qemu-nbd serving a qcow2 image: only its allocated clusters are copied, byte for byte, over several connections', async (t) => {
  const qemuNbd = requireTool('qemu-nbd', 'qemu-utils');
  const seed = testSeed(t);
  const raw = join(dir, 'q.raw');
  const data = await sparseImage(raw, seed, 64 * MiB, runs);
  const qcow2 = join(dir, 'q.qcow2');
  await qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const socket = join(dir, 'qemu-nbd.sock');
  const child = await serveOn(qemuNbd, ['-r', '-f', 'qcow2', '-x', 'img', '-k', socket, '-e', '8', '--persistent', qcow2], socket);
  try {
    const uri = `nbd+unix:///img?socket=${socket}`;
    const r = await node.cliJson<ImportResult>(['disk', 'import', uri, 'from-qemu', '--streams', '4']);
    assert.equal(r.sparse, true, 'qemu-nbd reports base:allocation');
    assert.equal(r.sizeBytes, 64 * MiB);
    // qcow2 allocates 64 KiB clusters: what is read is the data rounded out to clusters; zero parts of them are not written.
    assert.ok(r.bytesRead < 16 * MiB && r.bytesRead >= data, `read ${r.bytesRead} of 64 MiB (data ${data})`);
    assert.ok(r.bytesCopied <= r.bytesRead && r.bytesCopied >= data - 64 * 1024, `copied ${r.bytesCopied}`);
    await assertDiskEquals('from-qemu', raw);
  } finally {
    child.kill();
  }
});

test('nbdkit: the data plugin with a sparse layout, and the memory plugin written by nbdcopy', async (t) => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-data.sock');
  // Runs of bytes at 1 MiB, 17 MiB and at the last 4 KiB of 48 MiB; the rest is sparse.
  const layout = '@1048576 ( 0x55 0xaa 0x01 )*100000 @17825792 ( "tessera" )*20000 @50327552 ( 0x7f )*4096';
  const child = await serveOn(nbdkit, ['-f', '-U', socket, 'data', layout, 'size=48M'], socket);
  try {
    const uri = `nbd+unix:///?socket=${socket}`;
    const expected = join(dir, 'nbdkit-data.raw');
    await nbdcopy(uri, expected);
    const r = await node.cliJson<ImportResult>(['disk', 'import', uri, 'from-nbdkit', '--streams', '3']);
    assert.equal(r.sizeBytes, 48 * MiB);
    assert.equal(r.sparse, true);
    assert.ok(r.bytesRead < 2 * MiB, `read ${r.bytesRead}: the data plugin reports its sparse pages`);
    await assertDiskEquals('from-nbdkit', expected);
  } finally {
    child.kill();
  }
  // The memory plugin, filled through NBD with a sparse image.
  const seed = testSeed(t);
  const src = join(dir, 'mem-src.raw');
  await sparseImage(src, seed, 32 * MiB, [[MiB, 2 * MiB], [30 * MiB, 64 * 1024]]);
  const memSocket = join(dir, 'nbdkit-mem.sock');
  const mem = await serveOn(nbdkit, ['-f', '-U', memSocket, 'memory', '32M'], memSocket);
  try {
    const uri = `nbd+unix:///?socket=${memSocket}`;
    await nbdcopy(src, uri);
    const r = await node.cliJson<ImportResult>(['disk', 'import', uri, 'from-memory']);
    assert.ok(r.bytesRead < 8 * MiB, `read ${r.bytesRead} of 32 MiB`);
    await assertDiskEquals('from-memory', src);
  } finally {
    mem.kill();
  }
});

test('a server without structured replies (no allocation reported): all of it is read, its zeroes still not written', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-nosr.sock');
  const child = await serveOn(nbdkit, ['-f', '--no-sr', '-U', socket, 'data', '@2097152 ( 0x42 )*65536', 'size=16M'], socket);
  try {
    const uri = `nbd+unix:///?socket=${socket}`;
    const r = await node.cliJson<ImportResult>(['disk', 'import', uri, 'no-sr']);
    assert.equal(r.sparse, false);
    assert.equal(r.bytesRead, 16 * MiB);
    assert.equal(r.bytesCopied, 64 * 1024, 'one 64 KiB block holds data');
    const expected = join(dir, 'no-sr.raw');
    await nbdcopy(uri, expected);
    await assertDiskEquals('no-sr', expected);
  } finally {
    child.kill();
  }
});

test("another Tessera node's export over TCP, and a snapshot of it", async (t) => {
  const other = await startNode();
  try {
    const seed = testSeed(t);
    const src = join(dir, 'peer-src.raw');
    await sparseImage(src, seed, 32 * MiB, [[0, MiB], [9 * MiB, 300 * 1024], [31 * MiB, MiB]]);
    await other.cliOk(['disk', 'create', 'vm', '--size', '32M']);
    await nbdcopy(src, other.nbdUri('vm'), ['--destination-is-zero']);
    await other.cliOk(['snap', 'create', 'vm', 'base']);
    for (const [exp, name] of [['vm', 'peer'], ['vm@base', 'peer-base']] as const) {
      const r = await node.cliJson<ImportResult>(['disk', 'import', other.nbdUri(exp), name, '--streams', '2']);
      assert.equal(r.sparse, true);
      assert.ok(r.bytesRead <= 3 * MiB, `read ${r.bytesRead} of 32 MiB`);
      await assertDiskEquals(name, src);
    }
  } finally {
    await other.stop();
  }
});

test('bad sources and names get one clear line and leave no disk', async () => {
  const src = join(dir, 'small.raw');
  await sparseImage(src, 1, 4 * MiB, [[0, MiB]]);
  await node.cliOk(['disk', 'create', 'taken', '--size', '1M']);
  const port = await freePort();
  const cases: Array<[string[], number, RegExp]> = [
    [['disk', 'import', src, 'taken'], 1, /A disk named "taken" exists already/],
    [['disk', 'import', join(dir, 'missing.raw'), 'x1'], 1, /No file .*missing\.raw on the node/],
    [['disk', 'import', dir, 'x2'], 1, /is not a regular file/],
    [['disk', 'import', `nbd://127.0.0.1:${port}/vm`, 'x3'], 1, /Cannot reach the NBD server at 127\.0\.0\.1:\d+: ECONNREFUSED/],
    [['disk', 'import', node.nbdUri('no-such-disk'), 'x4'], 1, /has no export "no-such-disk"/],
    [['disk', 'import', 'nbds://127.0.0.1/vm', 'x5'], 1, /Unsupported NBD URI scheme nbds/],
    [['disk', 'import', 'nbd+unix:///vm', 'x6'], 1, /without \?socket=PATH/],
    [['disk', 'import', src, 'x7', '--streams', '0'], 2, /--streams must be a whole number from 1 to 16/],
    [['disk', 'import', src, 'bad/name'], 1, /name/i],
  ];
  for (const [args, code, message] of cases) {
    const r = await node.cli(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^tessera: error: /);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  assert.deepEqual((await diskNames()).filter((n) => /^x\d$|^bad/.test(n)), []);
});

test('a source larger than the node can hold is refused before anything is made', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-big.sock');
  // The pattern plugin reports all of itself as data: 64 TiB of it.
  const child = await serveOn(nbdkit, ['-f', '-U', socket, 'pattern', 'size=64T'], socket);
  try {
    const r = await node.cli(['disk', 'import', `nbd+unix:///?socket=${socket}`, 'too-big']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /The source holds 70368744177664 bytes of data; this node can take \d+ more before it is full/);
    assert.ok(!(await diskNames()).includes('too-big'));
  } finally {
    child.kill();
  }
});

test('a source that goes away mid-way fails the import, and the half-imported disk is deleted', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-slow.sock');
  // All data, read slowly: 64 pieces of 4 MiB at 200 ms each over 2 streams take ~6 s.
  const child = await serveOn(nbdkit, ['-f', '-U', socket, '--filter=delay', 'pattern', 'size=256M', 'rdelay=200ms'], socket);
  const cli = node.cli(['disk', 'import', `nbd+unix:///?socket=${socket}`, 'half', '--streams', '2']);
  await until(async () => (await diskNames()).includes('half'), 20_000, 'the import under way', 50);
  child.kill('SIGKILL');
  const r = await cli;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^tessera: error: .*(closed the connection|ECONNRESET|EPIPE).*; disk half was deleted\n$/);
  assert.ok(!(await diskNames()).includes('half'), 'no half-imported disk is left');
});

test('a node killed mid-import deletes the half-imported disk when it starts again', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-kill.sock');
  const child = await serveOn(nbdkit, ['-f', '-U', socket, '--filter=delay', 'pattern', 'size=256M', 'rdelay=200ms'], socket);
  const n = await startNode({ args: ['--log-format', 'json'] });
  try {
    const cli = n.cli(['disk', 'import', `nbd+unix:///?socket=${socket}`, 'cut', '--streams', '2']);
    await until(async () => (await n.cliJson<Array<{ name: string }>>(['disk', 'list'])).some((d) => d.name === 'cut'), 20_000, 'the import under way', 50);
    await n.kill('SIGKILL');
    const r = await cli;
    assert.equal(r.code, 1, 'the command fails with its node');
    await n.start();
    assert.deepEqual((await n.cliJson<Array<{ name: string }>>(['disk', 'list'])).map((d) => d.name), [], 'no half-imported disk after the restart');
    const records = await n.logRecords();
    assert.ok(records.some((x) => x.component === 'import' && x.disk === 'cut' && /import was cut short/.test(String(x.msg))), 'the node logged the deletion');
  } finally {
    child.kill();
    await n.stop();
  }
});

test('an import whose client goes away (Ctrl-C) stops and deletes its disk', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-abandon.sock');
  const child = await serveOn(nbdkit, ['-f', '-U', socket, '--filter=delay', 'pattern', 'size=256M', 'rdelay=200ms'], socket);
  try {
    const cli = node.cli(['disk', 'import', `nbd+unix:///?socket=${socket}`, 'abandoned']);
    await until(async () => (await diskNames()).includes('abandoned'), 20_000, 'the import under way', 50);
    const tessera = (await runOk('pgrep', ['-f', 'disk import nbd\\+unix:///\\?socket=.*nbdkit-abandon'])).trim().split('\n');
    for (const pid of tessera) process.kill(Number(pid), 'SIGINT');
    await cli;
    await until(async () => !(await diskNames()).includes('abandoned'), 20_000, 'the abandoned disk deleted', 50);
  } finally {
    child.kill();
  }
});

test('a fifth import at once is refused as busy, and a node serving read-only refuses imports', async () => {
  const nbdkit = requireTool('nbdkit', 'nbdkit');
  const socket = join(dir, 'nbdkit-busy.sock');
  const child = await serveOn(nbdkit, ['-f', '-U', socket, '--filter=delay', 'pattern', 'size=64M', 'rdelay=100ms'], socket);
  try {
    const uri = `nbd+unix:///?socket=${socket}`;
    const four = [1, 2, 3, 4].map((i) => node.cli(['disk', 'import', uri, `busy${i}`, '--streams', '1']));
    await until(async () => (await diskNames()).filter((n) => n.startsWith('busy')).length === 4, 20_000, 'four imports under way', 50);
    const fifth = await node.cli(['disk', 'import', uri, 'busy5']);
    assert.equal(fifth.code, 1, fifth.stderr);
    assert.match(fifth.stderr, /4 imports run on this node already; try again once one is done/);
    for (const r of await Promise.all(four)) assert.equal(r.code, 0, r.stderr);
  } finally {
    child.kill();
  }
  const rw = await startNode();
  await rw.cliOk(['disk', 'create', 'd', '--size', '1M']);
  await rw.stop();
  const ro = await startNode({ dataDir: rw.dataDir, args: ['--read-only'] });
  try {
    const src = join(dir, 'ro.raw');
    await sparseImage(src, 2, MiB, [[0, 4096]]);
    const r = await ro.cli(['disk', 'import', src, 'x']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /runs read-only .*POST \/api\/v1\/disks\/x\/import would change it/);
  } finally {
    await ro.stop();
  }
});
