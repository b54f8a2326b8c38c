/** The fixed newstyle handshake against the in-memory store, spoken byte by byte. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  decodeChunkHeader,
  decodeErrorChunk,
  decodeExportNameReply,
  decodeInfoReply,
  decodeRepMetaContext,
  decodeRepServer,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequestData,
  encodeMetaContextRequestData,
  encodeOptionRequest,
  encodeRequestHeader,
} from '../../src/nbd/codec.ts';
import { ClientFlag, Command, Errno, HandshakeFlag, Info, Option, OptionReply, Size, TransmissionFlag } from '../../src/nbd/protocol.ts';
import { greet, NbdClient, option, readOptionReply, Wire } from './client.ts';
import { startMemoryServer, type MemoryServer } from './harness.ts';

let ms: MemoryServer;
before(async () => {
  ms = await startMemoryServer();
});
after(() => ms.close());

async function connect(): Promise<Wire> {
  const wire = await Wire.connect(ms.target);
  const flags = await greet(wire);
  assert.equal(flags, HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES);
  return wire;
}

const metaData = (name: string, queries: string[]) => encodeMetaContextRequestData(name, queries);
const contextNames = (replies: { replyType: number; data: Buffer }[]) =>
  replies.filter((r) => r.replyType === OptionReply.META_CONTEXT).map((r) => decodeRepMetaContext(r.data).name);

test('handshake refuses a client without NBD_FLAG_C_FIXED_NEWSTYLE by closing', async () => {
  const wire = await Wire.connect(ms.target);
  await greet(wire, 0);
  assert.ok(await wire.closesWithin(2000));
});

test('handshake refuses unknown client flags by closing', async () => {
  const wire = await Wire.connect(ms.target);
  await greet(wire, ClientFlag.FIXED_NEWSTYLE | 0x100);
  assert.ok(await wire.closesWithin(2000));
});

test('handshake NBD_OPT_LIST lists every export, then ACK', async () => {
  const wire = await connect();
  const replies = await option(wire, Option.LIST);
  assert.deepEqual(replies.map((r) => r.replyType), [OptionReply.SERVER, OptionReply.SERVER, OptionReply.ACK]);
  assert.deepEqual(replies.slice(0, 2).map((r) => decodeRepServer(r.data)), ['disk', 'other']);
  const [bad] = await option(wire, Option.LIST, Buffer.from('x'));
  assert.equal(bad.replyType, OptionReply.ERR_INVALID);
  wire.socket.destroy();
});

test('handshake answers unknown options, STARTTLS and extended headers with NBD_REP_ERR_UNSUP and goes on', async () => {
  const wire = await connect();
  for (const opt of [Option.STARTTLS, Option.EXTENDED_HEADERS, Option.PEEK_EXPORT, 0x7fff, 0xffffffff]) {
    const [reply] = await option(wire, opt, Buffer.from('ignored'));
    assert.equal(reply.replyType, OptionReply.ERR_UNSUP, `option ${opt}`);
  }
  const replies = await option(wire, Option.LIST);
  assert.equal(replies.at(-1)!.replyType, OptionReply.ACK);
  wire.socket.destroy();
});

test('handshake NBD_OPT_INFO describes an export without entering transmission', async () => {
  const wire = await connect();
  const replies = await option(wire, Option.INFO, encodeInfoRequestData('disk', [Info.NAME, Info.BLOCK_SIZE]));
  assert.equal(replies.at(-1)!.replyType, OptionReply.ACK);
  const infos = replies.filter((r) => r.replyType === OptionReply.INFO).map((r) => decodeInfoReply(r.data));
  assert.deepEqual(infos, [
    {
      type: Info.EXPORT,
      sizeBytes: 1024 * 1024,
      transmissionFlags:
        TransmissionFlag.HAS_FLAGS |
        TransmissionFlag.SEND_FLUSH |
        TransmissionFlag.SEND_FUA |
        TransmissionFlag.SEND_TRIM |
        TransmissionFlag.SEND_WRITE_ZEROES |
        TransmissionFlag.CAN_MULTI_CONN |
        TransmissionFlag.SEND_FAST_ZERO,
    },
    { type: Info.NAME, text: 'disk' },
    { type: Info.BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 },
  ]);
  // Still negotiating: another option works, and the INFO volume was closed again.
  assert.equal((await option(wire, Option.LIST)).at(-1)!.replyType, OptionReply.ACK);
  assert.equal(ms.store.openVolumes, 0);
  wire.socket.destroy();
});

test('handshake NBD_OPT_GO on a snapshot export advertises READ_ONLY and no write features', async () => {
  const wire = await connect();
  const replies = await option(wire, Option.GO, encodeInfoRequestData('disk@s1', []));
  const exportInfo = decodeInfoReply(replies[0].data) as { transmissionFlags: number };
  assert.equal(
    exportInfo.transmissionFlags,
    TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY | TransmissionFlag.SEND_FLUSH | TransmissionFlag.CAN_MULTI_CONN,
  );
  wire.socket.destroy();
});

test('handshake answers a malformed or unknown NBD_OPT_GO with an error and stays in negotiation', async () => {
  const wire = await connect();
  const [malformed] = await option(wire, Option.GO, Buffer.from('00000010', 'hex'));
  assert.equal(malformed.replyType, OptionReply.ERR_INVALID);
  const [unknown] = await option(wire, Option.GO, encodeInfoRequestData('nope', []));
  assert.equal(unknown.replyType, OptionReply.ERR_UNKNOWN);
  assert.match(unknown.data.toString(), /nope/);
  const [unknownSnap] = await option(wire, Option.INFO, encodeInfoRequestData('disk@nope', []));
  assert.equal(unknownSnap.replyType, OptionReply.ERR_UNKNOWN);
  const ok = await option(wire, Option.GO, encodeInfoRequestData('disk', []));
  assert.equal(ok.at(-1)!.replyType, OptionReply.ACK);
  wire.socket.destroy();
});

test('handshake NBD_OPT_STRUCTURED_REPLY is acknowledged once; data or a repeat are invalid', async () => {
  const wire = await connect();
  assert.equal((await option(wire, Option.STRUCTURED_REPLY, Buffer.from('x')))[0].replyType, OptionReply.ERR_INVALID);
  assert.equal((await option(wire, Option.STRUCTURED_REPLY))[0].replyType, OptionReply.ACK);
  assert.equal((await option(wire, Option.STRUCTURED_REPLY))[0].replyType, OptionReply.ERR_INVALID);
  wire.socket.destroy();
});

test('handshake NBD_OPT_LIST_META_CONTEXT lists contexts by namespace, snapshot contexts included', async () => {
  const wire = await connect();
  await option(wire, Option.STRUCTURED_REPLY);
  assert.deepEqual(contextNames(await option(wire, Option.LIST_META_CONTEXT, metaData('disk', ['base:']))), ['base:allocation']);
  assert.deepEqual(contextNames(await option(wire, Option.LIST_META_CONTEXT, metaData('disk', ['tessera:']))), ['tessera:changed-since:s1']);
  assert.deepEqual(contextNames(await option(wire, Option.LIST_META_CONTEXT, metaData('disk', ['qemu:dirty-bitmap:']))), ['qemu:dirty-bitmap:s1']);
  assert.deepEqual(contextNames(await option(wire, Option.LIST_META_CONTEXT, metaData('disk', []))), [
    'base:allocation',
    'tessera:changed-since:s1',
    'qemu:dirty-bitmap:s1',
  ]);
  assert.deepEqual(contextNames(await option(wire, Option.LIST_META_CONTEXT, metaData('disk', ['tessera:changed-since:nope', 'x-other:']))), []);
  const [invalid] = await option(wire, Option.LIST_META_CONTEXT, metaData('disk', ['no-namespace']));
  assert.equal(invalid.replyType, OptionReply.ERR_INVALID);
  const [unknown] = await option(wire, Option.LIST_META_CONTEXT, metaData('nope', ['base:']));
  assert.equal(unknown.replyType, OptionReply.ERR_UNKNOWN);
  const [malformed] = await option(wire, Option.LIST_META_CONTEXT, Buffer.from('0000000100', 'hex'));
  assert.equal(malformed.replyType, OptionReply.ERR_INVALID);
  wire.socket.destroy();
});

test('handshake NBD_OPT_SET_META_CONTEXT needs structured replies and selects known contexts with distinct ids', async () => {
  const wire = await connect();
  const [early] = await option(wire, Option.SET_META_CONTEXT, metaData('disk', ['base:allocation']));
  assert.equal(early.replyType, OptionReply.ERR_INVALID);
  await option(wire, Option.STRUCTURED_REPLY);
  const replies = await option(
    wire,
    Option.SET_META_CONTEXT,
    metaData('disk', ['base:allocation', 'tessera:changed-since:s1', 'tessera:changed-since:missing', 'qemu:dirty-bitmap:s1', 'base:allocation']),
  );
  assert.equal(replies.at(-1)!.replyType, OptionReply.ACK);
  const selected = replies.filter((r) => r.replyType === OptionReply.META_CONTEXT).map((r) => decodeRepMetaContext(r.data));
  assert.deepEqual(selected.map((c) => c.name), ['base:allocation', 'tessera:changed-since:s1', 'qemu:dirty-bitmap:s1']);
  assert.equal(new Set(selected.map((c) => c.contextId)).size, 3);
  assert.ok(selected.every((c) => c.contextId !== 0));
  wire.socket.destroy();
});

test('handshake drops meta contexts selected for another export than the one chosen', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'disk', metaContexts: ['base:allocation'] });
  assert.equal(client.contexts.size, 1);
  await client.disconnect();
  // Select on "other", go to "disk": block status must then be refused.
  const wire = await connect();
  await option(wire, Option.STRUCTURED_REPLY);
  await option(wire, Option.SET_META_CONTEXT, metaData('other', ['base:allocation']));
  await option(wire, Option.GO, encodeInfoRequestData('disk', []));
  wire.write(encodeRequestHeader({ flags: 0, type: Command.BLOCK_STATUS, cookie: 9n, offset: 0, length: 512 }));
  const header = decodeChunkHeader(await wire.read(Size.STRUCTURED_REPLY_HEADER));
  assert.equal(decodeErrorChunk(header.type, await wire.read(header.length)).errno, Errno.EINVAL);
  wire.socket.destroy();
});

test('handshake NBD_OPT_EXPORT_NAME enters transmission with or without the 124 zeroes', async () => {
  for (const noZeroes of [true, false]) {
    const wire = await Wire.connect(ms.target);
    await greet(wire, ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0));
    wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('disk')));
    const bytes = await wire.read(Size.EXPORT_NAME_REPLY + (noZeroes ? 0 : Size.EXPORT_NAME_ZEROES));
    assert.equal(decodeExportNameReply(bytes).sizeBytes, 1024 * 1024);
    if (!noZeroes) assert.ok(bytes.subarray(Size.EXPORT_NAME_REPLY).every((b) => b === 0));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(wire.buffered, 0, 'nothing after the reply');
    wire.socket.destroy();
  }
});

test('handshake NBD_OPT_EXPORT_NAME of an unknown export closes the connection', async () => {
  const wire = await connect();
  wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('nope')));
  assert.ok(await wire.closesWithin(2000));
});

test('handshake answers an oversize option with NBD_REP_ERR_TOO_BIG and closes', async () => {
  const wire = await connect();
  const header = encodeOptionRequest(Option.GO);
  header.writeUInt32BE(64 * 1024 + 1, 12);
  wire.write(header);
  const reply = await readOptionReply(wire);
  assert.equal(reply.replyType, OptionReply.ERR_TOO_BIG);
  assert.ok(await wire.closesWithin(2000));
});

test('handshake NBD_OPT_ABORT is acknowledged, then the server closes', async () => {
  const wire = await connect();
  const [reply] = await option(wire, Option.ABORT);
  assert.equal(reply.replyType, OptionReply.ACK);
  assert.ok(await wire.closesWithin(2000));
});

test('handshake closes a client that does not finish within handshakeTimeoutMs', async () => {
  const quick = await startMemoryServer({ handshakeTimeoutMs: 100 });
  try {
    const wire = await Wire.connect(quick.target);
    await greet(wire);
    assert.ok(await wire.closesWithin(2000));
    assert.ok(quick.logs.some((l) => /Handshake not finished within 100 ms/.test(l)), quick.logs.join('\n'));
    // A client that finished in time is not cut off later.
    const client = await NbdClient.connect(quick.target, { exportName: 'disk' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal((await client.read(0, 512)).length, 512);
    await client.disconnect();
  } finally {
    await quick.close();
  }
});

test('handshake options pipelined with the first requests are all answered', async () => {
  const wire = await Wire.connect(ms.target);
  // Everything in one write: greeting answer, GO, and a read right behind it.
  await wire.read(Size.GREETING);
  wire.write(
    Buffer.concat([
      encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
      encodeOptionRequest(Option.GO, encodeInfoRequestData('disk', [])),
      encodeRequestHeader({ flags: 0, type: Command.READ, cookie: 5n, offset: 0, length: 16 }),
    ]),
  );
  for (;;) {
    const reply = await readOptionReply(wire);
    if (reply.replyType === OptionReply.ACK) break;
  }
  const simple = decodeSimpleReply(await wire.read(Size.SIMPLE_REPLY_HEADER));
  assert.deepEqual(simple, { errno: 0, cookie: 5n });
  assert.equal((await wire.read(16)).length, 16);
  wire.socket.destroy();
});
