/** Transmission against the in-memory store: commands, flags, replies, validation, error mapping. */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { EngineError, EngineErrorCode } from '../../src/engine/index.ts';
import { errnoName } from '../../src/nbd/rules.ts';
import { CodedError } from '../../src/util/coded-error.ts';
import { decodeSimpleReply, encodeOptionRequest, encodeRequestHeader } from '../../src/nbd/codec.ts';
import { ClientFlag, Command, CommandFlag, Errno, Option, Size } from '../../src/nbd/protocol.ts';
import { greet, NbdClient, NbdReplyError, Wire, type ReplyResult } from './client.ts';
import { startMemoryServer, type MemoryServer } from './harness.ts';

const KiB = 1024;
let ms: MemoryServer;
before(async () => {
  ms = await startMemoryServer();
});
after(() => ms.close());
beforeEach(() => {
  ms.store.hook = null;
  ms.store.fuaLog = [];
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}

async function errnoOf(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof NbdReplyError) return err.errno;
    throw err;
  }
  return 0;
}

for (const mode of ['structured', 'simple'] as const) {
  test(`transmission round-trips writes, zeroes, trims and reads with ${mode} replies`, async () => {
    const client = await NbdClient.connect(ms.target, { exportName: 'other', structured: mode === 'structured' });
    assert.equal(client.structured, mode === 'structured');
    const data = pattern(10_000, 3);
    await client.write(1000, data);
    assert.deepEqual(await client.read(1000, 10_000), data);
    await client.writeZeroes(2000, 100);
    await client.trim(5000, 3000);
    const expected = Buffer.from(data);
    expected.fill(0, 1000, 1100);
    expected.fill(0, 4000, 7000);
    assert.deepEqual(await client.read(1000, 10_000), expected);
    await client.flush();
    // An unaligned read that ends at the last byte of the export.
    assert.equal((await client.read(64 * KiB - 7, 7)).length, 7);
    await client.disconnect();
  });
}

test('transmission reads and writes through NBD_OPT_EXPORT_NAME with simple replies', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'other', useExportName: true, structured: false });
  assert.equal(client.sizeBytes, 64 * KiB);
  await client.write(0, pattern(4096, 9));
  assert.deepEqual(await client.read(0, 4096), pattern(4096, 9));
  await client.disconnect();
});

test('transmission passes FUA, and NO_HOLE as mayTrim false, to the engine', async () => {
  ms.store.createDisk('fresh', 64 * KiB);
  const client = await NbdClient.connect(ms.target, { exportName: 'fresh', metaContexts: ['base:allocation'] });
  await client.write(0, pattern(8192, 1), CommandFlag.FUA);
  await client.writeZeroes(0, 4096, CommandFlag.FUA | CommandFlag.NO_HOLE);
  await client.writeZeroes(4096, 4096, CommandFlag.FUA | CommandFlag.FAST_ZERO);
  await client.trim(8192, 512, CommandFlag.FUA);
  await client.write(16384, pattern(512, 1));
  assert.deepEqual(ms.store.fuaLog, [
    ['write', 0, 8192],
    ['zero-nohole', 0, 4096],
    ['zero', 4096, 4096],
    ['trim', 8192, 512],
  ]);
  const status = await client.blockStatus(0, 16384 + 512);
  // NO_HOLE zeroes stay allocated (flags 0); zeroes that may trim become holes (HOLE|ZERO).
  assert.deepEqual(status.get('base:allocation'), [
    { length: 4096, flags: 0 },
    { length: 12288, flags: 3 },
    { length: 512, flags: 0 },
  ]);
  await client.disconnect();
  ms.store.disks.delete('fresh');
});

test('transmission block status covers from the offset, honours REQ_ONE and caps extents per reply', async () => {
  const disk = ms.store.createDisk('striped', 8 * 1024 * 1024);
  // 16384 sectors alternating data and hole: more runs than one reply may carry.
  for (let s = 0; s < 16384; s += 2) disk.allocated[s] = 1;
  const client = await NbdClient.connect(ms.target, { exportName: 'striped', metaContexts: ['base:allocation'] });
  const full = (await client.blockStatus(0, 8 * 1024 * 1024)).get('base:allocation')!;
  assert.equal(full.length, 4096);
  assert.ok(full.every((e, i) => e.length === 512 && e.flags === (i % 2 === 0 ? 0 : 3)));
  const one = (await client.blockStatus(512, 4096, CommandFlag.REQ_ONE)).get('base:allocation')!;
  assert.deepEqual(one, [{ length: 512, flags: 3 }]);
  const unaligned = (await client.blockStatus(100, 1000)).get('base:allocation')!;
  assert.deepEqual(unaligned, [
    { length: 412, flags: 0 },
    { length: 512, flags: 3 },
    { length: 76, flags: 0 },
  ]);
  assert.equal(await errnoOf(client.blockStatus(8 * 1024 * 1024 - 512, 1024)), Errno.EINVAL);
  await client.disconnect();
  ms.store.disks.delete('striped');
});

test('transmission answers changed-since and its qemu dirty-bitmap alias from the engine', async () => {
  const disk = ms.store.createDisk('tracked', 1024 * 1024);
  ms.store.snapshot('tracked', 'base');
  const client = await NbdClient.connect(ms.target, {
    exportName: 'tracked',
    metaContexts: ['base:allocation', 'tessera:changed-since:base', 'qemu:dirty-bitmap:base'],
  });
  assert.deepEqual([...client.contexts.values()], ['base:allocation', 'tessera:changed-since:base', 'qemu:dirty-bitmap:base']);
  await client.write(64 * KiB, pattern(1000, 5));
  const status = await client.blockStatus(0, 1024 * 1024);
  const changed = [
    { length: 64 * KiB, flags: 0 },
    { length: 1024, flags: 1 },
    { length: 1024 * 1024 - 64 * KiB - 1024, flags: 0 },
  ];
  assert.deepEqual(status.get('tessera:changed-since:base'), changed);
  assert.deepEqual(status.get('qemu:dirty-bitmap:base'), changed);
  assert.deepEqual(status.get('base:allocation'), [
    { length: 64 * KiB, flags: 3 },
    { length: 1024, flags: 0 },
    { length: 1024 * 1024 - 64 * KiB - 1024, flags: 3 },
  ]);
  await client.disconnect();
  assert.ok(disk);
  ms.store.disks.delete('tracked');
});

test('transmission refuses writes, trims and zeroes on a read-only export with EPERM and stays in sync', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'disk@s1', structured: false });
  assert.equal(await errnoOf(client.write(0, pattern(64 * KiB, 1))), Errno.EPERM);
  assert.equal(await errnoOf(client.trim(0, 512)), Errno.EPERM);
  assert.equal(await errnoOf(client.writeZeroes(0, 512)), Errno.EPERM);
  assert.deepEqual(await client.read(0, 4096), Buffer.alloc(4096));
  await client.flush();
  await client.disconnect();
});

test('transmission validates requests: each rejection names its rule in the error chunk and the log', async () => {
  for (const structured of [true, false]) {
    const client = await NbdClient.connect(ms.target, { exportName: 'other', structured });
    const size = 64 * KiB;
    const cases: [string, Promise<ReplyResult>, number, string][] = [
      ['read past the end', client.request(Command.READ, 0, size - 512, 1024), Errno.EINVAL, 'past-end: Offset+length past the end of the export: NBD_CMD_READ offset 65024 length 1024 size 65536'],
      ['read at a huge offset', client.request(Command.READ, 0, 2 ** 60, 512), Errno.EINVAL, `past-end: Offset+length past the end of the export: NBD_CMD_READ offset ${2 ** 60} length 512 size 65536`],
      ['write past the end', client.request(Command.WRITE, 0, size - 10, 20, Buffer.alloc(20)), Errno.ENOSPC, 'past-end: Offset+length past the end of the export: NBD_CMD_WRITE offset 65526 length 20 size 65536'],
      ['zero past the end', client.request(Command.WRITE_ZEROES, 0, size, 1), Errno.ENOSPC, 'past-end: Offset+length past the end of the export: NBD_CMD_WRITE_ZEROES offset 65536 length 1 size 65536'],
      ['trim past the end', client.request(Command.TRIM, 0, size, 1), Errno.EINVAL, 'past-end: Offset+length past the end of the export: NBD_CMD_TRIM offset 65536 length 1 size 65536'],
      ['zero-length read', client.request(Command.READ, 0, 0, 0), Errno.EINVAL, 'zero-length: Length 0: NBD_CMD_READ offset 0 length 0'],
      ['zero-length trim', client.request(Command.TRIM, 0, 0, 0), Errno.EINVAL, 'zero-length: Length 0: NBD_CMD_TRIM offset 0 length 0'],
      ['read over requestBytesMax', client.request(Command.READ, 0, 0, 32 * 1024 * 1024 + 1), Errno.EINVAL, 'payload-too-large: Length exceeds the maximum payload 33554432: NBD_CMD_READ offset 0 length 33554433'],
      ['unknown command', client.request(0x42, 0, 0, 512), Errno.EINVAL, 'unknown-command: Unknown command: command 66 offset 0 length 512'],
      ['NBD_CMD_CACHE (not offered)', client.request(Command.CACHE, 0, 0, 512), Errno.EINVAL, 'command-not-negotiated: NBD_CMD_CACHE not negotiated: NBD_CMD_CACHE offset 0 length 512'],
      ['unknown flag', client.request(Command.READ, 0x8000, 0, 512), Errno.EINVAL, 'flag-not-valid: Flags 0x8000 not valid on NBD_CMD_READ: NBD_CMD_READ flags 0x8000 offset 0 length 512'],
      ['DF (not offered)', client.request(Command.READ, CommandFlag.DF, 0, 512), Errno.EINVAL, 'flag-not-valid: Flags 0x4 not valid on NBD_CMD_READ: NBD_CMD_READ flags 0x4 offset 0 length 512'],
      ['NO_HOLE on a write', client.request(Command.WRITE, CommandFlag.NO_HOLE, 0, 4, Buffer.alloc(4)), Errno.EINVAL, 'flag-not-valid: Flags 0x2 not valid on NBD_CMD_WRITE: NBD_CMD_WRITE flags 0x2 offset 0 length 4'],
      ['REQ_ONE on a read', client.request(Command.READ, CommandFlag.REQ_ONE, 0, 512), Errno.EINVAL, 'flag-not-valid: Flags 0x8 not valid on NBD_CMD_READ: NBD_CMD_READ flags 0x8 offset 0 length 512'],
      ['flush with a length', client.request(Command.FLUSH, 0, 0, 512), Errno.EINVAL, 'flush-with-range: Flush with a nonzero offset or length: NBD_CMD_FLUSH offset 0 length 512'],
      structured
        ? ['block status without contexts', client.request(Command.BLOCK_STATUS, 0, 0, 512), Errno.EINVAL, 'no-meta-context: Block status without a metadata context selected: NBD_CMD_BLOCK_STATUS offset 0 length 512']
        : ['block status without structured replies', client.request(Command.BLOCK_STATUS, 0, 0, 512), Errno.EINVAL, 'structured-replies-not-negotiated: Block status without structured replies negotiated: NBD_CMD_BLOCK_STATUS offset 0 length 512'],
    ];
    const logged = ms.logs.length;
    for (const [what, promise, errno, message] of cases) {
      const r = await promise;
      const mode = structured ? 'structured' : 'simple';
      assert.equal(r.errno, errno, `${what} (${mode})`);
      // A simple reply has no room for a message; the log has it either way.
      assert.equal(r.message, structured ? message : '', `${what} (${mode})`);
      assert.ok(ms.logs.slice(logged).some((line) => line.endsWith(`: ${errnoName(errno)}: ${message}`)), `${what} (${mode}) is logged: ${ms.logs.slice(logged).join('\n')}`);
    }
    assert.equal(ms.logs.length - logged, cases.length, 'one line per rejection');
    // After all that the connection still serves.
    await client.write(0, pattern(512, 2));
    assert.deepEqual(await client.read(0, 512), pattern(512, 2));
    await client.disconnect();
  }
});

test('transmission drops an oversize write payload, answers EINVAL and keeps serving', async () => {
  const small = await startMemoryServer({ requestBytesMax: 4096 });
  try {
    const client = await NbdClient.connect(small.target, { exportName: 'other' });
    assert.equal(client.blockSize?.maximum, 4096);
    assert.equal(await errnoOf(client.write(0, pattern(4097, 1))), Errno.EINVAL);
    await client.write(0, pattern(4096, 4));
    assert.deepEqual(await client.read(0, 4096), pattern(4096, 4));
    assert.equal(small.store.disks.get('other')!.data.subarray(4096, 4097)[0], 0, 'oversize payload not written');
    await client.disconnect();
  } finally {
    await small.close();
  }
});

test('transmission maps the world\'s failures to NBD errors in one place, each with its message', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'other' });
  class OtherError extends CodedError<'OTHER_FAILED'> {}
  // What fs gives for a drive that fails a read, should one reach the server unwrapped.
  const driveEio = Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5, syscall: 'read' });
  const cases: [Error, number, string][] = [
    [new EngineError(EngineErrorCode.NO_SPACE, 'No space left while appending to the write log'), Errno.ENOSPC, 'ENGINE_NO_SPACE: No space left while appending to the write log'],
    [new EngineError(EngineErrorCode.CORRUPT, 'Bad checksum'), Errno.EIO, 'ENGINE_CORRUPT: Bad checksum'],
    [new EngineError(EngineErrorCode.IO, 'The drive under the store is failing'), Errno.EIO, 'ENGINE_IO: The drive under the store is failing'],
    [new EngineError(EngineErrorCode.READ_ONLY, 'Read-only'), Errno.EPERM, 'ENGINE_READ_ONLY: Read-only'],
    [new EngineError(EngineErrorCode.OUT_OF_RANGE, 'Far'), Errno.EINVAL, 'ENGINE_OUT_OF_RANGE: Far'],
    [new EngineError(EngineErrorCode.INVALID, 'Bad'), Errno.EINVAL, 'ENGINE_INVALID: Bad'],
    [new EngineError(EngineErrorCode.CLOSED, 'Closing'), Errno.ESHUTDOWN, 'ENGINE_CLOSED: Closing'],
    [new EngineError(EngineErrorCode.NOT_FOUND, 'Gone'), Errno.EIO, 'ENGINE_NOT_FOUND: Gone'],
    [new OtherError('OTHER_FAILED', 'Repository unreachable'), Errno.EIO, 'OTHER_FAILED: Repository unreachable'],
    [driveEio, Errno.EIO, 'EIO: EIO: i/o error, read'],
  ];
  for (const [error, errno, message] of cases) {
    ms.store.hook = () => {
      throw error;
    };
    const logged = ms.logs.length;
    const write = await client.request(Command.WRITE, 0, 0, 512, Buffer.alloc(512));
    assert.deepEqual([write.errno, write.message], [errno, message], String(error));
    const r = await client.request(Command.READ, 0, 0, 512);
    assert.deepEqual([r.errno, r.message], [errno, message], String(error));
    assert.equal(r.data, null, 'no data with an error');
    const lines = ms.logs.slice(logged);
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.match(lines[0], new RegExp(`: other: NBD_CMD_WRITE cookie \\d+: ${errnoName(errno)}: ${escapeRegExp(message)}$`));
    assert.match(lines[1], new RegExp(`: other: NBD_CMD_READ cookie \\d+: ${errnoName(errno)}: ${escapeRegExp(message)}$`));
  }
  ms.store.hook = null;
  assert.equal((await client.read(0, 512)).length, 512);
  await client.disconnect();
});

test('transmission answers a failed read with a simple error reply and no payload', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'other', structured: false });
  ms.store.hook = (op) => {
    if (op === 'read') throw new EngineError(EngineErrorCode.CORRUPT, 'bad');
  };
  const failed = await client.request(Command.READ, 0, 0, 4096);
  assert.deepEqual([failed.errno, failed.data], [Errno.EIO, null]);
  ms.store.hook = null;
  assert.equal((await client.read(0, 4096)).length, 4096, 'the stream is still in sync');
  await client.disconnect();
});

test('transmission replies out of order, matched by cookie', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'other' });
  let release!: () => void;
  const slow = new Promise<void>((resolve) => (release = resolve));
  ms.store.hook = (op, offset) => (op === 'read' && offset === 0 ? slow : undefined);
  const order: string[] = [];
  const first = client.read(0, 512).then(() => order.push('first'));
  const second = client.read(512, 512).then(() => order.push('second'));
  await second;
  release();
  await first;
  assert.deepEqual(order, ['second', 'first']);
  await client.disconnect();
});

test('transmission finishes in-flight requests before closing on NBD_CMD_DISC', async () => {
  const client = await NbdClient.connect(ms.target, { exportName: 'other' });
  ms.store.hook = (op) => (op === 'write' ? new Promise((resolve) => setTimeout(resolve, 100)) : undefined);
  const write = client.write(0, pattern(4096, 7));
  await new Promise((resolve) => setTimeout(resolve, 20));
  await client.disconnect();
  await write; // The reply arrived before the server closed.
  assert.deepEqual(ms.store.disks.get('other')!.data.subarray(0, 4096), pattern(4096, 7));
});

test('transmission answers in-flight requests when the client half-closes', async () => {
  const wire = await Wire.connect(ms.target);
  await greet(wire, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES);
  wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('other')));
  await wire.read(Size.EXPORT_NAME_REPLY);
  ms.store.hook = () => new Promise((resolve) => setTimeout(resolve, 50));
  for (let i = 0; i < 3; i++) wire.write(encodeRequestHeader({ flags: 0, type: Command.FLUSH, cookie: BigInt(i), offset: 0, length: 0 }));
  wire.socket.end();
  const cookies = [];
  for (let i = 0; i < 3; i++) cookies.push(decodeSimpleReply(await wire.read(Size.SIMPLE_REPLY_HEADER)).cookie);
  assert.deepEqual(cookies.sort(), [0n, 1n, 2n]);
  assert.ok(await wire.closesWithin(2000));
});
