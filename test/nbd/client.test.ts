/**
 * The product NBD client (src/nbd/client.ts) against nbdkit: NBD URIs as libnbd reads them,
 * reads and block status with and without structured replies, concurrent requests, and the
 * typed errors of a server that is not there, an export it lacks, and a connection that drops.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { NbdClient, NbdError, NbdErrorCode, parseNbdUri } from '../../src/nbd/index.ts';
import { cleanup, freePort, makeTempDir, requireTool, spawnTracked, until } from '../helpers/index.ts';

after(cleanup);
const dir = makeTempDir();

/** nbdkit serving the data plugin's layout on a Unix socket, with extra options first. */
async function nbdkit(name: string, options: string[], plugin: string[]) {
  const socket = join(dir, `${name}.sock`);
  const child = spawnTracked(requireTool('nbdkit', 'nbdkit'), ['-f', '-U', socket, ...options, ...plugin]);
  await until(() => existsSync(socket), 10_000, `nbdkit on ${socket}`, 20);
  return { socket, child };
}

test('parseNbdUri reads nbd:// and nbd+unix:// URIs and refuses what this client cannot speak', () => {
  assert.deepEqual(parseNbdUri('nbd://10.0.0.7/vm1'), { target: { host: '10.0.0.7', port: 10809 }, exportName: 'vm1' });
  assert.deepEqual(parseNbdUri('nbd://host:1234/a%20b@snap'), { target: { host: 'host', port: 1234 }, exportName: 'a b@snap' });
  assert.deepEqual(parseNbdUri('nbd://[::1]:99'), { target: { host: '::1', port: 99 }, exportName: '' });
  assert.deepEqual(parseNbdUri('nbd+unix:///disk?socket=/run/x.sock'), { target: { path: '/run/x.sock' }, exportName: 'disk' });
  for (const [uri, message] of [
    ['nbds://h/x', /Unsupported NBD URI scheme nbds/],
    ['nbd+vsock:///x', /Unsupported NBD URI scheme nbd\+vsock/],
    ['nbd+unix:///x', /without \?socket=PATH/],
    ['nbd:///x', /without a host/],
    ['not a uri', /Not an NBD URI/],
  ] as const) {
    assert.throws(() => parseNbdUri(uri), (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.INVALID_ARGUMENT && message.test(e.message), uri);
  }
});

const layout = ['data', '@4096 ( 0x11 )*4096 @1048576 ( "abc" )*1000', 'size=4M'];

for (const sr of [true, false]) {
  test(`reads and allocation against nbdkit ${sr ? 'with' : 'without'} structured replies, many requests at once`, async () => {
    const { socket, child } = await nbdkit(`data-${sr}`, sr ? [] : ['--no-sr'], layout);
    try {
      const c = await NbdClient.connect({ path: socket });
      assert.equal(c.sizeBytes, 4 << 20);
      assert.equal(c.structured, sr);
      assert.equal(c.allocation, sr, 'base:allocation needs structured replies');
      const extents = await c.extents(0, c.sizeBytes);
      assert.equal(extents[0].offset, 0);
      let at = 0;
      for (const e of extents) {
        assert.equal(e.offset, at);
        at += e.length;
      }
      if (sr) {
        const data = extents.filter((e) => !e.zero);
        assert.ok(data.some((e) => e.offset <= 4096 && e.offset + e.length >= 8192), JSON.stringify(extents));
        assert.ok(data.reduce((n, e) => n + e.length, 0) < 256 * 1024, 'the rest is sparse');
      } else {
        assert.deepEqual(extents, [{ offset: 0, length: 4 << 20, hole: false, zero: false }]);
      }
      // Many reads in flight, answered in any order, each where it belongs.
      const reads = await Promise.all(Array.from({ length: 32 }, (_, i) => c.read(i * 4096, 4096)));
      assert.ok(reads[1].equals(Buffer.alloc(4096, 0x11)));
      assert.ok(reads[0].equals(Buffer.alloc(4096)));
      const abc = await c.read(1 << 20, 3000);
      assert.equal(abc.toString(), 'abc'.repeat(1000));
      await assert.rejects(c.read(c.sizeBytes - 1, 2), (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.INVALID_ARGUMENT);
      await c.close();
      await assert.rejects(c.read(0, 1), (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.CLOSED);
    } finally {
      child.kill();
    }
  });
}

test('typed errors: nobody listening, an export the server lacks, a server gone mid-way', async () => {
  const port = await freePort();
  await assert.rejects(NbdClient.connect({ host: '127.0.0.1', port }), (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.UNREACHABLE && /ECONNREFUSED/.test(e.message));
  await assert.rejects(NbdClient.connect({ path: join(dir, 'none.sock') }), (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.UNREACHABLE && /ENOENT/.test(e.message));
  // nbdkit's exportname filter refuses names it does not list.
  const strict = await nbdkit('strict', ['--filter=exportname', '-e', 'good'], ['memory', '1M', 'exportname-strict=true', 'exportname=good']);
  try {
    await assert.rejects(NbdClient.connect({ path: strict.socket }, { exportName: 'bad' }), (e: unknown) => e instanceof NbdError && (e.code === NbdErrorCode.NOT_FOUND || e.code === NbdErrorCode.REFUSED) && /bad/.test(e.message));
    const ok = await NbdClient.connect({ path: strict.socket }, { exportName: 'good' });
    assert.equal(ok.sizeBytes, 1 << 20);
    ok.destroy();
  } finally {
    strict.child.kill();
  }
  const slow = await nbdkit('slow', ['--filter=delay'], ['memory', '8M', 'rdelay=2000ms']);
  const c = await NbdClient.connect({ path: slow.socket });
  const pending = c.read(0, 4096);
  slow.child.kill('SIGKILL');
  await assert.rejects(pending, (e: unknown) => e instanceof NbdError && e.code === NbdErrorCode.LOST);
});
