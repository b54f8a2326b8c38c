/**
 * DSCP marks: every socket of a transfer, at both ends, carries its class's code point (or the
 * one asked), as the kernel reports it (`ss -tn --tos`, which reads the socket's TOS by netlink),
 * and the packets on the wire carry it (tcpdump on lo).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, MiB, requireTool, run, spawnTracked, testSeed, until, writeSeededFile } from '../helpers/index.ts';
import { startReceiver, startSender } from './harness.ts';

after(cleanup);

/** TOS bytes of the established TCP sockets on loopback with `port` at either end, by side. */
async function tosOf(port: number): Promise<{ sender: string[]; receiver: string[] }> {
  const ss = requireTool('ss', 'iproute2');
  const out = await run(ss, ['-tnH', '--tos', 'state', 'established']);
  const sender: string[] = [];
  const receiver: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const m = /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:(\d+).*?tos:(0x[0-9a-f]+)/.exec(line);
    if (m === null) continue;
    if (Number(m[2]) === port) sender.push(m[3]);
    else if (Number(m[1]) === port) receiver.push(m[3]);
  }
  return { sender, receiver };
}

for (const { name, args, env, tos } of [
  { name: 'class interactive: AF21 (18), TOS 0x48', args: ['--class', 'interactive'], env: {}, tos: '0x48' },
  { name: 'the default class bulk: CS1 (8), TOS 0x20', args: [], env: {}, tos: '0x20' },
  { name: '--dscp 46 over the class: TOS 0xb8', args: ['--class', 'replication', '--dscp', '46'], env: {}, tos: '0xb8' },
  { name: 'TESSERA_TRANSFER_DSCP maps a class: replication=26, TOS 0x68', args: ['--class', 'replication'], env: { TESSERA_TRANSFER_DSCP: 'replication=26' }, tos: '0x68' },
]) {
  test(`DSCP on every socket of a transfer, both ends, ${name}`, async (t) => {
    const seed = testSeed(t);
    const src = makeTempDir();
    const dir = makeTempDir();
    const file = join(src, 'marked.img');
    await writeSeededFile(file, seed, 'dscp', 64 * MiB);
    const receiver = await startReceiver(dir, { env });
    // Slow enough to be looked at while it runs.
    const sender = startSender(file, receiver.port, ['--connections', '3', '--rate-max', '8M', ...args], env);
    await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) > 0, 'data flowing');
    const seen = await tosOf(receiver.port);
    await sender.kill9();
    t.diagnostic(JSON.stringify(seen));
    assert.equal(seen.sender.length, 3, `the sender's 3 sockets: ${JSON.stringify(seen)}`);
    assert.equal(seen.receiver.length, 3, `the receiver's 3 sockets: ${JSON.stringify(seen)}`);
    for (const value of [...seen.sender, ...seen.receiver]) assert.equal(value, tos);
  });
}

test('DSCP marks seen on the wire (tcpdump on lo): every data packet of the sender, the receiver\'s from its answer to OPEN or JOIN on', async (t) => {
  const tcpdump = requireTool('tcpdump', 'tcpdump');
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'wire.img');
  await writeSeededFile(file, seed, 'wire', 8 * MiB);
  const receiver = await startReceiver(dir);
  // Packets carrying bytes, to or from the receiver's port, until the transfer is over.
  const capture = spawnTracked(tcpdump, ['-i', 'lo', '-n', '-v', '-l', '-c', '3000', `tcp port ${receiver.port} and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)`]);
  let out = '';
  let err = '';
  capture.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  capture.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  await until(() => err.includes('listening on'), 30_000, 'tcpdump listening');
  const sender = startSender(file, receiver.port, ['--connections', '3', '--class', 'interactive']);
  assert.equal((await sender.exited).code, 0, sender.stderr);
  await new Promise((resolve) => setTimeout(resolve, 500));
  capture.kill('SIGINT');
  await new Promise((resolve) => capture.once('exit', resolve));
  // tcpdump -v: "IP (tos 0x48, ...)" on one line, "127.0.0.1.A > 127.0.0.1.B: ..." on the next.
  const lines = out.split('\n');
  const toReceiver: string[] = [];
  const fromReceiver: string[] = [];
  for (let i = 0; i + 1 < lines.length; i++) {
    const tos = /^\S+ IP \(tos (0x[0-9a-f]+)/.exec(lines[i]);
    const dst = /^\s+127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+):/.exec(lines[i + 1]);
    if (tos === null || dst === null) continue;
    if (Number(dst[2]) === receiver.port) toReceiver.push(tos[1]);
    else if (Number(dst[1]) === receiver.port) fromReceiver.push(tos[1]);
  }
  t.diagnostic(`to the receiver: ${toReceiver.length} packets; from it: ${fromReceiver.length}, unmarked ${fromReceiver.filter((x) => x !== '0x48').length}`);
  assert.ok(toReceiver.length > 10 && fromReceiver.length > 10, `packets seen: ${toReceiver.length} and ${fromReceiver.length}`);
  assert.deepEqual([...new Set(toReceiver)], ['0x48'], 'every packet the sender sent is marked');
  // The receiver marks a connection once OPEN or JOIN names the class: only its handshake answer (HELLO_OK) goes before.
  const unmarked = fromReceiver.filter((x) => x !== '0x48');
  assert.ok(unmarked.length <= 3, `at most one unmarked packet per connection from the receiver, got ${unmarked.length}`);
  assert.ok(unmarked.every((x) => x === '0x0'));
});
