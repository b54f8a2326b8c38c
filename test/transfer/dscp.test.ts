/**
 * DSCP marks: every socket of a transfer, at both ends, carries its class's code point (or the
 * one asked), as the kernel reports it (`ss -tn --tos`, which reads the socket's TOS by netlink).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, MiB, requireTool, run, testSeed, writeSeededFile } from '../helpers/index.ts';
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
