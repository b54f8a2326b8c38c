/**
 * What opening a store checks before it changes anything (src/engine/open-check.ts): a log
 * segment the index points into that is missing or shorter than what the index took from it is
 * refused with ENGINE_CORRUPT naming the file, and no file changes; read-only, the store opens
 * and serves all but the damaged blocks. A directory the process may not use is refused naming
 * it. An open that fails part-way keeps no file open.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { EngineError, Store } from '../../src/engine/index.ts';
import { asNobody, cleanup, makeTempDir, nobody, run, seededBytes, treeState } from '../helpers/index.ts';

after(cleanup);

const KiB = 1024;
const chunkBytes = 16 * KiB;
const chunks = 16;
/** What the store's disk holds: chunk i is seeded 'chunk i'. */
const content = Buffer.concat(Array.from({ length: chunks }, (_, i) => seededBytes(7, `chunk ${i}`, chunkBytes)));
/** LMDB's lock file is the running process's table of readers: an open may make it. */
const skipLock = (p: string) => p === join('index', 'lock.mdb') || p === 'index';

/**
 * A store whose disk `d` was written a chunk at a time, with small segments (three chunks each),
 * everything absorbed by the index, closed cleanly.
 */
async function makeStore(): Promise<string> {
  const dir = join(makeTempDir('tessera-open-checks-'), 'store');
  const store = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 64 * KiB });
  await store.createDisk('d', content.length);
  const v = store.openVolume('d');
  for (let i = 0; i < chunks; i++) {
    await v.write(i * chunkBytes, content.subarray(i * chunkBytes, (i + 1) * chunkBytes));
    await v.flush();
  }
  v.close();
  await store.close();
  return dir;
}

const segmentFile = (dir: string, id: number) => join(dir, 'log', `${String(id).padStart(10, '0')}.seg`);

/** Files under `dir` this process has open. */
function openFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const p = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (p.startsWith(dir + '/')) out.push(p);
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

/** Opens for writing, expects the refusal `message` (exactly), and that nothing changed or stayed open. */
async function expectRefused(dir: string, problem: string): Promise<void> {
  const before = treeState(dir, skipLock);
  await assert.rejects(Store.open({ dir, maintenanceIntervalMs: 0 }), (err: unknown) => {
    assert.ok(err instanceof EngineError, String(err));
    assert.equal(err.code, 'ENGINE_CORRUPT');
    assert.equal(err.message, `The write log is damaged: ${problem}. Nothing was changed; a read-only open serves what is left`);
    return true;
  });
  assert.deepEqual(treeState(dir, skipLock), before, 'no file changed');
  assert.deepEqual(openFilesUnder(dir), [], 'the open that failed keeps no file open');
}

/**
 * Opens read-only: the damage is listed, every chunk but `lost` reads byte-exact, and those fail
 * with an EngineError naming their segment. Nothing changes.
 */
async function expectServedReadOnly(dir: string, problem: string, segment: number, lost: number[]): Promise<void> {
  const before = treeState(dir, skipLock);
  const store = await Store.open({ dir, readOnly: true });
  try {
    assert.deepEqual(store.damage, [problem]);
    const v = store.openVolume('d');
    const failed: number[] = [];
    for (let i = 0; i < chunks; i++) {
      try {
        const got = await v.read(i * chunkBytes, chunkBytes);
        assert.ok(got.equals(content.subarray(i * chunkBytes, (i + 1) * chunkBytes)), `chunk ${i} reads byte-exact`);
      } catch (err) {
        assert.ok(err instanceof EngineError, `chunk ${i}: ${String(err)}`);
        assert.match(err.message, new RegExp(`segment ${segment}\\b`), `chunk ${i}: the error names its segment`);
        failed.push(i);
      }
    }
    assert.deepEqual(failed, lost, 'the chunks that cannot be read');
    v.close();
  } finally {
    await store.close();
  }
  assert.deepEqual(treeState(dir, skipLock), before, 'no file changed');
}

test('a missing log segment: the open is refused naming it, no file changes; read-only the rest is served', async () => {
  const dir = await makeStore();
  const file = segmentFile(dir, 2);
  fs.rmSync(file);
  const problem = `${file} is missing; it holds 48 KiB of live data`;
  await expectRefused(dir, problem);
  // Segment 2 held chunks 3 to 5 (three to a segment).
  await expectServedReadOnly(dir, problem, 2, [3, 4, 5]);
});

test('a log segment cut short: the open is refused saying how many bytes are missing, no file changes; read-only the rest is served', async () => {
  const dir = await makeStore();
  const file = segmentFile(dir, 3);
  const size = fs.statSync(file).size;
  fs.truncateSync(file, size - 5000);
  const problem = `${file} is truncated: 5000 bytes are missing (the file has ${size - 5000}, the index took records up to byte ${size}); it holds 48 KiB of live data`;
  await expectRefused(dir, problem);
  // The cut reaches into the segment's last chunk (8).
  await expectServedReadOnly(dir, problem, 3, [8]);
});

test('the newest segment cut below what the index took, even below its header: refused, not dropped as a torn creation', async () => {
  const dir = await makeStore();
  const ids = fs.readdirSync(join(dir, 'log')).sort();
  const newest = Number(ids.at(-1)!.slice(0, 10));
  const file = segmentFile(dir, newest);
  const size = fs.statSync(file).size;
  fs.truncateSync(file, 10);
  await expectRefused(dir, `${file} is truncated: ${size - 10} bytes are missing (the file has 10, the index took records up to byte ${size}); it holds 16 KiB of live data`);
  assert.equal(fs.statSync(file).size, 10, 'the segment is still there');
});

test('a store the process may not read or write is refused naming the path and its owner', async () => {
  const base = makeTempDir('tessera-open-denied-');
  fs.chmodSync(base, 0o755);
  const dir = join(base, 'store');
  const store = await Store.open({ dir, maintenanceIntervalMs: 0 });
  await store.close();
  fs.chmodSync(dir, 0o700);
  const engine = fileURLToPath(new URL('../../src/engine/index.ts', import.meta.url));
  const script = `const { Store } = await import(${JSON.stringify(engine)});
for (const readOnly of [false, true]) {
  const r = await Store.open({ dir: ${JSON.stringify(dir)}, readOnly }).then((s) => s.close().then(() => 'opened'), (e) => e.code + ': ' + e.message);
  console.log(r);
}`;
  const [cmd, args] = asNobody(process.execPath, ['--input-type=module', '-e', script]);
  const r = await run(cmd, args, { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const denied = `ENGINE_ACCESS: Permission denied: ${dir} (${dir} is owned by uid 0, mode 0700; this process runs as uid ${nobody.uid})`;
  assert.deepEqual(r.stdout.trim().split('\n'), [denied, denied], 'read-write and read-only alike');
});
