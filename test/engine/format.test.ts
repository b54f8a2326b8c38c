import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeRecordHeader, decodeRecordHeader, encodeSegmentHeader, decodeSegmentHeader, encodeKey, decodeKey, encodeValue, decodeValue,
  RecordType, EntryKind, Format,
} from '../../src/engine/format.ts';

test('record header encodes to its golden bytes and back', () => {
  const h = { type: RecordType.WRITE, seq: 0x0102030405, branch: 7, blockStart: 0x1_0000_0001, blockCount: 2, maskFirst: 0xf0, maskLast: 0x0f, payloadBytes: 8192, payloadCrc: 0xdeadbeef };
  const b = encodeRecordHeader(h);
  assert.equal(
    b.toString('hex'),
    '43455254' + '01f00f00' + '0504030201000000' + '07000000' + '02000000' + '0100000001000000' + '00200000' + 'efbeadde' +
      '00'.repeat(20) + '12714e41',
  );
  assert.deepEqual(decodeRecordHeader(b), h);
});

test('record header golden vector decodes', () => {
  // Fixed bytes of a version-1 TRIM record header: seq 9, branch 1, blocks 16..48.
  const hex = '4345525403ffff000900000000000000010000002000000010000000000000000000000000000000000000000000000000000000000000000000000024627df5';
  const h = decodeRecordHeader(Buffer.from(hex, 'hex'));
  assert.deepEqual(h, { type: RecordType.TRIM, maskFirst: 0xff, maskLast: 0xff, seq: 9, branch: 1, blockCount: 32, blockStart: 16, payloadBytes: 0, payloadCrc: 0 });
  assert.equal(encodeRecordHeader(h!).toString('hex'), hex);
});

test('record header with any flipped byte is rejected', () => {
  const b = encodeRecordHeader({ type: RecordType.ZERO, seq: 5, branch: 1, blockStart: 3, blockCount: 4, maskFirst: 0xff, maskLast: 0xff, payloadBytes: 0, payloadCrc: 0 });
  for (let i = 0; i < b.length; i++) {
    const c = Buffer.from(b);
    c[i] ^= 0x40;
    assert.equal(decodeRecordHeader(c), null, `flip at byte ${i} detected`);
  }
  assert.equal(decodeRecordHeader(b.subarray(0, 63)), null);
});

test('record header rejects a WRITE whose payload does not match its block count', () => {
  const b = encodeRecordHeader({ type: RecordType.WRITE, seq: 5, branch: 1, blockStart: 3, blockCount: 2, maskFirst: 0xff, maskLast: 0xff, payloadBytes: 4096, payloadCrc: 0 });
  assert.equal(decodeRecordHeader(b), null);
});

test('segment header encodes to its golden bytes and back', () => {
  const b = encodeSegmentHeader(42, 1_700_000_000_000);
  assert.equal(b.length, Format.segmentHeaderBytes);
  assert.equal(b.subarray(0, 24).toString('hex'), '544e4d4745535354' + '0100' + '0000' + '2a000000' + '0068e5cf8b010000');
  assert.deepEqual(decodeSegmentHeader(b), { id: 42, version: 1 });
  const bad = Buffer.from(b);
  bad[13] ^= 1;
  assert.equal(decodeSegmentHeader(bad), null);
});

test('index keys sort blocks ascending and versions of a block newest first', () => {
  const k = (branch: number, block: number, seq: number) => encodeKey(branch, block, seq);
  assert.equal(k(1, 2, 3).toString('hex'), '00000001' + '000000000002' + 'fffffffffffc');
  const keys = [k(1, 5, 10), k(1, 5, 11), k(1, 4, 1), k(2, 0, 1), k(1, 2 ** 40, 1)];
  const sorted = [...keys].sort(Buffer.compare).map((x) => decodeKey(x));
  assert.deepEqual(sorted, [
    { branch: 1, block: 4, seq: 1 },
    { branch: 1, block: 5, seq: 11 },
    { branch: 1, block: 5, seq: 10 },
    { branch: 1, block: 2 ** 40, seq: 1 },
    { branch: 2, block: 0, seq: 1 },
  ]);
});

test('index values encode to their golden bytes and back', () => {
  const e = { seq: 9, kind: EntryKind.DATA, mask: 0x81, segment: 3, offset: 4160 };
  const v = encodeValue(e);
  assert.equal(v.toString('hex'), '0181' + '03000000' + '40100000');
  assert.deepEqual(decodeValue(9, v), e);
});
