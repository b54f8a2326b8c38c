/**
 * Bad input never takes the server down: garbage, truncated handshakes, wrong magic, random
 * requests, clients vanishing mid-payload. Each bad connection may be closed; a good connection
 * running alongside keeps working, and nothing rejects or throws unhandled.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  encodeClientFlags,
  encodeInfoRequestData,
  encodeMetaContextRequestData,
  encodeOptionRequest,
  encodeRequestHeader,
} from '../../src/nbd/codec.ts';
import { ClientFlag, Command, Option, Size } from '../../src/nbd/protocol.ts';
import { Rng, testSeed } from '../helpers/index.ts';
import { greet, NbdClient, Wire } from './client.ts';
import { startMemoryServer, until, type MemoryServer } from './harness.ts';

let ms: MemoryServer;
let good: NbdClient;
const unhandled: unknown[] = [];
const onUnhandled = (err: unknown) => unhandled.push(err);

before(async () => {
  process.on('unhandledRejection', onUnhandled);
  process.on('uncaughtException', onUnhandled);
  ms = await startMemoryServer({ handshakeTimeoutMs: 2000, requestBytesMax: 64 * 1024 });
  good = await NbdClient.connect(ms.target, { exportName: 'disk', metaContexts: ['base:allocation'] });
});

after(async () => {
  await good.disconnect();
  await ms.close();
  process.off('unhandledRejection', onUnhandled);
  process.off('uncaughtException', onUnhandled);
});

/** The good connection still reads back what it writes; nothing went unhandled. */
async function assertHealthy(tag: number): Promise<void> {
  const data = Buffer.alloc(4096, tag & 0xff);
  await good.write(8192, data);
  assert.deepEqual(await good.read(8192, 4096), data);
  assert.deepEqual(unhandled, []);
}

/** Opens a connection, sends `bytes` in pieces, then waits for the server to close it or `ms`. */
async function send(pieces: Buffer[], opts: { thenDestroy?: boolean; thenEnd?: boolean; waitMs?: number } = {}): Promise<boolean> {
  const wire = await Wire.connect(ms.target);
  for (const piece of pieces) {
    if (wire.socket.destroyed) break;
    wire.write(piece);
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (opts.thenDestroy) {
    wire.socket.destroy();
    return true;
  }
  if (opts.thenEnd) wire.socket.end();
  const closed = await wire.closesWithin(opts.waitMs ?? 3000);
  wire.socket.destroy();
  return closed;
}

const flags = encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES);
const goDisk = encodeOptionRequest(Option.GO, encodeInfoRequestData('disk', []));

test('robustness random garbage on fresh connections closes them and harms no other connection', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  for (let round = 0; round < 40; round++) {
    const garbage = Buffer.alloc(rng.range(1, 3000));
    for (let i = 0; i < garbage.length; i++) garbage[i] = rng.int(256);
    // Some rounds start validly, so the garbage lands in option parsing or in transmission.
    const prefix = [[], [flags], [flags, goDisk]][round % 3];
    // Half-close afterwards: garbage shorter than a header is not yet a violation, but a client
    // that sends nothing more must still be closed.
    const closed = await send([...prefix, garbage], { thenEnd: true, waitMs: 2500 });
    assert.ok(closed, `seed ${seed} round ${round}: the server closes a garbage connection`);
    await assertHealthy(round);
  }
});

test('robustness truncated handshakes are closed by the timeout or on disconnect', async () => {
  const stream = Buffer.concat([flags, encodeOptionRequest(Option.STRUCTURED_REPLY), goDisk]);
  for (const cut of [1, 3, 4, 10, 20, 25, stream.length - 1]) {
    await send([stream.subarray(0, cut)], { thenDestroy: true });
  }
  // One that just stops talking is cut off by the handshake timeout.
  assert.ok(await send([stream.subarray(0, 10)], { waitMs: 4000 }));
  await until(() => ms.server.connections === 1, 3000, 'only the good connection left');
  await assertHealthy(1);
});

test('robustness a request with a wrong magic closes that connection only', async () => {
  const bad = encodeRequestHeader({ flags: 0, type: Command.READ, cookie: 1n, offset: 0, length: 512 });
  bad.writeUInt32BE(0x25609514, 0);
  assert.ok(await send([flags, goDisk, bad]));
  assert.ok(ms.logs.some((l) => /wrong magic 0x25609514/.test(l)));
  await assertHealthy(2);
});

test('robustness a client vanishing mid-payload or with requests in flight leaves the server intact', async () => {
  const write = encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0, length: 65536 });
  await send([flags, goDisk, write, Buffer.alloc(1000)], { thenDestroy: true });
  const reads = Array.from({ length: 20 }, (_, i) => encodeRequestHeader({ flags: 0, type: Command.READ, cookie: BigInt(i), offset: 0, length: 65536 }));
  await send([flags, goDisk, Buffer.concat(reads)], { thenDestroy: true });
  await until(() => ms.server.connections === 1, 3000, 'only the good connection left');
  await until(() => ms.store.openVolumes === 1, 3000, 'only the good volume open');
  await assertHealthy(3);
});

test('robustness seeded random well-framed requests get replies or a close, never a crash', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const types = [Command.READ, Command.WRITE, Command.FLUSH, Command.TRIM, Command.CACHE, Command.WRITE_ZEROES, Command.BLOCK_STATUS, 9, 0xffff];
  for (let round = 0; round < 10; round++) {
    const structured = rng.int(2) === 1;
    const client = await NbdClient.connect(ms.target, {
      exportName: rng.int(2) ? 'disk' : 'disk@s1',
      structured,
      metaContexts: structured && rng.int(2) ? ['base:allocation'] : [],
    });
    const pending = [];
    for (let i = 0; i < 50; i++) {
      const type = types[rng.int(types.length)];
      const requestFlags = rng.int(4) === 0 ? rng.int(0x10000) : rng.int(2) ? 0 : 1 << rng.int(6);
      const offset = [0, rng.int(1024 * 1024), 1024 * 1024 - 1, 2 ** 40][rng.int(4)];
      const length = [0, 1, rng.int(70_000), 65536, 65537][rng.int(5)];
      const payload = type === Command.WRITE ? Buffer.alloc(length, 0x5a) : undefined;
      pending.push(client.request(type, requestFlags, offset, length, payload));
    }
    const results = await Promise.allSettled(pending);
    assert.ok(
      results.every((r) => r.status === 'fulfilled'),
      `seed ${seed} round ${round}: every request got a reply`,
    );
    await client.disconnect();
    await assertHealthy(10 + round);
  }
});

test('robustness a connection stream split into seeded random pieces is served exactly', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const payload = Buffer.alloc(20_000);
  for (let i = 0; i < payload.length; i++) payload[i] = rng.int(256);
  const stream = Buffer.concat([
    flags,
    encodeOptionRequest(Option.STRUCTURED_REPLY),
    encodeOptionRequest(Option.SET_META_CONTEXT, encodeMetaContextRequestData('other', ['base:allocation'])),
    encodeOptionRequest(Option.GO, encodeInfoRequestData('other', [])),
    encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 100, length: payload.length }),
    payload,
    encodeRequestHeader({ flags: 0, type: Command.READ, cookie: 2n, offset: 100, length: payload.length }),
  ]);
  const wire = await Wire.connect(ms.target);
  await wire.read(Size.GREETING);
  let at = 0;
  while (at < stream.length) {
    const n = Math.min(stream.length - at, rng.range(1, 700));
    wire.write(stream.subarray(at, at + n));
    at += n;
    await new Promise((resolve) => setImmediate(resolve));
  }
  // Option replies: ACK, META_CONTEXT + ACK, INFO(s) + ACK; then the write's and the read's replies.
  let acks = 0;
  while (acks < 3) {
    const header = await wire.read(Size.OPTION_REPLY_HEADER);
    await wire.read(header.readUInt32BE(16));
    if (header.readUInt32BE(12) === 1) acks++;
  }
  const simple = await wire.read(Size.SIMPLE_REPLY_HEADER);
  assert.equal(simple.readUInt32BE(4), 0, `seed ${seed}: write succeeded`);
  const chunk = await wire.read(Size.STRUCTURED_REPLY_HEADER + 8);
  assert.equal(chunk.readUInt16BE(6), 1, 'offset data chunk');
  assert.deepEqual(await wire.read(payload.length), payload, `seed ${seed}: read back exactly`);
  wire.socket.destroy();
  await assertHealthy(4);
});

test('robustness greeting only, then silence and close, is handled', async () => {
  const wire = await Wire.connect(ms.target);
  await greet(wire);
  wire.socket.end();
  assert.ok(await wire.closesWithin(2000));
  await assertHealthy(5);
});
