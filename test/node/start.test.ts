/** The daemon behind `tessera serve`, in process: startNode's locking, exports and cleanup. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { NodeError, NodeErrorCode, startNode } from '../../src/node/index.ts';
import { storeExports } from '../../src/node/provider.ts';
import type { RunningNode } from '../../src/node/index.ts';
import { Store } from '../../src/engine/index.ts';
import { nbdOpen } from '../cli/nbd-handshake.ts';

const dirs: string[] = [];
const nodes: RunningNode[] = [];

after(async () => {
  for (const node of nodes) await node.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-serve-'));
  dirs.push(dir);
  return dir;
}

async function start(dataDir: string, overrides: { apiPort?: number; nbdPort?: number } = {}): Promise<RunningNode> {
  const node = await startNode({
    dataDir,
    host: '127.0.0.1',
    nbdPort: overrides.nbdPort ?? 0,
    apiPort: overrides.apiPort ?? 0,
    socketPath: join(dataDir, 'nbd.sock'),
  });
  nodes.push(node);
  return node;
}

async function stop(node: RunningNode): Promise<void> {
  await node.close();
  nodes.splice(nodes.indexOf(node), 1);
}

test('startNode refuses a data dir another node of this process holds, and frees it on close', async () => {
  const dir = tempDir();
  const node = await start(dir);
  await assert.rejects(start(dir), (err: unknown) => err instanceof NodeError && err.code === NodeErrorCode.LOCKED);
  await stop(node);
  assert.equal(existsSync(join(dir, 'tessera.lock')), false);
  assert.equal(existsSync(join(dir, 'nbd.sock')), false);
  await stop(await start(dir));
});

test('startNode takes over a lock file left by a process that is gone', async () => {
  const dir = tempDir();
  // A pid that was just in use and is not any more.
  const gone = spawnSync(process.execPath, ['-e', '0']).pid;
  assert.ok(gone);
  writeFileSync(join(dir, 'tessera.lock'), `${gone}\n`);
  const node = await start(dir);
  assert.match(node.api, /^http:\/\/127\.0\.0\.1:\d+$/);
  await stop(node);
});

test('startNode refuses a data dir whose lock names a live process', async () => {
  const dir = tempDir();
  // pid 1 is always alive.
  writeFileSync(join(dir, 'tessera.lock'), '1\n');
  await assert.rejects(start(dir), /data directory is in use by another Tessera node \(pid 1/);
});

test('startNode undoes what it started when a later step fails, so the next start succeeds', async () => {
  const dir = tempDir();
  const blocker: Server = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const { port } = blocker.address() as { port: number };
  const inUse = (what: string) => (err: unknown) =>
    err instanceof NodeError && err.code === NodeErrorCode.LISTEN && err.message === `cannot listen for ${what} on 127.0.0.1:${port}: address in use`;
  try {
    await assert.rejects(start(dir, { apiPort: port }), inUse('API'));
    assert.equal(existsSync(join(dir, 'tessera.lock')), false, 'lock released');
    assert.equal(existsSync(join(dir, 'nbd.sock')), false, 'socket removed');
    await assert.rejects(start(dir, { nbdPort: port }), inUse('NBD'));
    assert.equal(existsSync(join(dir, 'tessera.lock')), false, 'lock released');
  } finally {
    await new Promise<void>((r) => blocker.close(() => r()));
  }
  // The store was closed too: it opens again.
  await stop(await start(dir));
});

test('startNode serves the store over NBD on TCP and the Unix socket, and the API reports both', async () => {
  const dir = tempDir();
  const node = await start(dir);
  const created = await fetch(`${node.api}/api/v1/disks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'd1', sizeBytes: 1 << 20 }),
  });
  assert.equal(created.status, 201);
  const overUnix = await nbdOpen(node.socket, 'd1');
  assert.equal(overUnix.sizeBytes, 1 << 20);
  const overTcp = await nbdOpen(node.nbd, 'd1');
  assert.equal(overTcp.sizeBytes, 1 << 20);
  const info = (await (await fetch(`${node.api}/api/v1/node`)).json()) as any;
  assert.deepEqual(info.nbd, { tcp: node.nbd, socket: node.socket, connections: 2 });
  assert.equal(info.dataDir, dir);
  await overUnix.close();
  await overTcp.close();
  await stop(node);
});

test('storeExports exports every disk and every DISK@SNAP, snapshots read-only', async () => {
  const dir = tempDir();
  const store = await Store.open({ dir });
  try {
    await store.createDisk('a', 1 << 20);
    await store.createDisk('b', 1 << 20);
    await store.createSnapshot('a', 's1');
    await store.createSnapshot('a', 's2');
    const exports = storeExports(store);
    assert.deepEqual(exports.listExports().sort(), ['a', 'a@s1', 'a@s2', 'b']);
    const head = exports.openExport('a');
    assert.equal(head.readOnly, false);
    head.close();
    const snap = exports.openExport('a@s1');
    assert.equal(snap.readOnly, true);
    assert.equal(snap.snapshot, 's1');
    snap.close();
    assert.throws(() => exports.openExport('a@nope'), { code: 'ENGINE_NOT_FOUND' });
    assert.throws(() => exports.openExport('nope'), { code: 'ENGINE_NOT_FOUND' });
    // changedSince references: all snapshots for the head, the older ones for a snapshot.
    assert.deepEqual(exports.listSnapshots('a'), ['s1', 's2']);
    assert.deepEqual(exports.listSnapshots('a@s2'), ['s1']);
    assert.deepEqual(exports.listSnapshots('a@s1'), []);
    assert.deepEqual(exports.listSnapshots('b'), []);
  } finally {
    await store.close();
  }
});
