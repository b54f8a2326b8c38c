/**
 * Transfers across an emulated long link (docs/lab.md; needs root, iproute2 and tcpdump): the
 * connection choice on a link losing packets in bursts against a clean one, a link cut by 100%
 * loss mid-way (shorter and longer than the sender's 15 s of silence) and mended, DSCP marks on
 * the link. Rates are modest and files small; nothing here is timed, so
 * a slow or busy machine makes the tests slower, never failing.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, MiB, requireTool, spawnTracked, tesseraBin, testSeed, until, writeSeededFile } from '../helpers/index.ts';
import { downAllLabs, Lab } from '../helpers/lab.ts';
import { JsonChild, sha256Of } from './harness.ts';

after(async () => {
  await downAllLabs();
  await cleanup();
});

const PORT = 7480;

/** A lab of two hosts, `a` sending to `b`, joined by one link named `wan`. */
async function twoHosts(seed: number, link: Record<string, string | number>): Promise<Lab> {
  return Lab.up({ seed, hosts: [{ name: 'a' }, { name: 'b' }], links: [{ name: 'wan', endpoints: ['a', 'b'], ...link }] });
}

/** `tessera transfer recv` in host b, listening on its address; resolves once it listens. */
async function receiverIn(lab: Lab, dir: string): Promise<JsonChild> {
  const r = new JsonChild(['lab', 'exec', 'b', '--state', lab.stateDir, '--', tesseraBin, 'transfer', 'recv', '--listen', `${lab.address('b')}:${PORT}`, '--dir', dir, '--json']);
  await r.waitFor((e) => e.event === 'listening', 'the receiver in b listening', 60_000);
  return r;
}

/** `tessera transfer send FILE` in host a to the receiver in b, with --json. */
function senderIn(lab: Lab, file: string, extra: string[] = []): JsonChild {
  return new JsonChild(['lab', 'exec', 'a', '--state', lab.stateDir, '--', tesseraBin, 'transfer', 'send', file, '--to', `${lab.address('b')}:${PORT}`, '--json', ...extra]);
}

/** Packets the lab's one link has lost by its loss draw so far, both directions. */
async function lostSoFar(lab: Lab): Promise<number> {
  return (await lab.show()).links[0]!.directions.reduce((a, d) => a + d.lost, 0);
}

async function sentOk(s: JsonChild): Promise<Record<string, unknown>> {
  const { code } = await s.exited;
  assert.equal(code, 0, `transfer send exit status; stderr: ${s.stderr}`);
  const done = s.events.find((e) => e.event === 'done');
  assert.ok(done, 'a final report');
  return done;
}

test('connection choice on a long link: a link that loses packets in bursts gets fewer active connections than a clean one (the stall rule of docs/transfer.md)', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'choice.img');
  await writeSeededFile(file, seed, 'choice', 32 * MiB);
  const lab = await twoHosts(seed, { delay: '40ms', rate: '50mbit', queue: 2000 });
  await receiverIn(lab, dir);
  // Both sends capped at half the link's rate: uncapped, the sender queues up to ~0.5 s at the
  // link itself (its window is at least 4 frames a connection, 4 MiB here, 8 BDPs at 50 Mbit/s),
  // and the spread of transit that queue makes is, now and then, over the stall threshold on a
  // clean link too. The rule judges a frame against the interval's median transit, so loss
  // spread evenly (even 10%) delays the median with the rest and is not seen; loss in bursts
  // (here 100% for ~0.6 s every ~2 s) stalls the frames it hits by a retransmission timeout
  // past the threshold, which is what the rule looks for.
  const runs: Record<string, { report: Record<string, unknown>; changes: string[] }> = {};
  for (const name of ['clean', 'bursts'] as const) {
    const s = senderIn(lab, file, ['--connections', '4', '--rate-max', '3M']);
    let bursts = 0;
    if (name === 'bursts') {
      while (s.child.exitCode === null && !s.events.some((e) => e.event === 'done')) {
        await lab.set('wan', { loss: '100%' });
        await new Promise((resolve) => setTimeout(resolve, 600));
        await lab.set('wan', { loss: '0' });
        bursts++;
        await new Promise((resolve) => setTimeout(resolve, 1500));
      }
    }
    const report = await sentOk(s);
    const changes = s.events.filter((e) => e.event === 'connections').map((e) => `${String(e.active)}: ${String(e.reason)}`);
    runs[name] = { report, changes };
    t.diagnostic(`${name}${name === 'bursts' ? ` (${bursts} bursts)` : ''}: active ${String(report.connectionsActiveMin)}–${String(report.connectionsActiveMax)} of 4, chunks per connection ${JSON.stringify(report.chunksPerConnection)}, ${((report.rateBytesPerSecond as number) / 1e6).toFixed(2)} MB/s, transit ${JSON.stringify(report.transitMs)}; changes: ${changes.join('; ') || 'none'}`);
    assert.equal(await sha256Of(join(dir, 'choice.img')), report.sha256);
  }
  const clean = runs.clean!;
  const lossy = runs.bursts!;
  assert.ok(!clean.changes.some((c) => /the link stalls/.test(c)), `no step down for stalls on the clean link: ${clean.changes.join('; ')}`);
  assert.equal(clean.report.connectionsActiveMin, 4, 'the clean link keeps all 4 connections active');
  assert.ok(lossy.changes.some((c) => /the link stalls/.test(c)), `a step down for stalls on the lossy link: ${lossy.changes.join('; ')}`);
  assert.ok((lossy.report.connectionsActiveMin as number) < (clean.report.connectionsActiveMin as number), 'fewer connections on the lossy link');
});

test('a link cut by 100% loss for a few seconds and mended: TCP rides it out, the same attempt goes on and the file arrives byte for byte', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'cut.img');
  const size = 40 * MiB;
  await writeSeededFile(file, seed, 'cut', size);
  const lab = await twoHosts(seed, { delay: '20ms', rate: '50mbit' });
  const receiver = await receiverIn(lab, dir);
  const sender = senderIn(lab, file, ['--connections', '3', '--retry-ms', '120000']);
  const before = await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) >= 8 * MiB, 'a fifth confirmed');
  await lab.set('wan', { loss: '100%' });
  const lostAtCut = await lostSoFar(lab);
  // Cut for 6 progress lines (~3 s, well under the sender's 15 s of silence): TCP retransmits into the void.
  const at = sender.events.length;
  await until(() => sender.events.slice(at).filter((e) => e.event === 'progress').length >= 6 || sender.child.exitCode !== null, 120_000, 'progress lines while cut');
  const during = sender.events.slice(at).filter((e) => e.event === 'progress');
  await lab.set('wan', { loss: '0' });
  const lostWhileCut = (await lostSoFar(lab)) - lostAtCut;
  const report = await sentOk(sender);
  const received = await receiver.waitFor((e) => e.event === 'received' && e.name === 'cut.img', 'the receiver reporting the file');
  t.diagnostic(`confirmed before the cut ${String(before.bytesDone)}; during it ${during.map((e) => String(e.bytesDone)).join(', ')}; packets lost while cut ${lostWhileCut}; attempts ${String(report.attempts)}; sent ${String(report.bytesSent)} of ${size}; receiver: ${String(received.bytesReceived)} received, ${String(received.bytesResumed)} resumed`);
  assert.ok(lostWhileCut > 0, 'the cut link lost packets');
  // Nothing new is confirmed once the chunks in flight before the cut are (each connection holds at most 2).
  const last = during.at(-1)!.bytesDone as number;
  assert.ok(during.slice(-3).every((e) => e.bytesDone === last), `no progress late in the cut: ${during.map((e) => String(e.bytesDone)).join(', ')}`);
  assert.ok(last < size, 'the cut came before the end');
  assert.equal(report.attempts, 1, 'the same connections carried on');
  assert.equal(report.bytesSent, size, 'nothing sent twice');
  assert.equal(await sha256Of(join(dir, 'cut.img')), await sha256Of(file));
});

test('a link cut by 100% loss for longer than the sender waits in silence: it connects again once mended and sends only what had not arrived', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'long-cut.img');
  const size = 40 * MiB;
  await writeSeededFile(file, seed, 'long-cut', size);
  const lab = await twoHosts(seed, { delay: '20ms', rate: '50mbit' });
  const receiver = await receiverIn(lab, dir);
  const sender = senderIn(lab, file, ['--connections', '3', '--retry-ms', '300000']);
  const before = await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) >= 8 * MiB, 'a fifth confirmed');
  await lab.set('wan', { loss: '100%' });
  // No acknowledgement for 15 s: the sender gives the attempt up; its new connections fail while the link is cut.
  const retry = await sender.waitFor((e) => e.event === 'retry', 'the sender giving up the silent attempt', 300_000);
  await until(() => sender.events.filter((e) => e.event === 'retry').length >= 2 || sender.child.exitCode !== null, 300_000, 'a retry failing against the cut link');
  await lab.set('wan', { loss: '0' });
  const report = await sentOk(sender);
  const received = await receiver.waitFor((e) => e.event === 'received' && e.name === 'long-cut.img', 'the receiver reporting the file');
  t.diagnostic(`confirmed before the cut ${String(before.bytesDone)}; first retry: ${String(retry.message)}; attempts ${String(report.attempts)}; sent ${String(report.bytesSent)} of ${size}; receiver: ${String(received.bytesReceived)} received after the cut, ${String(received.bytesResumed)} held from before`);
  assert.match(String(retry.message), /No acknowledgement from the receiver for \d+ s/);
  assert.ok((report.attempts as number) >= 3, 'the silent attempt, one failing against the cut, one after the mend');
  assert.ok((received.bytesResumed as number) >= (before.bytesDone as number), 'what was confirmed before the cut was kept');
  assert.equal((received.bytesResumed as number) + (received.bytesReceived as number), size, 'after the cut only the rest came');
  assert.ok((report.bytesSent as number) <= size + 3 * 2 * 4 * MiB, `bytes sent ${String(report.bytesSent)}: the file once, plus at most the chunks in flight at the cut`);
  assert.equal(await sha256Of(join(dir, 'long-cut.img')), await sha256Of(file));
});

test('DSCP marks on the lab link: tcpdump in the receiving host sees every data packet of the sender marked with its class', async (t) => {
  const tcpdump = requireTool('tcpdump', 'tcpdump');
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'marked.img');
  await writeSeededFile(file, seed, 'marked', 8 * MiB);
  const lab = await twoHosts(seed, { delay: '5ms', rate: '100mbit' });
  await receiverIn(lab, dir);
  // Packets carrying bytes to or from the receiver's port, as they come out of the link in b.
  const capture = spawnTracked(tesseraBin, ['lab', 'exec', 'b', '--state', lab.stateDir, '--', tcpdump, '-i', 'wan', '-n', '-v', '-l', `tcp port ${PORT} and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)`]);
  let out = '';
  let err = '';
  capture.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  capture.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  await until(() => err.includes('listening on'), 30_000, 'tcpdump listening in b');
  const report = await sentOk(senderIn(lab, file, ['--connections', '3', '--class', 'interactive']));
  await new Promise((resolve) => setTimeout(resolve, 500));
  // lab exec passes SIGINT on to tcpdump, which then prints what it captured and exits.
  capture.kill('SIGINT');
  await new Promise((resolve) => capture.once('exit', resolve));
  const [a, b] = [lab.address('a'), lab.address('b')];
  const toReceiver: string[] = [];
  const fromReceiver: string[] = [];
  const lines = out.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const tos = /^\S+ IP \(tos (0x[0-9a-f]+)/.exec(lines[i]!);
    const dst = /^\s+([\d.]+)\.(\d+) > ([\d.]+)\.(\d+):/.exec(lines[i + 1]!);
    if (tos === null || dst === null) continue;
    if (dst[1] === a && dst[3] === b && Number(dst[4]) === PORT) toReceiver.push(tos[1]!);
    else if (dst[1] === b && Number(dst[2]) === PORT && dst[3] === a) fromReceiver.push(tos[1]!);
  }
  t.diagnostic(`dscp ${String(report.dscp)}; seen in b: to the receiver ${toReceiver.length} packets (${[...new Set(toReceiver)].join(', ')}), from it ${fromReceiver.length} (${[...new Set(fromReceiver)].join(', ')})`);
  assert.equal(report.dscp, 18);
  assert.ok(toReceiver.length > 100 && fromReceiver.length > 10, `packets seen: ${toReceiver.length} and ${fromReceiver.length}`);
  assert.deepEqual([...new Set(toReceiver)], ['0x48'], 'every packet the sender sent crossed the link marked AF21');
  // The receiver marks a connection once OPEN or JOIN names the class: only its HELLO_OK goes before.
  const unmarked = fromReceiver.filter((x) => x !== '0x48');
  assert.ok(unmarked.length <= 3 && unmarked.every((x) => x === '0x0'), `at most one unmarked packet per connection from the receiver: ${unmarked.join(', ')}`);
});
