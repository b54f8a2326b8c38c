/**
 * `tessera serve --read-only` (docs/engine.md, "Read-only mode"; docs/cli.md, serve), and the
 * data directories a node cannot start on. On a read-only file system a node started with
 * --read-only serves every disk and snapshot to real clients (nbdcopy, qemu-img, qemu-io, a backup
 * the node runs), the log tail the index had not absorbed included; an NBD write gets EPERM, the
 * API's changes 409 READ_ONLY; no file changes. Without --read-only it says the file system is
 * read-only. A data directory the node may not use, and a log segment missing or cut, stop the
 * start with one line naming the path, and change nothing; read-only, the rest is served.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import {
  asNobody, assertFilesEqual, cleanup, makeTempDir, MiB, mountTmpfs, nbdcopy, nobody, qemuImg, qemuIo, remount, requirePythonNbd, run, runOk,
  TesseraNode, tesseraBin, treeState, writeSeededFile,
} from '../helpers/index.ts';
import { openTestRepo, password } from '../backup/harness.ts';

after(cleanup);

const makeLogTail = fileURLToPath(new URL('./make-log-tail.ts', import.meta.url));
/** Records make-log-tail.ts leaves outside the index, and where it writes them (0x5a blocks). */
const tailRecords = 300;
const tailOffsets = Array.from({ length: tailRecords }, (_, i) => ((i * 7919) % 262_144) * 4096);

/** `tessera serve` on `dataDir` with free ports, run to its end (a start that fails exits). */
function serve(dataDir: string, extra: string[] = [], wrap: (cmd: string, args: string[]) => [string, string[]] = (c, a) => [c, a]) {
  const socket = join(makeTempDir('tessera-ro-sock-'), 'nbd.sock');
  const [cmd, args] = wrap(tesseraBin, ['serve', '--data', dataDir, '--nbd-port', '0', '--api-port', '0', '--host', '127.0.0.1', '--socket', socket, ...extra]);
  return run(cmd, args, { timeoutMs: 60_000 });
}

/** The one line a start that failed prints on stderr. */
function startFailure(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.startsWith('tessera: error: '));
  assert.equal(lines.length, 1, `one error line: ${stderr}`);
  return lines[0].slice('tessera: error: '.length);
}

/**
 * Sends a 4 KiB write to `uri` with libnbd's own check of the read-only flag off: what the export
 * says it is, then the server's answer.
 */
async function nbdWriteErrno(uri: string): Promise<string> {
  const py = requirePythonNbd();
  const script = [
    'import nbd, sys',
    'h = nbd.NBD()',
    'h.set_strict_mode(0)  # send the write even though the export is read-only',
    'h.connect_uri(sys.argv[1])',
    'print("read-only" if h.is_read_only() else "writable")',
    'try:',
    '    h.pwrite(b"x" * 4096, 0)',
    '    print("written")',
    'except nbd.Error as e:',
    '    print("errno", e.errno)',
  ].join('\n');
  return (await runOk(py, ['-c', script, uri])).trim();
}

test('serve --read-only on a read-only file system: real clients read every disk, the log tail included; writes and changes are refused; nothing changes', async (t) => {
  const mnt = mountTmpfs(t, 512 * MiB);
  const dataDir = join(mnt, 'data');
  const work = makeTempDir('tessera-ro-node-');
  const base = join(work, 'base.raw');
  const vm = join(work, 'vm.raw');
  // A node writes a disk and a snapshot, then stops; a process killed before the index took its
  // writes leaves a log tail (make-log-tail.ts).
  const writer = new TesseraNode({ dataDir });
  await writer.start();
  try {
    await writer.cliOk(['disk', 'create', 'vm', '--size', '64M']);
    await writeSeededFile(base, 18, 'base', 48 * MiB);
    await nbdcopy(base, writer.nbdUri('vm'), ['--flush']);
    await writer.cliOk(['snap', 'create', 'vm', 'base']);
    assert.equal((await qemuIo(writer.nbdUri('vm'), ['write -q -P 0x77 1M 64k', 'write -q -z 8M 1M', 'flush'])).code, 0);
    await nbdcopy(writer.nbdUri('vm'), vm);
  } finally {
    await writer.stop();
  }
  const made = await runOk(process.execPath, [makeLogTail, join(dataDir, 'store'), 'tail', String(tailRecords)]);
  assert.equal(made.trim(), String(tailRecords), 'a log tail the index has not absorbed');
  remount(mnt, 'ro');
  const before = treeState(mnt);

  const refused = await serve(dataDir);
  assert.equal(refused.code, 1, refused.stderr);
  assert.equal(startFailure(refused.stderr), `cannot start the node: the data directory ${dataDir} is on a read-only file system; start the node with --read-only to serve its disks read-only`);

  const node = new TesseraNode({ dataDir, args: ['--read-only'] });
  await node.start();
  try {
    assert.equal(node.readOnly, true, 'the ready line says read-only');
    const info = (await (await fetch(`${node.api}/api/v1/node`)).json()) as { readOnly: boolean; disks: number; hlc: string | null };
    assert.equal(info.readOnly, true);
    assert.equal(info.disks, 2);
    assert.equal(info.hlc, null, 'a read-only node keeps no clock: it would have to write its bound');
    assert.match(await node.cliOk(['node', 'info']), new RegExp(`Data dir: +${dataDir} \\(read-only\\)`));
    assert.match(node.logTail(), /store open read-only/);

    // Real clients read what was written, the snapshot, and the tail from the overlay.
    const pulled = join(work, 'vm-pulled.raw');
    await nbdcopy(node.nbdUri('vm'), pulled);
    await assertFilesEqual(vm, pulled, 'vm read with nbdcopy');
    const converted = join(work, 'base-converted.raw');
    await qemuImg(['convert', '-f', 'raw', '-O', 'raw', node.nbdUri('vm@base'), converted]);
    fs.truncateSync(converted, 48 * MiB);
    await assertFilesEqual(base, converted, 'vm@base read with qemu-img');
    const reads = tailOffsets.slice(0, 40).map((o) => `read -q -P 0x5a ${o} 4k`);
    const unwritten = Array.from({ length: 8 }, (_, b) => b * 4096).find((o) => !tailOffsets.includes(o))!;
    const tail = await qemuIo(node.nbdUri('tail'), [...reads, `read -q -P 0 ${unwritten} 4k`], { readOnly: true });
    assert.equal(tail.code, 0, `the log tail reads back: ${tail.stdout}${tail.stderr}`);
    assert.doesNotMatch(tail.stdout, /Pattern verification failed/);

    // An NBD write: the export says read-only, and a write sent anyway gets EPERM.
    assert.equal(await nbdWriteErrno(node.nbdUri('vm')), 'read-only\nerrno EPERM');
    // The API refuses every change with 409 READ_ONLY, before it reads a body.
    for (const [method, path, body] of [
      ['POST', '/disks', { name: 'new', sizeBytes: MiB }],
      ['DELETE', '/disks/vm', undefined],
      ['POST', '/disks/vm/snapshots', { name: 's2' }],
      ['POST', '/disks/vm/snapshots/base/revert', undefined],
      ['POST', '/compact', undefined],
    ] as const) {
      const res = await fetch(`${node.api}/api/v1${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      const reply = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 409, `${method} ${path}`);
      assert.equal(reply.error.code, 'READ_ONLY');
      assert.equal(reply.error.message, `The node runs read-only (tessera serve --read-only): ${method} /api/v1${path} would change it`);
    }
    const write = await fetch(`${node.api}/api/v1/disks/vm/data?offset=0`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(4096) });
    assert.equal(write.status, 409);
    await write.body?.cancel();
    assert.equal((await fetch(`${node.api}/api/v1/disks/vm/flush`, { method: 'POST' })).status, 204, 'a flush has nothing to do');
    const create = await node.cli(['disk', 'create', 'new', '--size', '1M']);
    assert.notEqual(create.code, 0);
    assert.match(create.stderr, /The node runs read-only \(tessera serve --read-only\)/);

    // A backup the node runs reads the disk as it is (no snapshot: it cannot change) and restores byte-exact.
    const repoDir = join(work, 'repo');
    const r = await openTestRepo(repoDir, { init: {} });
    await r.close();
    const env = { ...process.env, TESSERA_PASSWORD: password, TESSERA_CACHE_DIR: join(work, 'cli-cache') };
    const backup = await run(tesseraBin, ['--api', node.api, 'backup', 'create', 'vm', '--repo', repoDir, '--json'], { env, timeoutMs: 120_000 });
    assert.equal(backup.code, 0, `${backup.stderr}\nnode log: ${node.logTail().slice(-2000)}`);
    assert.match(backup.stderr, /the node runs read-only: the disks are backed up as they are, without a snapshot/);
    const [outcome] = JSON.parse(backup.stdout) as { id: string }[];
    const restored = join(work, 'vm-restored.raw');
    const restore = await run(tesseraBin, ['backup', 'restore', outcome.id, '--repo', repoDir, '--to-file', restored], { env, timeoutMs: 120_000 });
    assert.equal(restore.code, 0, restore.stderr);
    await assertFilesEqual(vm, restored, 'the backup of the read-only node, restored');
    assert.deepEqual(JSON.parse(await node.cliOk(['snap', 'list', 'vm', '--json'])).map((s: { name: string }) => s.name), ['base'], 'no snapshot was taken');
  } finally {
    await node.stop();
  }
  assert.deepEqual(treeState(mnt), before, 'no file or directory changed, not even its time');
});

test('a data directory the node may not write, or read: the start is refused naming it, its owner and the user', async () => {
  const base = makeTempDir('tessera-ro-denied-');
  fs.chmodSync(base, 0o755);
  const dataDir = join(base, 'data');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  const before = treeState(dataDir);
  const asNobodyWithCache = (cmd: string, args: string[]) => asNobody('env', [`NODE_COMPILE_CACHE=${fs.mkdtempSync('/tmp/tessera-nobody-')}`, cmd, ...args]);
  const rw = await serve(dataDir, [], asNobodyWithCache);
  assert.equal(rw.code, 1, rw.stderr);
  assert.equal(startFailure(rw.stderr), `cannot start the node: permission denied: the node, running as uid ${nobody.uid}, may not write ${dataDir} (owned by uid 0, mode 0700)`);
  const ro = await serve(dataDir, ['--read-only'], asNobodyWithCache);
  assert.equal(ro.code, 1, ro.stderr);
  assert.equal(startFailure(ro.stderr), `cannot start the node: permission denied: the node, running as uid ${nobody.uid}, may not read ${dataDir} (owned by uid 0, mode 0700)`);
  assert.deepEqual(treeState(dataDir), before, 'nothing was made there');
});

test('a log segment cut short or missing: the start is refused naming it and changes nothing; read-only the other disks are served, reads of the lost blocks fail', async () => {
  const dataDir = join(makeTempDir('tessera-ro-damaged-'), 'data');
  const writer = new TesseraNode({ dataDir });
  await writer.start();
  try {
    await writer.cliOk(['disk', 'create', 'lost', '--size', '8M']);
    assert.equal((await qemuIo(writer.nbdUri('lost'), ['write -q -P 0x11 0 4M', 'flush'])).code, 0);
  } finally {
    await writer.stop();
  }
  const store = join(dataDir, 'store');
  const segments = fs.readdirSync(join(store, 'log')).map((n) => join(store, 'log', n));
  const file = segments.reduce((a, b) => (fs.statSync(a).size >= fs.statSync(b).size ? a : b));
  const size = fs.statSync(file).size;
  // LMDB's lock file is the running process's table of readers.
  const skip = (p: string) => p === 'index' || p === join('index', 'lock.mdb');

  fs.truncateSync(file, size - 4096);
  let before = treeState(store, skip);
  const cut = await serve(dataDir);
  assert.equal(cut.code, 1, cut.stderr);
  assert.equal(
    startFailure(cut.stderr),
    `cannot start the node: The write log is damaged: ${file} is truncated: 4096 bytes are missing (the file has ${size - 4096}, the index took records up to byte ${size}); it holds 4 MiB of live data. Nothing was changed; a read-only open serves what is left`,
  );
  assert.deepEqual(treeState(store, skip), before, 'no file of the store changed');

  fs.rmSync(file);
  before = treeState(store, skip);
  const missing = await serve(dataDir);
  assert.equal(missing.code, 1, missing.stderr);
  assert.equal(startFailure(missing.stderr), `cannot start the node: The write log is damaged: ${file} is missing; it holds 4 MiB of live data. Nothing was changed; a read-only open serves what is left`);
  assert.deepEqual(treeState(store, skip), before, 'no file of the store changed');

  const node = new TesseraNode({ dataDir, args: ['--read-only'] });
  await node.start();
  try {
    assert.match(node.logTail(), /store damaged: .*0000000001\.seg is missing; it holds 4 MiB of live data; reads of those blocks fail/);
    const lost = await qemuIo(node.nbdUri('lost'), ['read -q 0 4k'], { readOnly: true });
    assert.match(lost.stdout + lost.stderr, /Input\/output error/, 'a read of a lost block fails with EIO');
    const hole = await qemuIo(node.nbdUri('lost'), ['read -q -P 0 6M 4k'], { readOnly: true });
    assert.equal(hole.code, 0, `what was never written still reads: ${hole.stdout}${hole.stderr}`);
  } finally {
    await node.stop();
  }
  assert.deepEqual(treeState(store, skip), before, 'no file of the store changed');
});
