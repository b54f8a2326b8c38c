/**
 * Golden vectors of the peer protocol's codecs. The hex strings are written from the layout in
 * docs/cluster.md and the msgpack specification, field by field, and their CRCs and HMACs
 * computed outside this code (Python's zlib and hmac), not produced by the code under test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { decodeBody, decodeHeader, encodeBody, encodeErrorFrame, encodeFrame, encodeHeader, errorFromBody } from '../../../src/cluster/peer/codec.ts';
import { chooseVersion, computeProof, proofInput } from '../../../src/cluster/peer/handshake.ts';
import { Flag, MessageType, Size } from '../../../src/cluster/peer/spec.ts';
import { ClusterError, ClusterErrorCode } from '../../../src/cluster/errors.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** OP response, id 0x0102030405060708, 16 body bytes of CRC 0xdeadbeef. */
const HEADER_OP = '54535052 0101 0100 0807060504030201 10000000 efbeadde 00000000 ce6e08ce';
/** PING request id 1, empty body. */
const HEADER_PING = '54535052 1000 0000 0100000000000000 00000000 00000000 00000000 64da1cb8';

test('header encodes to the documented layout', () => {
  const op = encodeHeader({ type: MessageType.OP, flags: Flag.RESPONSE, requestId: 0x0102030405060708n, bodyBytes: 16, bodyCrc: 0xdeadbeef });
  assert.equal(op.toString('hex'), hex(HEADER_OP).toString('hex'));
  const ping = encodeHeader({ type: MessageType.PING, flags: 0, requestId: 1n, bodyBytes: 0, bodyCrc: 0 });
  assert.equal(ping.toString('hex'), hex(HEADER_PING).toString('hex'));
});

test('header decodes what the layout says and round trips', () => {
  assert.deepEqual(decodeHeader(hex(HEADER_OP)), { type: 0x0101, flags: 1, requestId: 0x0102030405060708n, bodyBytes: 16, bodyCrc: 0xdeadbeef });
  for (const h of [
    { type: 0xffff, flags: Flag.RESPONSE | Flag.ERROR | Flag.PAYLOAD, requestId: 2n ** 64n - 1n, bodyBytes: Size.BODY_BYTES_MAX, bodyCrc: 0xffffffff },
    { type: 0, flags: 0, requestId: 0n, bodyBytes: 0, bodyCrc: 0 },
  ]) {
    assert.deepEqual(decodeHeader(encodeHeader(h)), h);
  }
});

test('header decoding refuses what cannot be trusted, naming why', () => {
  const good = hex(HEADER_OP);
  const with_ = (at: number, bytes: string): Buffer => {
    const b = Buffer.from(good);
    hex(bytes).copy(b, at);
    return b;
  };
  /** `b` with its header CRC made right again (zlib's CRC-32, not the code under test). */
  const resealed = (b: Buffer): Buffer => {
    b.writeUInt32LE(zlibCrc32(b.subarray(0, 28)), 28);
    return b;
  };
  assert.throws(() => decodeHeader(good.subarray(0, 31)), /Frame header of 31 bytes/);
  assert.throws(() => decodeHeader(with_(0, '54535053')), /Bad frame magic 0x53505354/);
  assert.throws(() => decodeHeader(with_(28, '00000000')), /Bad frame header CRC/);
  assert.throws(() => decodeHeader(with_(8, '09')), /Bad frame header CRC/);
  assert.throws(() => decodeHeader(resealed(with_(24, '01000000'))), /reserved field is not 0/);
  const flags = encodeHeader({ type: 1, flags: 0x8, requestId: 1n, bodyBytes: 0, bodyCrc: 0 });
  assert.throws(() => decodeHeader(flags), (err: unknown) => err instanceof ClusterError && err.code === ClusterErrorCode.PROTOCOL && /Unknown frame flags 0x8/.test(err.message));
  const big = encodeHeader({ type: 1, flags: 0, requestId: 1n, bodyBytes: Size.BODY_BYTES_MAX + 1, bodyCrc: 0 });
  assert.throws(() => decodeHeader(big), /Frame body of 8392705 bytes exceeds 8392704/);
});

test('a PING body is a msgpack map with the HLC as int64', () => {
  const frame = Buffer.concat(encodeFrame(MessageType.PING, 0, 1n, encodeBody({ hlc: 0x0123456789abcdefn })));
  const body = 'de0001 a3686c63 d30123456789abcdef';
  const headCrc = hex('54535052 1000 0000 0100000000000000 10000000 75a96345 00000000');
  assert.equal(frame.subarray(0, 28).toString('hex'), headCrc.toString('hex'));
  assert.equal(frame.subarray(32).toString('hex'), hex(body).toString('hex'));
  assert.deepEqual(decodeBody(0, hex(body)), { meta: { hlc: 0x0123456789abcdefn }, payload: null, malformed: null });
});

test('an ACK body and a body with data match the layout', () => {
  const ack = encodeBody({ disk: 'vm1', epoch: 7, id: [7, 42] });
  // map16 of 3: "disk" "vm1", "epoch" 7, "id" [7, 42]
  const ackHex = 'de0003 a46469736b a3766d31 a565706f6368 07 a26964 92 07 2a';
  assert.equal(ack.head.subarray(32).toString('hex'), hex(ackHex).toString('hex'));
  assert.equal(ack.flags, 0);
  // With data: u32 meta length 13, the map {offset: 4096} (uint16), then the data raw, not copied.
  const data = Buffer.from('abcd');
  const withData = encodeBody({ offset: 4096 }, data);
  assert.equal(withData.flags, Flag.PAYLOAD);
  assert.equal(withData.bodyBytes, 4 + 13 + 4);
  assert.equal(withData.head.subarray(32).toString('hex'), hex('0d000000 de0001 a66f6666736574 cd1000').toString('hex'));
  const frame = encodeFrame(MessageType.OP, 0, 9n, withData);
  assert.equal(frame[1], data, 'the payload is written as given');
  const header = decodeHeader(frame[0].subarray(0, 32));
  assert.equal(header.flags, Flag.PAYLOAD);
  const decoded = decodeBody(header.flags, Buffer.concat([frame[0].subarray(32), frame[1]]));
  assert.deepEqual(decoded.meta, { offset: 4096 });
  assert.equal(decoded.payload!.toString(), 'abcd');
  // A canonical fixmap decodes the same as msgpackr's map16.
  assert.deepEqual(decodeBody(0, hex('83 a46469736b a3766d31 a565706f6368 07 a26964 92 07 2a')).meta, { disk: 'vm1', epoch: 7, id: [7, 42] });
});

test('malformed bodies are described, never thrown', () => {
  assert.match(decodeBody(0, hex('81a161')).malformed!, /not msgpack/);
  assert.match(decodeBody(0, hex('0102')).malformed!, /not msgpack/);
  assert.equal(decodeBody(0, hex('920102')).malformed, 'not a msgpack map');
  assert.equal(decodeBody(0, hex('c0')).malformed, 'not a msgpack map');
  assert.match(decodeBody(Flag.PAYLOAD, hex('0100')).malformed!, /no room for its meta length/);
  assert.match(decodeBody(Flag.PAYLOAD, hex('05000000 80')).malformed!, /meta length 5 exceeds the body's 1 bytes/);
  assert.deepEqual(decodeBody(0, Buffer.alloc(0)), { meta: {}, payload: null, malformed: null });
});

test('sizes over the limits are refused when encoding', () => {
  assert.throws(() => encodeBody({ x: 'a'.repeat(Size.META_BYTES_MAX) }, Buffer.alloc(1)), (e: unknown) => e instanceof ClusterError && e.code === ClusterErrorCode.LIMIT);
  assert.throws(() => encodeBody({}, Buffer.alloc(Size.PAYLOAD_BYTES_MAX + 1)), /Payload of 8388609 bytes exceeds 8388608/);
  assert.equal(encodeBody({}, Buffer.alloc(Size.PAYLOAD_BYTES_MAX)).bodyBytes, 4 + 3 + Size.PAYLOAD_BYTES_MAX);
});

test('error frames carry code, message and current', () => {
  const frame = Buffer.concat(encodeErrorFrame(MessageType.OP, 5n, new ClusterError(ClusterErrorCode.STALE_EPOCH, 'old', { current: 9 }), true));
  const header = decodeHeader(frame.subarray(0, 32));
  assert.equal(header.flags, Flag.RESPONSE | Flag.ERROR);
  const err = errorFromBody(decodeBody(header.flags, frame.subarray(32)));
  assert.equal(err.code, ClusterErrorCode.STALE_EPOCH);
  assert.equal(err.message, 'old');
  assert.equal(err.current, 9);
  assert.equal(errorFromBody(decodeBody(0, encodeBody({ code: 'NOPE', message: 'x' }).head.subarray(32))).code, ClusterErrorCode.PROTOCOL);
});

test('proofs sign the documented transcript', () => {
  const t = { clientNonce: Buffer.from(Array.from({ length: 32 }, (_, i) => i)), serverNonce: Buffer.from(Array.from({ length: 32 }, (_, i) => 32 + i)), clientNode: 'n1', serverNode: 'n2', cluster: 'c1', version: 2 };
  const input =
    '545350522070726f6f662073657276657200' + // "TSPR proof server\0"
    '2000' + '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f' +
    '2000' + '202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f' +
    '0200 6e31' + '0200 6e32' + '0200 6331' + '0200';
  assert.equal(proofInput('server', t).toString('hex'), hex(input).toString('hex'));
  const secret = Buffer.alloc(32, 'k');
  assert.equal(computeProof(secret, 'server', t).toString('hex'), '6865ee8e8e083f8d612b8938a11da5607fc15f426b056a4d3dcab9f24432c6a3');
  assert.notDeepEqual(computeProof(secret, 'client', t), computeProof(secret, 'server', t));
});

test('the highest common version is chosen', () => {
  assert.equal(chooseVersion([1, 2], [1, 2]), 2);
  assert.equal(chooseVersion([1, 2], [1, 1]), 1);
  assert.equal(chooseVersion([1, 1], [1, 5]), 1);
  assert.equal(chooseVersion([1, 2], [3, 4]), null);
  assert.equal(chooseVersion([2, 2], [1, 1]), null);
});
