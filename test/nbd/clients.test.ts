/**
 * Real NBD clients against the server over the real engine Store, over TCP and a Unix socket:
 * qemu-img, qemu-io (qemu-utils), nbdinfo and nbdcopy (libnbd-bin). A missing tool fails the
 * test with the package to install.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { cleanup, makeTempDir, requireTool, run, runOk, testSeed, writeSeededFile } from '../helpers/index.ts';
import { NbdClient } from './client.ts';
import { storeProvider } from './harness.ts';
import { Logger } from '../../src/observe/index.ts';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
let dir: string;
let store: Store;
let server: NbdServer;
let port: number;
let socketPath: string;
const logs: string[] = [];

const tools = {
  qemuImg: () => requireTool('qemu-img', 'qemu-utils'),
  qemuIo: () => requireTool('qemu-io', 'qemu-utils'),
  nbdinfo: () => requireTool('nbdinfo', 'libnbd-bin'),
  nbdcopy: () => requireTool('nbdcopy', 'libnbd-bin'),
};

const tcp = (name: string) => `nbd://127.0.0.1:${port}/${name}`;
const unix = (name: string) => `nbd+unix:///${name}?socket=${socketPath}`;

before(async () => {
  dir = makeTempDir('tessera-nbd-clients-');
  store = await Store.open({ dir: join(dir, 'store') });
  server = new NbdServer({ provider: storeProvider(store), log: Logger.create({ level: 'debug', format: 'text', write: (line) => logs.push(line) }) });
  port = (await server.listenTcp({ host: '127.0.0.1', port: 0 })).port;
  socketPath = join(dir, 'nbd.sock');
  await server.listenUnix(socketPath);
});

after(async () => {
  await server.close();
  await store.close();
  await cleanup();
});

interface MapExtent {
  offset: number;
  length: number;
  type: number;
}

async function nbdinfoMap(uri: string, context?: string): Promise<MapExtent[]> {
  const out = await runOk(tools.nbdinfo(), [context ? `--map=${context}` : '--map', '--json', uri]);
  const merged: MapExtent[] = [];
  for (const e of JSON.parse(out) as MapExtent[]) {
    const last = merged.at(-1);
    if (last && last.type === e.type) last.length += e.length;
    else merged.push({ offset: e.offset, length: e.length, type: e.type });
  }
  return merged;
}

test('clients qemu-img info reports the virtual size over TCP and Unix socket', async () => {
  await store.createDisk('info', SIZE);
  for (const uri of [tcp('info'), unix('info')]) {
    const info = JSON.parse(await runOk(tools.qemuImg(), ['info', '--output=json', uri])) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], SIZE, uri);
  }
});

test('clients qemu-io writes a pattern and reads it back, over TCP and Unix socket', async () => {
  await store.createDisk('io', SIZE);
  for (const [uri, offset] of [
    [tcp('io'), 0],
    [unix('io'), 5 * MiB + 512],
  ] as const) {
    const r = await run(tools.qemuIo(), ['-f', 'raw', uri, '-c', `write -P 0xab ${offset} 64k`, '-c', `read -P 0xab ${offset} 64k`, '-c', `read -P 0 ${offset + 64 * 1024} 4k`]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.doesNotMatch(r.stdout + r.stderr, /failed|error/i);
  }
  const volume = store.openVolume('io');
  try {
    assert.deepEqual(await volume.read(5 * MiB + 512, 64 * 1024), Buffer.alloc(64 * 1024, 0xab));
  } finally {
    volume.close();
  }
});

test('clients qemu-img convert copies a file in and out byte-exactly', async (t) => {
  const seed = testSeed(t);
  await store.createDisk('convert', SIZE);
  const source = join(dir, 'convert-src.raw');
  await writeSeededFile(source, seed, 'convert', SIZE);
  await runOk(tools.qemuImg(), ['convert', '-n', '-f', 'raw', '-O', 'raw', source, tcp('convert')]);
  const back = join(dir, 'convert-back.raw');
  await runOk(tools.qemuImg(), ['convert', '-f', 'raw', '-O', 'raw', unix('convert'), back]);
  assert.ok(readFileSync(back).equals(readFileSync(source)), `seed ${seed}: round trip through qemu-img convert`);
});

test('clients nbdcopy copies both ways with multiple connections over TCP and Unix socket', async (t) => {
  const seed = testSeed(t);
  await store.createDisk('copy', SIZE);
  const source = join(dir, 'copy-src.raw');
  await writeSeededFile(source, seed, 'copy', SIZE);
  await runOk(tools.nbdcopy(), ['--flush', '--connections=4', source, unix('copy')]);
  const back = join(dir, 'copy-back.raw');
  await runOk(tools.nbdcopy(), ['--connections=4', tcp('copy'), back]);
  assert.ok(readFileSync(back).equals(readFileSync(source)), `seed ${seed}: round trip through nbdcopy`);
  // And export to export, TCP to Unix socket.
  await store.createDisk('copy2', SIZE);
  await runOk(tools.nbdcopy(), [tcp('copy'), unix('copy2')]);
  const back2 = join(dir, 'copy2-back.raw');
  await runOk(tools.nbdcopy(), [unix('copy2'), back2]);
  assert.ok(readFileSync(back2).equals(readFileSync(source)), `seed ${seed}: export to export`);
});

test('clients nbdinfo --list lists disks and snapshot exports', async () => {
  await store.createDisk('listed', MiB);
  await store.createSnapshot('listed', 'snap1');
  const out = JSON.parse(await runOk(tools.nbdinfo(), ['--list', '--json', `nbd://127.0.0.1:${port}`])) as {
    exports: { 'export-name': string; is_read_only: boolean; contexts: string[] }[];
  };
  const byName = new Map(out.exports.map((e) => [e['export-name'], e]));
  assert.equal(byName.get('listed')?.is_read_only, false);
  assert.equal(byName.get('listed@snap1')?.is_read_only, true);
  assert.deepEqual(byName.get('listed')?.contexts, ['base:allocation', 'tessera:changed-since:snap1', 'qemu:dirty-bitmap:snap1']);
});

test('clients nbdinfo --map reports holes and data', async () => {
  await store.createDisk('mapped', SIZE);
  const client = await NbdClient.connect({ path: socketPath }, { exportName: 'mapped' });
  await client.write(MiB, Buffer.alloc(64 * 1024, 1));
  await client.write(8 * MiB, Buffer.alloc(4096, 2));
  await client.disconnect();
  assert.deepEqual(await nbdinfoMap(tcp('mapped')), [
    { offset: 0, length: MiB, type: 3 },
    { offset: MiB, length: 64 * 1024, type: 0 },
    { offset: MiB + 64 * 1024, length: 7 * MiB - 64 * 1024, type: 3 },
    { offset: 8 * MiB, length: 4096, type: 0 },
    { offset: 8 * MiB + 4096, length: SIZE - 8 * MiB - 4096, type: 3 },
  ]);
});

test('clients nbdinfo --map=tessera:changed-since:SNAP and qemu-img map x-dirty-bitmap show the blocks written since SNAP', async () => {
  await store.createDisk('incr', SIZE);
  const client = await NbdClient.connect({ host: '127.0.0.1', port }, { exportName: 'incr' });
  await client.write(0, Buffer.alloc(2 * MiB, 7));
  await store.createSnapshot('incr', 'monday');
  await client.write(3 * MiB, Buffer.alloc(128 * 1024, 8));
  await client.disconnect();
  const changed = [
    { offset: 0, length: 3 * MiB, type: 0 },
    { offset: 3 * MiB, length: 128 * 1024, type: 1 },
    { offset: 3 * MiB + 128 * 1024, length: SIZE - 3 * MiB - 128 * 1024, type: 0 },
  ];
  assert.deepEqual(await nbdinfoMap(tcp('incr'), 'tessera:changed-since:monday'), changed);
  assert.deepEqual(await nbdinfoMap(unix('incr'), 'qemu:dirty-bitmap:monday'), changed);
  // qemu reads the dirty bitmap in place of allocation: dirty runs come out as "data": false.
  const opts = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=incr,x-dirty-bitmap=qemu:dirty-bitmap:monday`;
  const map = JSON.parse(await runOk(tools.qemuImg(), ['map', '--output=json', '--image-opts', opts])) as { start: number; length: number; data: boolean }[];
  assert.deepEqual(
    map.filter((m) => !m.data).map((m) => [m.start, m.length]),
    [[3 * MiB, 128 * 1024]],
  );
});

test('clients a read-only snapshot export refuses writes and serves the snapshot contents', async () => {
  await store.createDisk('ro', SIZE);
  const client = await NbdClient.connect({ path: socketPath }, { exportName: 'ro' });
  await client.write(0, Buffer.alloc(64 * 1024, 0xcd));
  await client.disconnect();
  await store.createSnapshot('ro', 'frozen');
  const write = await run(tools.qemuIo(), ['-f', 'raw', tcp('ro@frozen'), '-c', 'write -P 0x11 0 4k']);
  assert.notEqual(write.code, 0, 'qemu-io write to a snapshot export fails');
  assert.match(write.stderr + write.stdout, /Permission denied|read-only|read only/i);
  const read = await run(tools.qemuIo(), ['-f', 'raw', '-r', unix('ro@frozen'), '-c', 'read -P 0xcd 0 64k']);
  assert.equal(read.code, 0, read.stderr + read.stdout);
  assert.doesNotMatch(read.stdout + read.stderr, /failed/i);
  const snap = await NbdClient.connect({ host: '127.0.0.1', port }, { exportName: 'ro@frozen', structured: false });
  await assert.rejects(snap.write(0, Buffer.alloc(4096)), (err: { errno?: number }) => err.errno === 1);
  await snap.disconnect();
});

test('clients see an unknown export refused with a message', async () => {
  const r = await run(tools.nbdinfo(), [tcp('no-such-disk')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no-such-disk|unknown|not found/i);
  assert.deepEqual(
    logs.filter((l) => /: bug /.test(l)),
    [],
    'no bug logged',
  );
});
