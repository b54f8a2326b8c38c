/**
 * scripts/ensure-install.sh on a fresh clone, without the network: in a temporary copy whose
 * npm (TESSERA_NPM) is a slow fake that fails when two installs run at once in the tree, three
 * first runs started together install once and all succeed; once installed, a run takes no
 * lock, so a lock held elsewhere does not slow it.
 */
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, run, spawnTracked } from '../helpers/index.ts';

after(cleanup);

const script = fileURLToPath(new URL('../../scripts/ensure-install.sh', import.meta.url));

/** A slow `npm install` that fails if another is running in the same tree, and counts its runs. */
const fakeNpm = `#!/bin/sh
mkdir .npm-running 2>/dev/null || { echo "fake npm: another install is running in this tree" >&2; exit 1; }
echo "$$" >> npm-runs
sleep 1
mkdir -p node_modules/node/bin node_modules/lmdb
printf '#!/bin/sh\\n' > node_modules/node/bin/node
chmod +x node_modules/node/bin/node
touch node_modules/.package-lock.json
rmdir .npm-running
`;

/** A fresh clone's worth of what the script looks at: itself, package.json, a stub native build; and the fake npm. */
function freshClone(): { dir: string; npm: string } {
  const dir = makeTempDir('tessera-install-');
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(script, join(dir, 'scripts', 'ensure-install.sh'));
  writeFileSync(join(dir, 'scripts', 'build-native.sh'), '#!/bin/sh\nexit 0\n');
  writeFileSync(join(dir, 'package.json'), '{}\n');
  const npm = join(dir, 'fake-npm');
  writeFileSync(npm, fakeNpm);
  chmodSync(npm, 0o755);
  return { dir, npm };
}

const ensure = (dir: string, npm: string) => run('sh', [join(dir, 'scripts', 'ensure-install.sh')], { env: { ...process.env, TESSERA_NPM: npm }, timeoutMs: 60_000 });

test('the fake npm fails when installs overlap (what the lock prevents)', async () => {
  const { dir, npm } = freshClone();
  const runs = await Promise.all([1, 2, 3].map(() => run(npm, [], { cwd: dir, timeoutMs: 60_000 })));
  assert.ok(runs.some((r) => r.code !== 0 && /another install is running/.test(r.stderr)), 'at least one of three at once failed');
});

test('three first runs at once: one installs, the others wait and find it installed', async () => {
  const { dir, npm } = freshClone();
  const runs = await Promise.all([1, 2, 3].map(() => ensure(dir, npm)));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(dir, 'npm-runs'), 'utf8').trim().split('\n').length, 1, 'npm ran once');
  assert.equal(runs.filter((r) => r.stderr.includes('installing npm dependencies')).length, 1);
  assert.ok(runs.some((r) => r.stderr.includes('waiting for another install')), 'the others waited for it');
  // Run again: installed, nothing to do.
  const again = await ensure(dir, npm);
  assert.equal(again.code, 0);
  assert.equal(again.stderr, '');
  assert.equal(readFileSync(join(dir, 'npm-runs'), 'utf8').trim().split('\n').length, 1);
});

test('once installed, a run takes no lock: one held elsewhere does not hold it up', async () => {
  const { dir, npm } = freshClone();
  assert.equal((await ensure(dir, npm)).code, 0);
  const holder = spawnTracked('flock', [join(dir, 'build', '.install.lock'), '-c', 'echo held; sleep 30']);
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.setEncoding('utf8').on('data', (c: string) => c.includes('held') && resolve());
    holder.on('exit', () => reject(new Error('flock exited before holding the lock')));
  });
  try {
    const started = Date.now();
    const r = await ensure(dir, npm);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
  } finally {
    holder.kill('SIGKILL');
  }
});
