/**
 * What the lab is for: a Tessera node in one host, its clients in another, the link between
 * them slowed and cut (needs root, and nbdinfo from libnbd-bin).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, requireTool, tesseraBin, until } from '../helpers/index.ts';
import { downAllLabs, Lab } from '../helpers/lab.ts';

after(async () => {
  await downAllLabs();
  await cleanup();
});

test('a node in one lab host serves another through the link: its API slowed by the delay, NBD across it, cut by 100% loss, back once mended', async () => {
  requireTool('nbdinfo', 'libnbd-bin');
  requireTool('timeout', 'coreutils');
  const lab = await Lab.up({ hosts: [{ name: 'client' }, { name: 'server' }], links: [{ name: 'wan', endpoints: ['client', 'server'], rate: '100mbit' }] });
  const host = lab.address('server');
  const api = `http://${host}:7480`;
  lab.spawn('server', [tesseraBin, 'serve', '--data', makeTempDir('tessera-lab-node-'), '--host', host, '--api-port', '7480', '--nbd-port', '10809']);
  const cli = (args: string[], limitS = 30) => lab.exec('client', ['timeout', String(limitS), tesseraBin, '--api', api, ...args]);
  await until(async () => (await cli(['disk', 'list'], 5)).code === 0, 60_000, 'the node in host server to answer from host client', 200);

  await lab.set('wan', { delay: '50ms' });
  const t0 = Date.now();
  const created = await cli(['disk', 'create', 'vm1', '--size', '64M']);
  const tookMs = Date.now() - t0;
  assert.equal(created.code, 0, created.stderr);
  // A TCP connection and a request: at least two round trips of 100 ms.
  assert.ok(tookMs >= 200, `disk create over a 100 ms round trip took ${tookMs} ms`);
  const size = await lab.exec('client', ['nbdinfo', '--size', `nbd://${host}:10809/vm1`]);
  assert.equal(size.code, 0, size.stderr);
  assert.equal(size.stdout.trim(), String(64 * 1024 * 1024));

  await lab.set('wan', { loss: '100%' });
  const cut = await cli(['disk', 'list'], 3);
  assert.equal(cut.code, 124, `a cut link: the client waits until timeout kills it (${cut.stderr})`);
  await lab.set('wan', { loss: '0' });
  const mended = await cli(['disk', 'list', '--json']);
  assert.equal(mended.code, 0, mended.stderr);
  assert.deepEqual((JSON.parse(mended.stdout) as Array<{ name: string }>).map((d) => d.name), ['vm1']);
  await lab.down();
});
