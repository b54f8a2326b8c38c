/**
 * Golden vectors for every NBD message the codec encodes or decodes. The hex strings are written
 * from the protocol document, field by field, not produced by the code under test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as codec from '../../src/nbd/codec.ts';
import { NbdError } from '../../src/nbd/errors.ts';
import { Command, CommandFlag, Info, Option, OptionReply, ReplyFlag, ReplyType } from '../../src/nbd/protocol.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const COOKIE = 0x0102030405060708n;
const C = '0102030405060708';
const REP = '0003e889045565a9';
const BASE_ALLOCATION = '626173653a616c6c6f636174696f6e'; // "base:allocation", 15 bytes

function golden(name: string, encoded: Buffer, expected: string): void {
  assert.equal(encoded.toString('hex'), hex(expected).toString('hex'), name);
}

test('codec greeting encodes magics and handshake flags', () => {
  golden('greeting', codec.encodeGreeting(3), '4e42444d41474943 49484156454f5054 0003');
  assert.equal(codec.decodeGreeting(hex('4e42444d41474943 49484156454f5054 0003')), 3);
  assert.throws(() => codec.decodeGreeting(hex('4e42444d41474943 0000000000000000 0003')), NbdError);
});

test('codec client flags round trip and reject a wrong length', () => {
  golden('client flags', codec.encodeClientFlags(3), '00000003');
  assert.equal(codec.decodeClientFlags(hex('00000001')), 1);
  assert.throws(() => codec.decodeClientFlags(hex('000001')), NbdError);
});

test('codec option request header matches the protocol layout', () => {
  golden('NBD_OPT_LIST', codec.encodeOptionRequest(Option.LIST), '49484156454f5054 00000003 00000000');
  golden('NBD_OPT_EXPORT_NAME', codec.encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('d1')), '49484156454f5054 00000001 00000002 6431');
  assert.deepEqual(codec.decodeOptionHeader(hex('49484156454f5054 00000007 00000010')), { option: 7, length: 16 });
  assert.throws(() => codec.decodeOptionHeader(hex('49484156454f5055 00000007 00000010')), /wrong magic/);
  assert.throws(() => codec.decodeOptionHeader(hex('49484156454f5054 00000007')), NbdError);
});

test('codec option replies match the protocol layout', () => {
  golden('ack', codec.encodeOptionAck(Option.GO), `${REP} 00000007 00000001 00000000`);
  golden('error', codec.encodeOptionError(Option.STARTTLS, OptionReply.ERR_UNSUP, 'no'), `${REP} 00000005 80000001 00000002 6e6f`);
  golden('server', codec.encodeRepServer(Option.LIST, 'd1'), `${REP} 00000003 00000002 00000006 00000002 6431`);
  golden('info export', codec.encodeInfoExport(Option.GO, 0x100000, 0x010d), `${REP} 00000007 00000003 0000000c 0000 0000000000100000 010d`);
  golden('info name', codec.encodeInfoString(Option.GO, Info.NAME, 'd1'), `${REP} 00000007 00000003 00000004 0001 6431`);
  golden(
    'info block size',
    codec.encodeInfoBlockSize(Option.GO, 1, 4096, 32 * 1024 * 1024),
    `${REP} 00000007 00000003 0000000e 0003 00000001 00001000 02000000`,
  );
  golden('meta context', codec.encodeRepMetaContext(Option.SET_META_CONTEXT, 1, 'base:allocation'), `${REP} 0000000a 00000004 00000013 00000001 ${BASE_ALLOCATION}`);
});

test('codec option reply decoders read what the encoders wrote', () => {
  assert.deepEqual(codec.decodeOptionReplyHeader(hex(`${REP} 00000007 80000006 00000002`)), { option: 7, replyType: OptionReply.ERR_UNKNOWN, length: 2 });
  assert.throws(() => codec.decodeOptionReplyHeader(hex(`0003e889045565aa 00000007 00000001 00000000`)), /wrong magic/);
  assert.equal(codec.decodeRepServer(hex('00000002 6431')), 'd1');
  assert.throws(() => codec.decodeRepServer(hex('00000003 6431')), NbdError);
  assert.deepEqual(codec.decodeInfoReply(hex('0000 0000000000100000 010d')), { type: Info.EXPORT, sizeBytes: 0x100000, transmissionFlags: 0x010d });
  assert.deepEqual(codec.decodeInfoReply(hex('0001 6431')), { type: Info.NAME, text: 'd1' });
  assert.deepEqual(codec.decodeInfoReply(hex('0003 00000001 00001000 02000000')), { type: Info.BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 0x2000000 });
  assert.throws(() => codec.decodeInfoReply(hex('0003 00000001 00001000')), NbdError);
  assert.deepEqual(codec.decodeRepMetaContext(hex(`00000001 ${BASE_ALLOCATION}`)), { contextId: 1, name: 'base:allocation' });
});

test('codec export name reply has 124 zeroes unless NO_ZEROES was agreed', () => {
  golden('no zeroes', codec.encodeExportNameReply(0x100000, 0x0003, true), '0000000000100000 0003');
  golden('zeroes', codec.encodeExportNameReply(0x100000, 0x0003, false), '0000000000100000 0003' + '00'.repeat(124));
  assert.deepEqual(codec.decodeExportNameReply(hex('0000000000100000 0003' + '00'.repeat(124))), { sizeBytes: 0x100000, transmissionFlags: 3 });
  assert.throws(() => codec.decodeExportNameReply(hex('0000000000100000 0003 00')), NbdError);
});

test('codec NBD_OPT_INFO/GO data round trip; malformed data decode to null', () => {
  golden('go data', codec.encodeInfoRequestData('d1', [Info.BLOCK_SIZE]), '00000002 6431 0001 0003');
  assert.deepEqual(codec.decodeInfoRequestData(hex('00000002 6431 0002 0003 0001')), { name: 'd1', infoTypes: [3, 1] });
  assert.deepEqual(codec.decodeInfoRequestData(hex('00000000 0000')), { name: '', infoTypes: [] });
  assert.equal(codec.decodeInfoRequestData(hex('00000002 6431 0001')), null, 'count says 1, none present');
  assert.equal(codec.decodeInfoRequestData(hex('00000002 6431 0000 00')), null, 'trailing byte');
  assert.equal(codec.decodeInfoRequestData(hex('00000009 6431 0000')), null, 'name longer than data');
  assert.equal(codec.decodeInfoRequestData(hex('00000002 6400 0000')), null, 'NUL in name');
  assert.equal(codec.decodeInfoRequestData(hex('00000002 c328 0000')), null, 'invalid UTF-8');
  assert.equal(codec.decodeInfoRequestData(hex('0000')), null, 'too short');
});

test('codec meta context request data round trip; malformed data decode to null', () => {
  golden('meta data', codec.encodeMetaContextRequestData('d1', ['base:allocation']), `00000002 6431 00000001 0000000f ${BASE_ALLOCATION}`);
  assert.deepEqual(codec.decodeMetaContextRequestData(hex(`00000002 6431 00000001 0000000f ${BASE_ALLOCATION}`)), {
    name: 'd1',
    queries: ['base:allocation'],
  });
  assert.deepEqual(codec.decodeMetaContextRequestData(hex('00000000 00000000')), { name: '', queries: [] });
  assert.equal(codec.decodeMetaContextRequestData(hex('00000000 00000002 00000000')), null, 'count too large');
  assert.equal(codec.decodeMetaContextRequestData(hex('00000000 ffffffff')), null, 'huge count');
  assert.equal(codec.decodeMetaContextRequestData(hex('00000000 00000001 00000005 6162')), null, 'query longer than data');
  assert.equal(codec.decodeMetaContextRequestData(hex('00000000 00000000 00')), null, 'trailing byte');
});

test('codec request header matches the protocol layout, 64-bit offsets included', () => {
  const header = { flags: CommandFlag.FUA, type: Command.WRITE, cookie: COOKIE, offset: 0x100000200, length: 0x200 };
  golden('request', codec.encodeRequestHeader(header), `25609513 0001 0001 ${C} 0000000100000200 00000200`);
  assert.deepEqual(codec.decodeRequestHeader(hex(`25609513 0001 0001 ${C} 0000000100000200 00000200`)), header);
  const huge = codec.decodeRequestHeader(hex(`25609513 0000 0000 ${C} ffffffffffffffff 00000001`));
  assert.ok(huge.offset >= 2 ** 64 - 2 ** 12, 'offsets past 2^53 stay huge');
  assert.throws(() => codec.decodeRequestHeader(hex(`25609514 0000 0000 ${C} 0000000000000000 00000000`)), /wrong magic 0x25609514/);
  assert.throws(() => codec.decodeRequestHeader(hex(`25609513 0000 0000 ${C} 0000000000000000 000000`)), NbdError);
});

test('codec simple reply matches the protocol layout', () => {
  golden('simple reply', codec.encodeSimpleReply(COOKIE, 22), `67446698 00000016 ${C}`);
  assert.deepEqual(codec.decodeSimpleReply(hex(`67446698 00000016 ${C}`)), { errno: 22, cookie: COOKIE });
  assert.throws(() => codec.decodeSimpleReply(hex(`67446699 00000016 ${C}`)), NbdError);
});

test('codec structured reply chunks match the protocol layout', () => {
  golden('offset data head', codec.encodeOffsetDataHead(COOKIE, ReplyFlag.DONE, 0x200, 4), `668e33ef 0001 0001 ${C} 0000000c 0000000000000200`);
  golden('offset hole', codec.encodeOffsetHole(COOKIE, ReplyFlag.DONE, 0x200, 0x1000), `668e33ef 0001 0002 ${C} 0000000c 0000000000000200 00001000`);
  golden('error', codec.encodeErrorChunk(COOKIE, ReplyFlag.DONE, 5, 'io'), `668e33ef 0001 8001 ${C} 00000008 00000005 0002 696f`);
  golden('error offset', codec.encodeErrorChunk(COOKIE, ReplyFlag.DONE, 5, 'io', 0x10), `668e33ef 0001 8002 ${C} 00000010 00000005 0002 696f 0000000000000010`);
  golden('none', codec.encodeNoneChunk(COOKIE, ReplyFlag.DONE), `668e33ef 0001 0000 ${C} 00000000`);
  golden(
    'block status',
    codec.encodeBlockStatusChunk(COOKIE, 0, 1, [
      { length: 4096, flags: 3 },
      { length: 512, flags: 0 },
    ]),
    `668e33ef 0000 0005 ${C} 00000014 00000001 00001000 00000003 00000200 00000000`,
  );
});

test('codec structured reply decoders read the golden chunks', () => {
  assert.deepEqual(codec.decodeChunkHeader(hex(`668e33ef 0001 0005 ${C} 00000014`)), { flags: 1, type: ReplyType.BLOCK_STATUS, cookie: COOKIE, length: 20 });
  assert.throws(() => codec.decodeChunkHeader(hex(`668e33ee 0001 0005 ${C} 00000014`)), NbdError);
  const data = codec.decodeOffsetData(hex('0000000000000200 deadbeef'));
  assert.equal(data.offset, 0x200);
  assert.equal(data.data.toString('hex'), 'deadbeef');
  assert.throws(() => codec.decodeOffsetData(hex('0000000000000200')), NbdError);
  assert.deepEqual(codec.decodeOffsetHole(hex('0000000000000200 00001000')), { offset: 0x200, length: 0x1000 });
  assert.deepEqual(codec.decodeErrorChunk(ReplyType.ERROR, hex('00000005 0002 696f')), { errno: 5, message: 'io' });
  assert.deepEqual(codec.decodeErrorChunk(ReplyType.ERROR_OFFSET, hex('00000005 0002 696f 0000000000000010')), { errno: 5, message: 'io', offset: 16 });
  assert.throws(() => codec.decodeErrorChunk(ReplyType.ERROR, hex('00000005 0003 696f')), NbdError);
  assert.deepEqual(codec.decodeBlockStatus(hex('00000001 00001000 00000003 00000200 00000000')), {
    contextId: 1,
    extents: [
      { length: 4096, flags: 3 },
      { length: 512, flags: 0 },
    ],
  });
  assert.throws(() => codec.decodeBlockStatus(hex('00000001 00001000')), NbdError);
  assert.throws(() => codec.decodeBlockStatus(hex('00000001')), NbdError);
});

test('codec error messages are cut to the protocol string limit on a character boundary', () => {
  const long = '€'.repeat(2000); // 6000 bytes of three-byte characters; 4096 is not a multiple of 3
  const chunk = codec.encodeErrorChunk(COOKIE, ReplyFlag.DONE, 5, long);
  const decoded = codec.decodeErrorChunk(ReplyType.ERROR, chunk.subarray(20));
  assert.equal(decoded.message, '€'.repeat(1365));
  assert.equal(Buffer.byteLength(decoded.message), 4095);
  const reply = codec.encodeOptionError(Option.GO, OptionReply.ERR_POLICY, 'x'.repeat(5000));
  assert.equal(reply.readUInt32BE(16), 4096);
});
