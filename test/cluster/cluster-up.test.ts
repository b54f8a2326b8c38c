/** `tessera cluster up` and `cluster down` (docs/cli.md): a 3-node trial cluster started and stopped. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, requireTool, run, tesseraBin } from '../helpers/index.ts';
import type { ClusterStatus } from '../../src/api/client/index.ts';

after(cleanup);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('cluster up starts etcd and 3 nodes that outlive it, all up; cluster down stops them', async () => {
  requireTool('etcd', 'etcd-server');
  const dir = join(makeTempDir('tessera-cluster-up-'), 'tc');
  const up = await run(tesseraBin, ['cluster', 'up', '--nodes', '3', '--data', dir, '--json'], { timeoutMs: 180_000 });
  let state: { etcd: { pid: number; url: string }; nodes: Array<{ id: string; pid: number; api: string; nbd: string; peer: string }> } | null = null;
  try {
    assert.equal(up.code, 0, up.stderr);
    state = JSON.parse(up.stdout);
    assert.deepEqual(JSON.parse(JSON.stringify(state)), JSON.parse(readFileSync(join(dir, 'cluster-up.json'), 'utf8')));
    assert.deepEqual(state!.nodes.map((n) => n.id), ['n1', 'n2', 'n3']);
    for (const p of [state!.etcd.pid, ...state!.nodes.map((n) => n.pid)]) assert.ok(alive(p), `pid ${p} runs`);
    const s = await run(tesseraBin, ['--api', `http://${state!.nodes[1].api}`, 'cluster', 'status', '--json']);
    const status = JSON.parse(s.stdout) as ClusterStatus;
    assert.deepEqual(status.nodes.map((n) => [n.id, n.state, n.api, n.nbd, n.peer]), state!.nodes.map((n) => [n.id, 'up', n.api, n.nbd, n.peer]));
    assert.equal(status.nodes.filter((n) => n.controller).length, 1);
    // A second up on the same directory is refused while it runs.
    const again = await run(tesseraBin, ['cluster', 'up', '--data', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /runs already/);
  } finally {
    const down = await run(tesseraBin, ['cluster', 'down', '--data', dir], { timeoutMs: 120_000 });
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /Stopped the cluster of .*: n1 stopped, n2 stopped, n3 stopped, etcd stopped/);
  }
  for (const p of [state!.etcd.pid, ...state!.nodes.map((n) => n.pid)]) assert.ok(!alive(p), `pid ${p} stopped`);
  assert.ok(!existsSync(join(dir, 'cluster-up.json')));
  assert.ok(existsSync(join(dir, 'node1', 'cluster.json')), 'the data stays');
});

test('cluster up without etcd on PATH says which package to install', async () => {
  const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const r = await run(process.execPath, ['--disable-warning=ExperimentalWarning', main, 'cluster', 'up', '--data', makeTempDir('tessera-no-etcd-')], { env: { ...process.env, PATH: makeTempDir('tessera-empty-path-') } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /etcd not found on PATH: .*etcd-server/);
});
