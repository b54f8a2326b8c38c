/**
 * Scrub on a real node (docs/engine.md, "Scrub"; docs/cli.md): `tessera scrub` on clean and
 * damaged data, the background pass in GET /api/v1/node, /metrics and the log, its state across
 * a restart, and the serve options that set it.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { run, startNode, tesseraBin, until, useNode, type TesseraNode } from '../helpers/index.ts';
import type { NodeInfo, ScrubReport } from '../../src/api/client/index.ts';

const BS = 4096;

/** 4 KiB found nowhere else. */
function pattern(tag: string, block: number): Buffer {
  return Buffer.alloc(BS, `<${tag}:${block}>`);
}

async function put(node: TesseraNode, disk: string, offset: number, data: Buffer): Promise<void> {
  const res = await fetch(`${node.api}/api/v1/disks/${disk}/data?offset=${offset}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: data });
  assert.equal(res.status, 204, await res.text());
}

async function nodeInfo(node: TesseraNode): Promise<NodeInfo> {
  const res = await fetch(`${node.api}/api/v1/node`);
  assert.equal(res.status, 200);
  return (await res.json()) as NodeInfo;
}

async function metric(node: TesseraNode, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${node.api}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** Flips a byte inside the log's copy of `pattern(tag, block)`. */
async function damage(node: TesseraNode, tag: string, block: number): Promise<void> {
  const logDir = join(node.dataDir, 'store', 'log');
  const needle = pattern(tag, block);
  for (const name of (await readdir(logDir)).sort()) {
    const file = join(logDir, name);
    const at = (await readFile(file)).indexOf(needle);
    if (at < 0) continue;
    const fh = await open(file, 'r+');
    try {
      await fh.write(Buffer.from([0x5a ^ needle[100]]), 0, 1, at + 100);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return;
  }
  assert.fail(`no data of ${tag}:${block} in the log`);
}

// The background pass every 2 s (the first 2 s after the start), so that the tests see it.
const node = useNode({
  args: ['--scrub-interval', '2s', '--scrub-rate', '64M'],
  setup: async (n) => {
    await n.cliOk(['disk', 'create', 'a', '--size', '8M']);
    await n.cliOk(['disk', 'create', 'b', '--size', '8M']);
    await put(n, 'a', 0, Buffer.concat([pattern('a', 0), pattern('a', 1), pattern('a', 2)]));
    await put(n, 'a', 16 * BS, pattern('a', 16));
    await put(n, 'b', 0, pattern('b', 0));
    await n.cliOk(['snap', 'create', 'a', 's1']);
    await n.cliOk(['disk', 'clone', 'a@s1', 'c']);
    await put(n, 'a', 1 * BS, pattern('a2', 1)); // the head of a reads another block 1 now
    // A scrub checks what the index holds, and the index takes records once they are durable: a
    // flush makes them so, then node info has the index absorb those still queued for it.
    for (const d of ['a', 'b', 'c']) {
      const res = await fetch(`${n.api}/api/v1/disks/${d}/flush`, { method: 'POST' });
      assert.ok(res.ok, await res.text());
    }
    await n.cliOk(['node', 'info']);
  },
});

test('tessera scrub on clean data: exit 0, a clean report, and the background pass in GET /node and /metrics', async () => {
  const report = await node.cliJson<ScrubReport>(['scrub']);
  assert.deepEqual(report.damaged, []);
  assert.equal(report.damagedBlocks, 0);
  assert.deepEqual(report.disks, ['a', 'b', 'c']);
  assert.ok(report.records >= 4 && report.bytesChecked >= 5 * BS, JSON.stringify(report));
  assert.match(await node.cliOk(['scrub', 'b']), /^Scrubbed 1 disk: 1 record, [\d.]+ KiB checked in \d+\.\d s: clean\n$/);
  assert.deepEqual((await node.cliJson<ScrubReport>(['scrub', 'a', '--rate', '1M'])).damaged, []);
  const zero = await node.cli(['scrub', '--rate', '0']);
  assert.equal(zero.code, 2, zero.stderr);

  await until(async () => (await nodeInfo(node)).scrub?.lastFinishedMs != null, 20_000, 'a finished scrub pass');
  const s = (await nodeInfo(node)).scrub!;
  assert.equal(s.rateBytesPerSecond, 64 << 20);
  assert.equal(s.intervalMs, 2000);
  assert.equal(s.damagedBlocks, 0);
  assert.deepEqual(s.damagedDisks, []);
  assert.equal(s.lastError, null);
  assert.ok(s.bytesChecked! >= 5 * BS);
  assert.equal(await metric(node, 'tessera_scrub_damaged_blocks'), 0);
  assert.ok((await metric(node, 'tessera_scrub_last_finished_timestamp_seconds'))! * 1000 >= s.lastFinishedMs! - 1);
  assert.ok((await metric(node, 'tessera_scrub_checked_bytes_total'))! >= 5 * BS);
  assert.ok((await metric(node, 'tessera_scrub_read_bytes_total'))! >= 5 * BS);
  assert.match(await node.cliOk(['node', 'info']), /^Scrub: +last \S+: clean; (running|next \S+) \(background at 64\.0 MiB\/s\)$/m);
});

test('tessera scrub on damaged data: the extents by disk, offset and view, exit 3; the background pass and the log name them', async () => {
  await damage(node, 'a', 1); // the record of blocks 0..2 of a: its head reads 0 and 2, s1 and the clone all three
  const json = await node.cli(['scrub', '--json']);
  assert.equal(json.code, 3, json.stderr);
  const report = JSON.parse(json.stdout) as ScrubReport;
  assert.deepEqual(
    report.damaged.map(({ disk, offset, length, head, snapshots, reason }) => ({ disk, offset, length, head, snapshots, reason })),
    [
      { disk: 'a', offset: 0, length: BS, head: true, snapshots: ['s1'], reason: 'checksum' },
      { disk: 'a', offset: BS, length: BS, head: false, snapshots: ['s1'], reason: 'checksum' },
      { disk: 'a', offset: 2 * BS, length: BS, head: true, snapshots: ['s1'], reason: 'checksum' },
      { disk: 'c', offset: 0, length: 3 * BS, head: true, snapshots: [], reason: 'checksum' },
    ],
  );
  assert.equal(report.damagedBlocks, 3);
  assert.equal(json.stderr, 'tessera: error: scrub found 3 damaged blocks on 2 disks: a, c\n');

  const text = await node.cli(['scrub', 'c']);
  assert.equal(text.code, 3);
  const lines = text.stdout.split('\n');
  assert.match(lines[0], /^Scrubbed 1 disk: \d+ records, .* checked in \d+\.\d s: 3 damaged blocks$/);
  assert.match(lines[1], /^DISK +OFFSET +LENGTH +READ BY +REASON +WHERE$/);
  assert.match(lines[2], /^c +0 +12\.0 KiB +head +checksum +segment \d+ at \d+$/);
  assert.equal((await node.cli(['scrub', 'b'])).code, 0, 'b holds nothing damaged');
  const unknown = await node.cli(['scrub', 'nope']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /nope/);

  await until(async () => ((await nodeInfo(node)).scrub?.damagedBlocks ?? 0) > 0, 20_000, 'a background pass that found the damage');
  const s = (await nodeInfo(node)).scrub!;
  assert.equal(s.damagedBlocks, 3);
  assert.deepEqual(s.damagedDisks, ['a', 'c']);
  assert.equal(await metric(node, 'tessera_scrub_damaged_blocks'), 3);
  assert.match(await node.cliOk(['node', 'info']), /^Scrub: +last \S+: 3 damaged blocks on a, c/m);
  const log = (await readFile(node.logPath, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  const warned = log.filter((r) => r.level === 'warn' && r.component === 'scrub' && r.disk === 'c');
  assert.ok(warned.length > 0, 'a warning names the damaged extent of the clone');
  assert.equal(warned[0].offset, 0);
  assert.equal(warned[0].length, 3 * BS);
  assert.equal(warned[0].reason, 'checksum');
});

test('the last pass outlasts a restart; a read-only node scrubs and keeps nothing; serve --scrub-rate 0 turns the background scrub off; bad values are usage errors', async () => {
  const before = (await nodeInfo(node)).scrub!;
  assert.ok(before.lastFinishedMs !== null);
  await node.restart();
  // Asked at once: the first pass after a start waits (2 s here), so this is the kept one.
  const after = (await nodeInfo(node)).scrub!;
  assert.ok(after.lastFinishedMs !== null && after.lastFinishedMs >= before.lastFinishedMs, JSON.stringify({ before, after }));
  assert.equal(after.damagedBlocks, 3);

  const off = await startNode({ args: ['--scrub-rate', '0'] });
  try {
    const s = (await nodeInfo(off)).scrub!;
    assert.equal(s.rateBytesPerSecond, 0);
    assert.equal(s.nextStartMs, null);
    assert.equal(s.lastFinishedMs, null);
    assert.equal(await metric(off, 'tessera_scrub_damaged_blocks'), undefined, 'no pass, no figure');
    assert.match(await off.cliOk(['node', 'info']), /^Scrub: +never finished \(background off\)$/m);
  } finally {
    await off.stop();
  }
  // Read-only, a node scrubs as well, and writes nothing to its data directory: not its last pass either.
  await node.stop();
  await rm(join(node.dataDir, 'scrub.json'));
  const ro = await startNode({ dataDir: node.dataDir, args: ['--read-only', '--scrub-interval', '1s'] });
  try {
    await until(async () => (await nodeInfo(ro)).scrub?.lastFinishedMs != null, 20_000, 'a finished scrub pass, read-only');
    assert.equal((await nodeInfo(ro)).scrub!.damagedBlocks, 3);
    assert.equal((await ro.cli(['scrub'])).code, 3);
    assert.equal(existsSync(join(node.dataDir, 'scrub.json')), false);
  } finally {
    await ro.stop();
  }
  for (const args of [['--scrub-rate', 'fast'], ['--scrub-interval', '0'], ['--scrub-interval', 'daily']]) {
    const r = await run(tesseraBin, ['serve', '--data', join(node.dataDir, 'unused'), ...args], { timeoutMs: 60_000 });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^tessera: error: invalid --${args[0].slice(2)}: `));
  }
});
