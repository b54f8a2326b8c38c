/**
 * The transfer protocol in process: the header codec against a golden vector, the frame parser
 * split at every byte and fed garbage, the gate's rules with their sentences, the handshake's
 * proof, the receiver's journal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeBody, decodeHeader, encodeBody, encodeHeader, sealFrame } from '../../src/transfer/codec.ts';
import { checkChunk, checkData, checkFirst, nameRule, type DataContext } from '../../src/transfer/gate.ts';
import { chooseVersion, computeProof, proofInput } from '../../src/transfer/handshake.ts';
import { FrameParser } from '../../src/transfer/parser.ts';
import { decodeJournal, encodeRecord } from '../../src/transfer/partial.ts';
import { FrameType, Size } from '../../src/transfer/spec.ts';
import { Rng, testSeed } from '../helpers/index.ts';

test('header: golden vector, and every field round-trips', () => {
  const h = { type: FrameType.DATA, flags: 1, sentUs: 0x0102030405060708n, seq: 7, bodyBytes: 262_160, bodyCrc: 0xdeadbeef };
  const buf = encodeHeader(h);
  assert.equal(
    buf.toString('hex'),
    // magic TSXF, type 0x22, flags 1, send time, seq 7, body bytes, body CRC, header CRC (zlib's CRC-32 of the 28 before)
    '54535846' + '2200' + '0100' + '0807060504030201' + '07000000' + '10000400' + 'efbeadde' + '149b7918',
  );
  assert.equal(buf.subarray(0, 4).toString('ascii'), 'TSXF');
  assert.deepEqual(decodeHeader(buf), h);
});

test('header: a bad magic, CRC, flag or size is refused, naming it', () => {
  const good = encodeHeader({ type: 1, flags: 0, sentUs: 1n, seq: 1, bodyBytes: 10, bodyCrc: 0 });
  const bad = (mutate: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    mutate(b);
    return b;
  };
  assert.throws(() => decodeHeader(bad((b) => b.writeUInt32LE(0x52505354, 0))), /Bad frame magic 0x52505354: not a transfer peer/);
  assert.throws(() => decodeHeader(bad((b) => (b[9] ^= 1))), /Bad frame header CRC/);
  assert.throws(() => decodeHeader(encodeHeader({ type: 1, flags: 4, sentUs: 1n, seq: 1, bodyBytes: 0, bodyCrc: 0 })), /Unknown frame flags 0x4/);
  assert.throws(() => decodeHeader(encodeHeader({ type: 1, flags: 0, sentUs: 1n, seq: 1, bodyBytes: Size.BODY_BYTES_MAX + 1, bodyCrc: 0 })), /exceeds/);
});

function frames(rng: Rng): { bytes: Buffer; expected: { type: number; meta: unknown; payload: string | null }[] } {
  const parts: Buffer[] = [];
  const expected: { type: number; meta: unknown; payload: string | null }[] = [];
  for (let seq = 1; seq <= 6; seq++) {
    const withPayload = rng.int(2) === 1;
    const meta = { chunk: rng.int(100), offset: rng.int(1 << 30) };
    const payload = withPayload ? Buffer.from(Array.from({ length: rng.range(1, 300) }, () => rng.int(256))) : null;
    parts.push(...sealFrame(FrameType.DATA, seq, BigInt(seq * 1000), encodeBody(meta, payload)));
    expected.push({ type: FrameType.DATA, meta, payload: payload?.toString('hex') ?? null });
  }
  return { bytes: Buffer.concat(parts), expected };
}

test('parser: the same frames whatever the split, at every byte', (t) => {
  const rng = new Rng(testSeed(t));
  const { bytes, expected } = frames(rng);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const parser = new FrameParser();
    const got: { type: number; meta: unknown; payload: string | null }[] = [];
    for (const piece of [bytes.subarray(0, cut), bytes.subarray(cut)]) {
      parser.push(Buffer.from(piece));
      for (let f = parser.next(); f !== null; f = parser.next()) {
        const body = decodeBody(f.header.flags, f.body);
        got.push({ type: f.header.type, meta: body.meta, payload: body.payload?.toString('hex') ?? null });
      }
    }
    assert.deepEqual(got, expected, `split at ${cut}`);
  }
});

test('parser: a frame out of sequence, a flipped body byte, garbage: each a protocol error', (t) => {
  const rng = new Rng(testSeed(t));
  const { bytes } = frames(rng);
  const skip = new FrameParser();
  skip.push(Buffer.concat(sealFrame(FrameType.PRIME, 2, 1n, encodeBody({}))));
  assert.throws(() => skip.next(), /Frame sequence 2, expected 1/);
  const flipped = Buffer.from(bytes);
  flipped[40] ^= 0xff;
  const p = new FrameParser();
  p.push(flipped);
  assert.throws(() => {
    while (p.next() !== null);
  }, /CRC/);
  for (let i = 0; i < 200; i++) {
    const garbage = Buffer.from(Array.from({ length: rng.range(32, 200) }, () => rng.int(256)));
    const g = new FrameParser();
    g.push(garbage);
    assert.throws(() => g.next(), { code: 'TRANSFER_PROTOCOL' });
  }
});

const ctx = (open: DataContext['open'] = null): DataContext => ({ sizeBytes: 10 * 1024 * 1024, chunkBytes: 4 * 1024 * 1024, chunks: 3, open });
const id = 'a'.repeat(32);
const sha = Buffer.alloc(32, 7);

test('gate: OPEN and JOIN, each rule with its sentence', () => {
  const open = { transfer: id, name: 'vm.img', sizeBytes: 10, chunkBytes: 65536, class: 'bulk', connections: 4 };
  const ok = checkFirst(FrameType.OPEN, open, null);
  assert.ok('open' in ok && ok.open.chunks === 1 && ok.open.dscp === undefined);
  assert.deepEqual(checkFirst(FrameType.JOIN, { transfer: id, class: 'interactive', dscp: 46 }, null), { join: { transfer: id, className: 'interactive', dscp: 46 } });
  const rule = (type: number, meta: Record<string, unknown>) => {
    const r = checkFirst(type, meta, null);
    return 'rule' in r ? r.rule : 'accepted';
  };
  assert.equal(rule(FrameType.DATA, open), 'Expected OPEN or JOIN after the handshake, got DATA');
  assert.equal(rule(FrameType.OPEN, { ...open, transfer: 'xyz' }), 'OPEN: transfer must be 32 hex characters');
  assert.equal(rule(FrameType.OPEN, { ...open, class: 'gold' }), 'OPEN: class must be one of bulk, replication, interactive, got gold');
  assert.equal(rule(FrameType.OPEN, { ...open, name: '../etc/passwd' }), 'OPEN: the name "../etc/passwd" holds a \'/\' or a NUL: a file name, not a path, is sent');
  assert.equal(rule(FrameType.OPEN, { ...open, chunkBytes: 1000 }), 'OPEN: chunkBytes 1000 is not a multiple of 4096 from 65536 to 16777216');
  assert.equal(rule(FrameType.OPEN, { ...open, sizeBytes: 2 ** 40, chunkBytes: 65536 }), 'OPEN: 16777216 chunks of 65536 bytes exceed 8388608');
  assert.equal(rule(FrameType.OPEN, { ...open, connections: 17 }), 'OPEN: connections 17 is outside 1..16');
  assert.equal(rule(FrameType.JOIN, { transfer: id, class: 'bulk', dscp: 64 }), 'JOIN: dscp must be 0 to 63, got 64');
  assert.equal(nameRule('..'), 'the name ".." is not a file\'s');
  assert.equal(nameRule('.tessera-transfer'), "names starting with .tessera-transfer are the receiver's own");
  assert.equal(nameRule('x'.repeat(256)), 'the name is longer than 255 bytes');
  assert.equal(nameRule('disk 1.qcow2'), null);
});

test('gate: CHUNK and DATA, each rule with its sentence', () => {
  const rule = (r: object) => ('rule' in r ? (r as { rule: string }).rule : 'accepted');
  assert.deepEqual(checkChunk(ctx(), { chunk: 2, offset: 8388608, length: 2097152, sha256: sha }), { chunk: 2, offset: 8388608, length: 2097152, sha256: sha });
  assert.equal(rule(checkChunk(ctx(), { chunk: 3, offset: 0, length: 1, sha256: sha })), 'CHUNK 3 is not a chunk of this file (0..2)');
  assert.equal(rule(checkChunk(ctx(), { chunk: 2, offset: 8388608, length: 4194304, sha256: sha })), 'CHUNK 2 at offset 8388608 length 4194304, expected offset 8388608 length 2097152');
  assert.equal(rule(checkChunk(ctx(), { chunk: 1, offset: 4194304, length: 4194304, sha256: Buffer.alloc(3) })), 'CHUNK 1: sha256 must be 32 bytes');
  const open = { chunk: 1, next: 4194304 + 262144, end: 8388608 };
  assert.equal(rule(checkChunk(ctx(open), { chunk: 2, offset: 8388608, length: 2097152, sha256: sha })), 'CHUNK 2 while chunk 1 is still open on this connection');
  const data = Buffer.alloc(262144);
  assert.deepEqual(checkData(ctx(open), { chunk: 1, offset: 4194304 + 262144 }, data), { chunk: 1, offset: 4194304 + 262144 });
  assert.equal(rule(checkData(ctx(), { chunk: 1, offset: 0 }, data)), 'DATA of chunk 1 without its CHUNK');
  assert.equal(rule(checkData(ctx(open), { chunk: 0, offset: 0 }, data)), 'DATA of chunk 0 while chunk 1 is open');
  assert.equal(rule(checkData(ctx(open), { chunk: 1, offset: 4194304 }, data)), 'DATA at offset 4194304, expected 4456448: a chunk\'s bytes come in order');
  assert.equal(rule(checkData(ctx({ ...open, next: 8388608 - 4096 }), { chunk: 1, offset: 8388608 - 4096 }, data)), 'DATA past its chunk: offset 8384512 + 262144 > 8388608');
  assert.equal(rule(checkData(ctx(open), { chunk: 1, offset: 4456448 }, null)), 'DATA without bytes');
});

test('handshake: proofs differ by role, nonce and secret; versions chosen from both ranges', () => {
  const cn = Buffer.alloc(32, 1);
  const sn = Buffer.alloc(32, 2);
  const secret = Buffer.from('s3cret');
  assert.equal(proofInput('server', cn, sn, 1).toString('hex'), Buffer.from('TSXF proof server\0').toString('hex') + cn.toString('hex') + sn.toString('hex') + '0100');
  const server = computeProof(secret, 'server', cn, sn, 1);
  assert.notDeepEqual(server, computeProof(secret, 'client', cn, sn, 1));
  assert.notDeepEqual(server, computeProof(Buffer.from('other'), 'server', cn, sn, 1));
  assert.notDeepEqual(server, computeProof(secret, 'server', sn, cn, 1));
  assert.equal(chooseVersion([1, 1], [1, 3]), 1);
  assert.equal(chooseVersion([1, 1], [2, 3]), null);
});

test('journal: records round-trip; a torn or damaged tail ends it', () => {
  const recs = [encodeRecord(0, sha), encodeRecord(2, Buffer.alloc(32, 9)), encodeRecord(1, sha)];
  const all = Buffer.concat(recs);
  assert.deepEqual([...decodeJournal(all, 3).keys()], [0, 2, 1]);
  assert.deepEqual([...decodeJournal(all.subarray(0, all.length - 5), 3).keys()], [0, 2], 'a torn last record is dropped');
  const damaged = Buffer.from(all);
  damaged[45] ^= 1;
  assert.deepEqual([...decodeJournal(damaged, 3).keys()], [0], 'a damaged record ends the journal');
  assert.deepEqual([...decodeJournal(all, 2).keys()], [0], 'a chunk past the file ends it');
});
