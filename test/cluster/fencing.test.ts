/**
 * Fencing on real nodes (docs/cluster.md, "Epochs, ownership and fencing", "Leases and
 * liveness"): a real etcd and three `tessera serve` processes at a 3 s lease; a libnbd writer on
 * the head's own NBD export; the head paused (SIGSTOP) past its lease while its client queues
 * writes; the disk moved to a new head and written there; the old head resumed: its queued writes
 * fail and change nothing, and it stays up and catches up as a replica. Then `disk lease show`,
 * and `disk lease break` of a live owner, and of a disk no other replica could take over.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import type { DiskInfo, DiskLease } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, nbdcopy, requirePythonNbd, requireTool, runOk, spawnTracked, startEtcd, TesseraNode, until, storeDigest } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

const ttlS = 3;
const writer = fileURLToPath(new URL('../helpers/fencewriter.py', import.meta.url));
const BLOCK = 4096;

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

function clusterNode(id: string, prefix: string): TesseraNode {
  return new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS), '--etcd-prefix', prefix] });
}

async function startCluster(prefix: string): Promise<TesseraNode[]> {
  const nodes = ['n1', 'n2', 'n3'].map((id) => clusterNode(id, prefix));
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);
  return nodes;
}

/** What fencewriter.py writes with `seed` over a range: each 4 KiB block B is shake128(seed, B). */
function pattern(seed: number, offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const key = Buffer.alloc(16);
  for (let at = 0; at < length; at += BLOCK) {
    key.writeBigUInt64LE(BigInt(seed), 0);
    key.writeBigUInt64LE(BigInt((offset + at) / BLOCK), 8);
    createHash('shake128', { outputLength: BLOCK }).update(key).digest().copy(out, at);
  }
  return out;
}


const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The first 4 KiB block where two images differ, for a readable failure. */
function firstDiff(a: Buffer, b: Buffer): string {
  for (let at = 0; at < a.length; at += BLOCK) if (!a.subarray(at, at + BLOCK).equals(b.subarray(at, at + BLOCK))) return `first differing block at ${at} (${at / MiB} MiB)`;
  return 'equal';
}

/** The fence writer in loop mode: resolves `looping` after its first pass, `doom()` sends its queued writes, `result` its outcome. */
function startLoop(py: string, uri: string, args: number[]) {
  const child: ChildProcess = spawnTracked(py, [writer, 'loop', uri, ...args.map(String)]);
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
  const line = (re: RegExp, ms: number, what: string) =>
    until(() => {
      if (child.exitCode !== null && !re.test(out)) throw new Error(`the writer exited (${child.exitCode}) before ${what}: ${err.slice(-2000)}`);
      return re.test(out);
    }, ms, what, 50);
  return {
    looping: () => line(/^looping$/m, 60_000, 'its first pass'),
    async doom(): Promise<number> {
      child.stdin!.write('doom\n');
      await line(/^doomed \d+$/m, 60_000, 'its queued writes');
      return Number(/^doomed (\d+)$/m.exec(out)![1]);
    },
    async result(): Promise<{ loopOk: number; loopFailed: number; doomOk: number; doomFailed: number; pending: number; errors: string[] }> {
      const code = await closed;
      assert.equal(code, 0, `the writer failed: ${err.slice(-2000)}`);
      return JSON.parse(out.trim().split('\n').at(-1)!);
    },
  };
}

test('a head paused past its lease is fenced: its queued writes fail and change nothing, it rejoins as a replica and catches up; a broken lease moves the head at once', async () => {
  requireTool('nbdcopy', 'libnbd-bin');
  const py = requirePythonNbd();
  const nodes = await startCluster('/fencing/');
  const byId = new Map(nodes.map((n, i) => [`n${i + 1}`, n]));
  const size = 64 * MiB;
  const created = await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(size), '--replicas', '3']);
  const headId = created.replicas![0].node;
  const head = byId.get(headId)!;
  const others = nodes.filter((n) => n !== head);

  // The first pattern over [0, 16M), rewritten again and again on the head's own export; the
  // doomed writes (pattern 9) will cover [0, 32M) once the head is paused.
  const loop = startLoop(py, head.nbdUri('vm1'), [1, 0, 16 * MiB, 9, 0, 32 * MiB]);
  await loop.looping();
  await new Promise((r) => setTimeout(r, 500));
  const lease = await others[0].cliJson<DiskLease>(['disk', 'lease', 'show', 'vm1']);
  assert.equal(lease.owner, headId);
  assert.equal(lease.head, headId);
  assert.equal(lease.epoch, created.epoch);
  assert.ok(lease.ttlSeconds !== null && lease.ttlSeconds > 0 && lease.ttlSeconds <= ttlS, `ttl ${lease.ttlSeconds}`);

  head.signal('SIGSTOP');
  const stoppedAt = Date.now();
  const doomed = await loop.doom();
  assert.ok(doomed > 0);

  // The controller moves the head; the disk goes on there with the second pattern over [8M, 24M).
  await until(async () => {
    const d = await others[0].cliJson<DiskInfo>(['disk', 'info', 'vm1']);
    return d.epoch! > created.epoch! && d.replicas![0].node !== headId && d.replicas![0].state === 'healthy';
  }, (ttlS + 20) * 1000, 'a new head', 200);
  const moved = await others[1].cliJson<DiskLease>(['disk', 'lease', 'show', 'vm1']);
  assert.notEqual(moved.head, headId);
  await runOk(py, [writer, 'fill', others[1].nbdUri('vm1'), '2', String(8 * MiB), String(16 * MiB)]);

  // Paused well past its lease, the old head resumes: everything its client queued fails.
  const pausedMs = Date.now() - stoppedAt;
  if (pausedMs < (ttlS + 4) * 1000) await new Promise((r) => setTimeout(r, (ttlS + 4) * 1000 - pausedMs));
  head.signal('SIGCONT');
  const res = await loop.result();
  assert.equal(res.doomOk, 0, `queued writes of the fenced head succeeded: ${JSON.stringify(res)}`);
  assert.equal(res.doomFailed, doomed, JSON.stringify(res));

  // It stays up, rejoins as a replica and catches up.
  await until(async () => {
    const d = await others[0].cliJson<DiskInfo>(['disk', 'info', 'vm1']);
    return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
  }, 90_000, `${headId} caught up`, 200);
  const after = await head.cliJson<DiskInfo>(['disk', 'info', 'vm1']);
  assert.notEqual(after.replicas![0].node, headId);
  assert.match(readFileSync(head.logPath, 'utf8'), /disk vm1: fenced at epoch \d+: /);

  // Through every node: the first pattern where only it was written, the second where it was, zeroes after.
  const want = Buffer.alloc(size);
  pattern(1, 0, 8 * MiB).copy(want, 0);
  pattern(2, 8 * MiB, 16 * MiB).copy(want, 8 * MiB);
  const dir = makeTempDir('tessera-fencing-');
  const readAll = async (what: string): Promise<void> => {
    for (const n of nodes) {
      const got = join(dir, `read-${n.nbdPort}.img`);
      await nbdcopy(n.nbdUri('vm1'), got);
      const bytes = readFileSync(got);
      assert.equal(sha(bytes), sha(want), `${what}, read through ${n.api}: ${firstDiff(bytes, want)}`);
    }
  };
  await readAll('after the fenced head caught up');

  // An operator breaks the lease of a live owner: the next healthy replica heads the disk at a
  // new epoch at once, and the old owner, fenced, catches up again.
  const before = await head.cliJson<DiskLease>(['disk', 'lease', 'show', 'vm1']);
  assert.ok(before.owner !== null && before.owner === before.head && before.ttlSeconds !== null, JSON.stringify(before));
  const owner = byId.get(before.owner)!;
  const broken = await head.cliJson<DiskLease>(['disk', 'lease', 'break', 'vm1']);
  assert.ok(broken.epoch > before.epoch);
  assert.ok(broken.head !== null && broken.head !== before.owner, JSON.stringify(broken));
  await until(async () => {
    const l = await head.cliJson<DiskLease>(['disk', 'lease', 'show', 'vm1']);
    return l.owner === broken.head && l.ownerEpoch !== null && l.ownerEpoch >= broken.epoch;
  }, (ttlS + 20) * 1000, `${broken.head} owning vm1`, 200);
  await runOk(py, [writer, 'fill', owner.nbdUri('vm1'), '3', String(24 * MiB), String(8 * MiB)]);
  pattern(3, 24 * MiB, 8 * MiB).copy(want, 24 * MiB);
  await until(async () => {
    const d = await owner.cliJson<DiskInfo>(['disk', 'info', 'vm1']);
    return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
  }, 90_000, `${before.owner} caught up after the break`, 200);
  await readAll('after the break');

  // No other healthy replica to take over: refused, and nothing changes.
  await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'solo', '--size', '1M', '--replicas', '1']);
  const solo = await nodes[0].cliJson<DiskLease>(['disk', 'lease', 'show', 'solo']);
  const refused = await nodes[0].cli(['disk', 'lease', 'break', 'solo']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /no other healthy replica/);
  assert.equal((await nodes[0].cliJson<DiskLease>(['disk', 'lease', 'show', 'solo'])).epoch, solo.epoch);

  // Every replica's copy on disk is the same.
  for (const n of nodes) await n.stop();
  for (const n of nodes) assert.equal(await storeDigest(n.dataDir, 'vm1'), sha(want), `the copy on ${n.dataDir}`);
});

test('a lease broken as the disk is made: the new head serves, the old one catches up, whichever epoch its replicas took first', async () => {
  // The new head's first sync snapshot races the controller's next epoch (the old head back,
  // catching up): a replica that took that epoch first refuses it as stale, and only the head's
  // next reconcile (configured at the newer epoch) resends it. That reconcile must not wait for
  // the snapshot. Several disks, as the race goes either way.
  const nodes = await startCluster('/fencing-fresh/');
  try {
    for (let i = 0; i < 4; i++) {
      const name = `fresh${i}`;
      await nodes[0].cliJson<DiskInfo>(['disk', 'create', name, '--size', String(16 * MiB), '--replicas', '3']);
      const broken = await nodes[0].cliJson<DiskLease>(['disk', 'lease', 'break', name]);
      const started = performance.now();
      await runOk(requireTool('qemu-io', 'qemu-utils'), ['-f', 'raw', '-c', 'write -P 0x5c 0 64k', nodes[1].nbdUri(name)]);
      assert.ok(performance.now() - started < 10_000, `${name} written at its new head ${broken.head} in ${Math.round(performance.now() - started)} ms`);
      await until(async () => {
        const d = await nodes[0].cliJson<DiskInfo>(['disk', 'info', name]);
        return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
      }, 30_000, `${name}: three healthy replicas again`, 200);
    }
  } finally {
    for (const n of nodes) await n.stop();
  }
});
