/**
 * The handshake and request parsers yield the same messages however the byte stream is split:
 * at every single boundary, into single bytes, and into seeded random pieces.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ByteQueue } from '../../src/util/byte-queue.ts';
import {
  encodeClientFlags,
  encodeInfoRequestData,
  encodeMetaContextRequestData,
  encodeOptionRequest,
  encodeRequestHeader,
} from '../../src/nbd/codec.ts';
import { NbdError } from '../../src/nbd/errors.ts';
import { HandshakeParser, RequestParser } from '../../src/nbd/parser.ts';
import { ClientFlag, Command, CommandFlag, Info, Option } from '../../src/nbd/protocol.ts';
import { Rng, testSeed } from '../helpers/index.ts';

const REQUEST_BYTES_MAX = 4096;

function handshakeStream(): Buffer {
  return Buffer.concat([
    encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
    encodeOptionRequest(Option.STRUCTURED_REPLY),
    encodeOptionRequest(Option.SET_META_CONTEXT, encodeMetaContextRequestData('disk', ['base:allocation', 'tessera:changed-since:s1'])),
    encodeOptionRequest(Option.LIST),
    encodeOptionRequest(Option.GO, encodeInfoRequestData('disk', [Info.BLOCK_SIZE, Info.NAME])),
  ]);
}

function requestStream(): Buffer {
  const payload = Buffer.alloc(1000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  return Buffer.concat([
    encodeRequestHeader({ flags: 0, type: Command.READ, cookie: 1n, offset: 0, length: 4096 }),
    encodeRequestHeader({ flags: CommandFlag.FUA, type: Command.WRITE, cookie: 2n, offset: 512, length: payload.length }),
    payload,
    encodeRequestHeader({ flags: 0, type: Command.FLUSH, cookie: 3n, offset: 0, length: 0 }),
    // Over requestBytesMax: its payload is dropped as it streams, keeping the stream in sync.
    encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 4n, offset: 0, length: REQUEST_BYTES_MAX + 904 }),
    Buffer.alloc(REQUEST_BYTES_MAX + 904, 0xee),
    encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 5n, offset: 0, length: 0 }),
    encodeRequestHeader({ flags: CommandFlag.NO_HOLE, type: Command.WRITE_ZEROES, cookie: 6n, offset: 2 ** 40, length: 65536 }),
    encodeRequestHeader({ flags: 0, type: 0xbeef, cookie: 7n, offset: 1, length: 2 }),
    encodeRequestHeader({ flags: 0, type: Command.DISC, cookie: 8n, offset: 0, length: 0 }),
  ]);
}

/** Feeds pieces one by one, draining the parser after each; returns everything it yielded. */
function parseHandshake(pieces: Buffer[]): unknown[] {
  const parser = new HandshakeParser({ optionBytesMax: 64 * 1024 });
  const out: unknown[] = [];
  for (const piece of pieces) {
    parser.push(piece);
    for (let event = parser.next(); event !== null; event = parser.next()) {
      out.push(event.kind === 'option' ? { ...event, data: event.data.toString('hex') } : event);
    }
  }
  assert.equal(parser.queue.length, 0, 'bytes left over');
  return out;
}

function parseRequests(pieces: Buffer[]): unknown[] {
  const parser = new RequestParser({ requestBytesMax: REQUEST_BYTES_MAX });
  const out: unknown[] = [];
  for (const piece of pieces) {
    parser.push(piece);
    for (let r = parser.next(); r !== null; r = parser.next()) out.push({ ...r.header, payload: r.payload?.toString('hex') ?? null });
  }
  assert.equal(parser.queue.length, 0, 'bytes left over');
  assert.equal(parser.midRequest, false);
  return out;
}

function splitAt(stream: Buffer, cuts: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    pieces.push(stream.subarray(from, cut));
    from = cut;
  }
  return pieces;
}

function randomCuts(rng: Rng, length: number): number[] {
  const count = rng.range(1, 40);
  const cuts = Array.from({ length: count }, () => rng.int(length + 1));
  return cuts.sort((a, b) => a - b);
}

for (const [name, makeStream, parse] of [
  ['handshake', handshakeStream, parseHandshake],
  ['request', requestStream, parseRequests],
] as const) {
  test(`${name} parser yields the same messages when the stream is split at every byte boundary`, () => {
    const stream = makeStream();
    const expected = parse([stream]);
    assert.ok(expected.length >= 5);
    for (let cut = 0; cut <= stream.length; cut++) {
      assert.deepEqual(parse(splitAt(stream, [cut])), expected, `split at byte ${cut}`);
    }
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(parse(bytes), expected, 'one byte at a time');
  });

  test(`${name} parser yields the same messages for seeded random splits`, (t) => {
    const seed = testSeed(t);
    const rng = new Rng(seed);
    const stream = makeStream();
    const expected = parse([stream]);
    for (let round = 0; round < 300; round++) {
      const cuts = randomCuts(rng, stream.length);
      assert.deepEqual(parse(splitAt(stream, cuts)), expected, `seed ${seed} round ${round} cuts ${cuts.join(',')}`);
    }
  });
}

test('request parser reports what it decoded, payloads included', () => {
  const results = parseRequests([requestStream()]) as { type: number; cookie: bigint; payload: string | null; offset: number }[];
  assert.deepEqual(
    results.map((r) => [r.cookie, r.type, r.payload === null ? null : r.payload.length / 2]),
    [
      [1n, Command.READ, null],
      [2n, Command.WRITE, 1000],
      [3n, Command.FLUSH, null],
      [4n, Command.WRITE, null],
      [5n, Command.WRITE, null],
      [6n, Command.WRITE_ZEROES, null],
      [7n, 0xbeef, null],
      [8n, Command.DISC, null],
    ],
  );
  assert.equal(results[5].offset, 2 ** 40);
});

test('request parser throws NbdError on a wrong magic, handshake parser too', () => {
  const parser = new RequestParser({ requestBytesMax: REQUEST_BYTES_MAX });
  parser.push(Buffer.alloc(28, 0x41));
  assert.throws(() => parser.next(), NbdError);
  const hs = new HandshakeParser({ optionBytesMax: 1024 });
  hs.push(Buffer.concat([encodeClientFlags(1), Buffer.alloc(16, 0x41)]));
  assert.equal(hs.next()?.kind, 'flags');
  assert.throws(() => hs.next(), NbdError);
});

test('handshake parser reports an oversize option without waiting for its data', () => {
  const hs = new HandshakeParser({ optionBytesMax: 1024 });
  const header = encodeOptionRequest(Option.GO, Buffer.alloc(0));
  header.writeUInt32BE(1025, 12);
  hs.push(Buffer.concat([encodeClientFlags(1), header]));
  hs.next();
  assert.deepEqual(hs.next(), { kind: 'oversize', option: Option.GO, length: 1025 });
});

test('byte queue takes views inside a chunk and copies across chunks', () => {
  const q = new ByteQueue();
  const a = Buffer.from('abcdef');
  q.push(a);
  q.push(Buffer.from('ghij'));
  const view = q.take(3);
  assert.equal(view.buffer, a.buffer, 'no copy within one chunk');
  assert.equal(q.take(5).toString(), 'defgh');
  assert.equal(q.skip(10), 2);
  assert.equal(q.length, 0);
  for (let i = 0; i < 200; i++) q.push(Buffer.from([i]));
  assert.equal(q.skip(150), 150);
  assert.deepEqual([...Buffer.concat(q.drain())], Array.from({ length: 50 }, (_, i) => i + 150));
});

test('request parser holds memory for a write payload only as its bytes arrive: nothing for a header alone, then at most twice what came plus 256 KiB', () => {
  const held = new Set<Buffer>();
  const heldBytes = () => [...held].reduce((n, b) => n + b.length, 0);
  const parser = new RequestParser({
    requestBytesMax: 32 * 1024 * 1024,
    alloc: (n) => {
      const b = Buffer.alloc(n);
      held.add(b);
      return b;
    },
    free: (b) => {
      assert.ok(held.delete(b), 'only a buffer the parser was given goes back');
    },
  });
  const length = 32 * 1024 * 1024;
  parser.push(encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 9n, offset: 0, length }));
  assert.equal(parser.next(), null);
  assert.equal(heldBytes(), 0, 'a header alone makes the parser take nothing');
  const payload = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4096) payload.writeUInt32LE(i, i);
  let sent = 0;
  let result = null;
  for (const piece of [1, 1000, 300_000, 5_000_000, 700_000]) {
    parser.push(payload.subarray(sent, sent + piece));
    sent += piece;
    assert.equal(parser.next(), null);
    assert.ok(heldBytes() <= 2 * sent + 256 * 1024, `holds ${heldBytes()} bytes after ${sent} received`);
  }
  while (sent < length) {
    const piece = Math.min(3_000_000, length - sent);
    parser.push(payload.subarray(sent, sent + piece));
    sent += piece;
    result = parser.next();
    assert.ok(heldBytes() <= 2 * sent + 256 * 1024, `holds ${heldBytes()} bytes after ${sent} received`);
  }
  assert.ok(result !== null && result.payload !== null);
  assert.ok(result.payload.equals(payload), 'the payload arrives whole through the buffers it grew through');
  assert.equal(held.size, 1, 'the buffers outgrown went back');
  assert.ok(held.has(result.allocated!));
});

test('request parser reads large payloads straight into their buffer and keeps nothing of a reused read buffer', (t) => {
  const rng = new Rng(testSeed(t));
  const big = Buffer.alloc(600 * 1024);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i * 2654435761 >>> 0, i);
  const all = Buffer.concat([
    encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0, length: big.length }),
    big,
    encodeRequestHeader({ flags: 0, type: Command.FLUSH, cookie: 2n, offset: 0, length: 0 }),
    encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 3n, offset: 4096, length: 40_000 }),
    big.subarray(3, 40_003),
  ]);
  const one = new RequestParser({ requestBytesMax: 32 * 1024 * 1024 });
  one.push(all);
  const whole: unknown[] = [];
  for (let r = one.next(); r !== null; r = one.next()) whole.push({ ...r.header, payload: r.payload?.toString('hex') ?? null });
  assert.equal(whole.length, 3);
  for (let round = 0; round < 50; round++) {
    const parser = new RequestParser({ requestBytesMax: 32 * 1024 * 1024 });
    const shared = Buffer.alloc(64 * 1024);
    const out: unknown[] = [];
    let at = 0;
    let direct = 0;
    while (at < all.length) {
      // As the connection's socket does: into the parser's target when it offers one, else the shared buffer.
      const target = parser.directTarget() ?? shared;
      const n = Math.min(round === 0 ? 65536 : rng.range(1, 70_000), target.length, all.length - at);
      all.copy(target, 0, at, at + n);
      at += n;
      if (target !== shared) direct += n;
      parser.push(target.subarray(0, n));
      for (let r = parser.next(); r !== null; r = parser.next()) out.push({ ...r.header, payload: r.payload?.toString('hex') ?? null });
      parser.queue.retain();
      shared.fill(0xee);
    }
    assert.deepEqual(out, whole, `round ${round}`);
    assert.ok(direct > 300 * 1024, `round ${round}: only ${direct} bytes read directly`);
  }
});
