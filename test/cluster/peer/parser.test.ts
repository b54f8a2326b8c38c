/**
 * The frame parser yields the same frames however the stream is split (at every single boundary,
 * into single bytes, into seeded random pieces), and garbage makes it throw a CLUSTER_PROTOCOL
 * error, never anything else and never a frame that was not sent.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClusterError, ClusterErrorCode } from '../../../src/cluster/errors.ts';
import { encodeBody, encodeFrame } from '../../../src/cluster/peer/codec.ts';
import { FrameParser } from '../../../src/cluster/peer/parser.ts';
import { Flag, MessageType } from '../../../src/cluster/peer/spec.ts';
import { Rng, seededBytes, testSeed } from '../../helpers/index.ts';

function stream(): Buffer {
  const data = seededBytes(1, 'payload', 3000);
  return Buffer.concat([
    ...encodeFrame(MessageType.PING, 0, 1n, encodeBody({ hlc: 77n })),
    ...encodeFrame(MessageType.PING, Flag.RESPONSE, 1n, encodeBody(undefined)),
    ...encodeFrame(MessageType.OP, 0, 2n, encodeBody({ disk: 'vm1', epoch: 3, rev: 10, hlc: 5n, id: [3, 1], kind: 'write', offset: 0, fua: false }, data)),
    ...encodeFrame(MessageType.IO, Flag.RESPONSE, 0xffffffffffffffffn, encodeBody({}, data.subarray(0, 17))),
    ...encodeFrame(0x7777, 0, 3n, encodeBody({ anything: [1, 2, 3] })),
  ]);
}

function parse(pieces: Buffer[]): unknown[] {
  const parser = new FrameParser();
  const out: unknown[] = [];
  for (const piece of pieces) {
    parser.push(piece);
    for (let f = parser.next(); f !== null; f = parser.next()) out.push({ ...f.header, body: f.body.toString('hex') });
  }
  assert.equal(parser.bufferedBytes, 0, 'bytes left over');
  return out;
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, buf.length]) {
    pieces.push(buf.subarray(from, cut));
    from = cut;
  }
  return pieces;
}

test('frame parser yields the same frames split at every byte boundary', () => {
  const all = stream();
  const whole = parse([all]);
  assert.equal(whole.length, 5);
  for (let cut = 0; cut <= all.length; cut++) assert.deepEqual(parse(splitAt(all, [cut])), whole, `split at ${cut}`);
  assert.deepEqual(parse([...all].map((b) => Buffer.from([b]))), whole, 'single bytes');
});

test('frame parser yields the same frames split at seeded random points', (t) => {
  const rng = new Rng(testSeed(t));
  const all = stream();
  const whole = parse([all]);
  for (let round = 0; round < 200; round++) {
    const cuts = Array.from({ length: rng.range(1, 20) }, () => rng.int(all.length + 1)).sort((a, b) => a - b);
    assert.deepEqual(parse(splitAt(all, cuts)), whole, `cuts ${cuts.join(',')}`);
  }
});

test('frame parser meets garbage with a protocol error, never a crash', (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const valid = stream();
  for (let round = 0; round < 500; round++) {
    let input: Buffer;
    if (round % 2 === 0) {
      input = seededBytes(seed, `garbage ${round}`, rng.range(1, 4096));
    } else {
      // A valid stream with a few bytes flipped: a header, body or CRC going bad.
      input = Buffer.from(valid);
      for (let i = rng.range(1, 3); i > 0; i--) input[rng.int(input.length)] ^= 1 << rng.int(8);
    }
    const parser = new FrameParser();
    parser.push(input);
    try {
      while (parser.next() !== null);
    } catch (err) {
      assert.ok(err instanceof ClusterError && err.code === ClusterErrorCode.PROTOCOL, `round ${round}: ${String(err)}`);
    }
  }
});

test('frame parser refuses a body over its limit from the header alone', () => {
  const parser = new FrameParser();
  parser.bodyBytesMax = 16;
  const frame = encodeFrame(MessageType.PING, 0, 1n, encodeBody({ padding: 'x'.repeat(32) }));
  parser.push(frame[0].subarray(0, 32));
  assert.throws(() => parser.next(), /Frame body of 45 bytes exceeds 16 here/);
});

test('frame parser checks the body CRC', () => {
  const frame = Buffer.concat(encodeFrame(MessageType.PING, 0, 1n, encodeBody({ hlc: 1n })));
  frame[frame.length - 1] ^= 1;
  const parser = new FrameParser();
  parser.push(frame);
  assert.throws(() => parser.next(), /Bad frame body CRC/);
});

/**
 * Feeds `all` the way a connection's socket would: each read lands in the parser's direct target
 * when it offers one, else in one shared buffer that is overwritten by the next read (the parser
 * must keep nothing of it past retain()). Returns the frames, each checked before the next read.
 */
function parseAsSocket(all: Buffer, readSizes: () => number, pool?: { take(n: number): Buffer }): { frames: unknown[]; direct: number; pooled: number } {
  const parser = new FrameParser({ pool });
  const shared = Buffer.alloc(64 * 1024);
  const frames: unknown[] = [];
  let at = 0;
  let direct = 0;
  let pooled = 0;
  while (at < all.length) {
    const target = parser.directTarget() ?? shared;
    const n = Math.min(readSizes(), target.length, all.length - at);
    all.copy(target, 0, at, at + n);
    at += n;
    if (target !== shared) direct += n;
    parser.push(target.subarray(0, n));
    for (let f = parser.next(); f !== null; f = parser.next()) {
      if (f.pooled !== null) pooled++;
      frames.push({ ...f.header, body: f.body.toString('hex') });
    }
    parser.retain();
    shared.fill(0xee);
  }
  assert.equal(parser.bufferedBytes, 0, 'bytes left over');
  return { frames, direct, pooled };
}

test('frame parser reads large bodies straight into their buffer, pooled, and keeps nothing of a reused read buffer', (t) => {
  const rng = new Rng(testSeed(t));
  const big = seededBytes(2, 'big', 300 * 1024);
  const all = Buffer.concat([
    ...encodeFrame(MessageType.OP, 0, 1n, encodeBody({ disk: 'vm1', epoch: 1, rev: 1, hlc: 1n, id: [1, 1], kind: 'write', offset: 0, fua: false }, big)),
    ...encodeFrame(MessageType.PING, 0, 2n, encodeBody({ hlc: 2n })),
    ...encodeFrame(MessageType.READ_SNAP, Flag.RESPONSE, 3n, encodeBody({}, big.subarray(0, 100_000))),
    ...encodeFrame(MessageType.OP, 0, 4n, encodeBody({ disk: 'vm1', epoch: 1, rev: 1, hlc: 1n, id: [1, 2], kind: 'write', offset: 0, fua: false }, big.subarray(7, 4096 + 7))),
  ]);
  const whole = parse([all]);
  const taken: number[] = [];
  const pool = { take: (n: number) => (taken.push(n), Buffer.alloc(2 ** Math.ceil(Math.log2(n)))) };
  for (let round = 0; round < 50; round++) {
    const sizes = round === 0 ? () => 65536 : () => rng.range(1, 70_000);
    const got = parseAsSocket(all, sizes, pool);
    assert.deepEqual(got.frames, whole, `round ${round}`);
    assert.ok(got.direct > 200 * 1024, `round ${round}: only ${got.direct} bytes read directly`);
    // The two OP requests (300 KiB and 4 KiB bodies) and the 100 KB response are pooled; the PING is not.
    assert.equal(got.pooled, 3, `round ${round}`);
  }
});
