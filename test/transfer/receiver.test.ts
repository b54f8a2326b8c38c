/**
 * The receiver against senders that break the protocol, in process: garbage, a silent peer, a
 * frame its gate refuses. Each gets an error frame naming the rule (where there is a frame to
 * answer) and a closed connection; the receiver goes on serving, and writes nothing.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { encodeBody } from '../../src/transfer/codec.ts';
import { Channel } from '../../src/transfer/channel.ts';
import { clientHandshake } from '../../src/transfer/handshake.ts';
import { sendFile, TransferReceiver } from '../../src/transfer/index.ts';
import { FrameType } from '../../src/transfer/spec.ts';
import { cleanup, makeTempDir, MiB, Rng, testSeed, writeSeededFile } from '../helpers/index.ts';
import { join } from 'node:path';

let receiver: TransferReceiver;
let port: number;
let dir: string;

before(async () => {
  dir = makeTempDir();
  receiver = new TransferReceiver({ dir, secret: null });
  port = (await receiver.listen('127.0.0.1', 0)).port;
});

after(async () => {
  await receiver.close();
  await cleanup();
});

/** A connected channel past the handshake. */
async function connected(): Promise<Channel> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  const ch = new Channel(socket);
  await clientHandshake(ch, null, `127.0.0.1:${port}`);
  return ch;
}

/** Resolves with the error the receiver sent (or the close) once the channel closes. */
function closed(ch: Channel): Promise<{ code: string; message: string }> {
  return new Promise((resolve) => ch.onClose((err) => resolve({ code: err.code, message: err.message })));
}

test('garbage instead of a handshake: the connection closes, and the receiver goes on serving', async (t) => {
  const rng = new Rng(testSeed(t));
  for (let i = 0; i < 20; i++) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.resume(); // read the error frame and the end, or 'close' never comes
    // At least a header's worth: fewer bytes are a silent peer (the next test).
    const garbage = Buffer.from(Array.from({ length: rng.range(32, 4096) }, () => rng.int(256)));
    socket.write(garbage);
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  }
  const src = makeTempDir();
  await writeSeededFile(join(src, 'after.img'), 7, 'after', 1 * MiB);
  const report = await sendFile({ file: join(src, 'after.img'), host: '127.0.0.1', port });
  assert.equal(report.sizeBytes, 1 * MiB);
});

test('a sender that says nothing is closed after the handshake timeout (5 s)', async () => {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.resume();
  const started = performance.now();
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  assert.ok(performance.now() - started >= 4_900);
});

test('frames the gate refuses get an error naming the rule, and close the connection', async () => {
  const before = readdirSync(dir).filter((n) => n !== '.tessera-transfer').sort();
  const id = 'b'.repeat(32);
  const cases: [number, object, RegExp][] = [
    [FrameType.DATA, { chunk: 0, offset: 0 }, /Expected OPEN or JOIN after the handshake, got DATA/],
    [FrameType.OPEN, { transfer: id, name: '../escape', sizeBytes: 10, chunkBytes: 65536, class: 'bulk', connections: 1 }, /holds a '\/' or a NUL: a file name, not a path, is sent/],
    [FrameType.JOIN, { transfer: id, class: 'bulk' }, /No open transfer b{32} to join/],
  ];
  for (const [type, meta, rule] of cases) {
    const ch = await connected();
    const done = closed(ch);
    ch.send(type, encodeBody(meta));
    assert.match((await done).message, rule);
  }
  // Past OPEN: data without its CHUNK.
  const ch = await connected();
  const done = closed(ch);
  ch.send(FrameType.OPEN, encodeBody({ transfer: id, name: 'gate.img', sizeBytes: 65536, chunkBytes: 65536, class: 'bulk', connections: 1 }));
  const opened = await ch.expect(5_000, 'OPENED');
  assert.equal(opened.frame.header.type, FrameType.OPENED);
  ch.send(FrameType.DATA, encodeBody({ chunk: 0, offset: 0 }, Buffer.alloc(4096)));
  const err = await done;
  assert.equal(err.code, 'TRANSFER_PROTOCOL');
  assert.match(err.message, /DATA of chunk 0 without its CHUNK/);
  assert.deepEqual(readdirSync(dir).filter((n) => n !== '.tessera-transfer').sort(), before, 'nothing received');
});
