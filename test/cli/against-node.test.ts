/**
 * The CLI and the daemon as a user meets them: failures are one stderr line and a non-zero
 * exit, leave the node unchanged; the node starts, stops on SIGTERM with status 0, and keeps
 * its data dir to itself.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  makeTempDir, MiB, nbdinfo, qemuIo, requirePythonNbd, requireTool, run, spawnTracked, startNode, useNode, tesseraBin,
} from '../helpers/index.ts';

const node = useNode({
  setup: async (n) => {
    await n.cliOk(['disk', 'create', 'there', '--size', '8M']);
    await n.cliOk(['snap', 'create', 'there', 's1']);
    await n.cliOk(['disk', 'create', 'other', '--size', '1M']);
  },
});

/** Each failing command, and a word its error line must contain. */
const failures: [string, string[], RegExp][] = [
  ['unknown disk: rm', ['disk', 'rm', 'nosuch'], /nosuch/],
  ['unknown disk: resize', ['disk', 'resize', 'nosuch', '--size', '1M'], /nosuch/],
  ['unknown disk: snapshot', ['snap', 'create', 'nosuch', 's'], /nosuch/],
  ['unknown disk: list snapshots', ['snap', 'list', 'nosuch'], /nosuch/],
  ['duplicate disk', ['disk', 'create', 'there', '--size', '1M'], /there/],
  ['duplicate snapshot', ['snap', 'create', 'there', 's1'], /s1/],
  ['clone onto an existing disk', ['disk', 'clone', 'there@s1', 'other'], /other/],
  ['clone of an unknown snapshot', ['disk', 'clone', 'there@nosnap', 'new'], /nosnap/],
  ['clone without @SNAP', ['disk', 'clone', 'there', 'new'], /there/],
  ['revert to an unknown snapshot', ['snap', 'revert', 'there', 'nosnap'], /nosnap/],
  ['delete an unknown snapshot', ['snap', 'rm', 'there', 'nosnap'], /nosnap/],
  ['bad size: words', ['disk', 'create', 'bad', '--size', 'banana'], /banana/],
  ['bad size: not a multiple of 512', ['disk', 'create', 'bad', '--size', '1000'], /1000/],
  ['bad size: zero', ['disk', 'create', 'bad', '--size', '0'], /0/],
  ['bad size: negative', ['disk', 'create', 'bad', '--size=-1M'], /-1M/],
  ['missing size', ['disk', 'create', 'bad'], /size/],
  ['missing name', ['disk', 'create', '--size', '1M'], /NAME/],
  ['unknown command', ['disk', 'frobnicate'], /frobnicate/],
  ['unknown option', ['disk', 'list', '--colour'], /colour/],
];

for (const [what, args, mentions] of failures) {
  test(`tessera ${args.join(' ')} fails with one error line (${what})`, async () => {
    const r = await node.cli(args);
    assert.notEqual(r.code, 0, `exit status; stdout: ${r.stdout}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one stderr line, got: ${r.stderr}`);
    assert.match(lines[0]!, /^tessera: error: /);
    assert.match(lines[0]!, mentions);
    assert.equal(r.stdout, '');
  });
}

test('tessera fails with one error line when no node answers at --api', async () => {
  const r = await run(tesseraBin, ['--api', 'http://127.0.0.1:1', 'disk', 'list']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^tessera: error: .*127\.0\.0\.1:1/);
});

test('failed commands leave disks and snapshots unchanged', async () => {
  for (const [, args] of failures) await node.cli(args);
  const disks = await node.cliJson<{ name: string; sizeBytes: number; snapshots: string[] }[]>(['disk', 'list']);
  const byName = Object.fromEntries(disks.map((d) => [d.name, [d.sizeBytes, d.snapshots]]));
  assert.deepEqual(byName.there, [8 * MiB, ['s1']]);
  assert.deepEqual(byName.other, [1 * MiB, []]);
  assert.equal(byName.bad, undefined);
  assert.equal(byName.new, undefined);
});

test('an NBD client asking for an unknown export is refused', async () => {
  requireTool('nbdinfo', 'libnbd-bin');
  await assert.rejects(nbdinfo([node.nbdUri('nosuch')]));
  await assert.rejects(nbdinfo([node.nbdUri('there@nosnap')]));
  const r = await qemuIo(node.nbdUri('nosuch'), ['read 0 512']);
  assert.notEqual(r.code, 0);
});

test('tessera disk rm of a disk an NBD client has open fails with one error line, and works once it left', async () => {
  await node.cliOk(['disk', 'create', 'busy', '--size', '1M']);
  // A libnbd client that stays connected until its stdin closes.
  const script = 'import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint("connected", flush=True)\nsys.stdin.read()\nh.shutdown()\n';
  const client = spawnTracked(requirePythonNbd(), ['-c', script, node.nbdUri('busy')]);
  const exited = new Promise<number | null>((resolve) => client.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    client.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('connected')) resolve(); });
    void exited.then((code) => reject(new Error(`client exited (${code}) before connecting`)));
  });
  const r = await node.cli(['disk', 'rm', 'busy']);
  assert.notEqual(r.code, 0, 'a disk with a client connected was deleted');
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^tessera: error: .*busy/);
  client.stdin!.end();
  assert.equal(await exited, 0);
  // The server notices the client left asynchronously: retry for a while (bounded) before failing.
  let rm = await node.cli(['disk', 'rm', 'busy']);
  for (let i = 0; i < 50 && rm.code !== 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    rm = await node.cli(['disk', 'rm', 'busy']);
  }
  assert.equal(rm.code, 0, rm.stderr);
});

test('a second node on a data dir in use refuses to start', async () => {
  const sock = join(makeTempDir(), 'second.sock');
  const r = await run(tesseraBin, ['serve', '--data', node.dataDir, '--nbd-port', '0', '--api-port', '0', '--socket', sock], { timeoutMs: 120_000 });
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, '', 'no ready line');
  assert.match(r.stderr.trimEnd().split('\n').at(-1)!, /^tessera: error: .*in use/);
  // The first node is unaffected.
  await node.cliOk(['disk', 'list']);
});

test('a node exits 0 on SIGTERM and serves the same disks after a restart', async () => {
  const own = await startNode();
  await own.cliOk(['disk', 'create', 'keep', '--size', '4M']);
  const w = await qemuIo(own.nbdUri('keep'), ['write -P 0x42 0 1M']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  const stopped = await own.kill('SIGTERM');
  assert.deepEqual(stopped, { code: 0, signal: null });
  await own.start();
  const r = await qemuIo(own.unixUri('keep'), ['read -P 0x42 0 1M', 'read -P 0 1M 3M'], { readOnly: true });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const info = await own.cliJson<{ disks: number }>(['node', 'info']);
  assert.equal(info.disks, 1);
  await own.stop();
});
