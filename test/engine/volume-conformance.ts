/**
 * The conformance suite every Volume (src/engine/types.ts) must pass: the store's own volumes,
 * instant restore's hydrating volumes, the NBD tests' memory volume, and every later one. A test
 * file per implementation calls `volumeConformance` with a factory of fresh volumes:
 *
 *   volumeConformance('StoreVolume', { open: async (sizeBytes) => ({ volume, initial, … }) });
 *
 * Everything read is checked byte for byte against a model (a Buffer that starts as `initial`).
 * The error codes are part of the contract: CLOSED, then READ_ONLY, then INVALID, then
 * OUT_OF_RANGE, in that order of precedence, as EngineError; methods that return a promise
 * reject, they never throw. What an implementation truly lacks (snapshots, resize, surviving a
 * crash) its factory declares in `lacks` with the reason, and those tests show as skipped with it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EngineError, EngineErrorCode, type AllocationExtent, type ChangeExtent, type EngineErrorCodeValue, type Volume } from '../../src/engine/index.ts';
import { Rng, seededBytes, testSeed } from '../helpers/index.ts';

/** What a factory may lack; each has its own tests. */
export type VolumeCapability = 'snapshots' | 'resize' | 'crash';

/** One volume opened for a test, with what the suite may do around it. */
export interface VolumeUnderTest {
  /** A read-write handle on a disk's head. */
  volume: Volume;
  /** What the volume reads before the suite writes: zeroes for a new disk, the image of a restore. */
  initial: Buffer;
  /** Another read-write handle on the same disk's head (closed by the suite). */
  openHandle(): Volume;
  /** Snapshots the disk under `name` (capability `snapshots`). */
  snapshot?(name: string): Promise<void>;
  /** A read-only handle on snapshot `name` (capability `snapshots`; closed by the suite). */
  openSnapshot?(name: string): Volume;
  /** Resizes the disk (capability `resize`). */
  resize?(sizeBytes: number): Promise<void>;
  /**
   * Loses what a power failure loses now, then recovers as a restart would, and returns a
   * read-write handle on the recovered disk (capability `crash`). The handles of before are
   * dead; the suite only closes them. Later calls of the other functions act on the recovered disk.
   */
  crash?(): Promise<Volume>;
  /** Releases everything the factory made (the suite closed, or tried to close, its handles). */
  dispose(): Promise<void>;
}

/** How the suite gets volumes. */
export interface VolumeFactory {
  /** A fresh disk of `sizeBytes` (a multiple of 512) and a handle on it. */
  open(sizeBytes: number): Promise<VolumeUnderTest>;
  /** Capabilities the implementation does not have, each with the reason why. */
  lacks?: Partial<Record<VolumeCapability, string>>;
}

const KiB = 1024;
/** Volumes of the suite: not a whole number of 4 KiB blocks, so the last block is partial. */
const sizeBytes = 200 * KiB + 1536;
/** Offsets and lengths around sector and block edges. */
const edgeOffsets = [0, 1, 511, 512, 513, 4095, 4096, 4097, 8191, 12288 + 700];
const edgeLengths = [1, 7, 511, 512, 513, 4095, 4096, 4097, 8192, 8193, 3 * 4096 + 7];

/** Runs `op` and checks it rejects (never throws) with an EngineError of `code`. */
export async function rejectsWithCode(op: () => Promise<unknown>, code: EngineErrorCodeValue, what: string): Promise<void> {
  let promise: Promise<unknown>;
  try {
    promise = op();
  } catch (err) {
    assert.fail(`${what}: threw synchronously instead of rejecting: ${String(err)}`);
  }
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof EngineError, `${what}: an EngineError, got ${(err as Error)?.stack ?? String(err)}`);
    assert.equal(err.code, code, `${what}: code of "${err.message}"`);
    return true;
  });
}

/** Byte index of the first difference, or -1. */
function firstDiff(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Asserts `got` equals `want`, naming the first differing byte (relative to `base`). */
function assertBytes(got: Buffer, want: Buffer, what: string, base = 0): void {
  const at = firstDiff(got, want);
  assert.ok(at < 0, `${what}: differs at byte ${base + at} (got ${got[at]}, want ${want[at]}; lengths ${got.length}/${want.length})`);
}

/** Runs that cover [offset, offset+length) exactly, in order, none empty. */
function assertCovers(extents: { offset: number; length: number }[], offset: number, length: number, what: string): void {
  if (length === 0) {
    assert.deepEqual(extents, [], `${what}: no extents for an empty range`);
    return;
  }
  let at = offset;
  for (const e of extents) {
    assert.equal(e.offset, at, `${what}: extents in order without gaps: ${JSON.stringify(extents)}`);
    assert.ok(Number.isSafeInteger(e.length) && e.length > 0, `${what}: extent length ${e.length}`);
    at += e.length;
  }
  assert.equal(at, offset + length, `${what}: extents end at the range's end: ${JSON.stringify(extents)}`);
}

/** Checks an allocation map against the content: a hole reads as zero, what reads as zero is so. */
function assertStatusTrue(extents: AllocationExtent[], model: Buffer, offset: number, length: number, what: string): void {
  assertCovers(extents, offset, length, what);
  for (const e of extents) {
    if (e.hole) assert.ok(e.zero, `${what}: a hole reads as zeroes, so it is reported zero: ${JSON.stringify(e)}`);
    if (e.zero) {
      const nonZero = model.subarray(e.offset, e.offset + e.length).findIndex((x) => x !== 0);
      assert.equal(nonZero, -1, `${what}: ${JSON.stringify(e)} reported zero, byte ${e.offset + nonZero} is not`);
    }
  }
}

/** Per 512-byte sector of the volume: whether the extents say it changed. */
function changedSectors(extents: ChangeExtent[], volumeBytes: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(volumeBytes / 512));
  for (const e of extents) {
    if (!e.changed) continue;
    for (let s = Math.floor(e.offset / 512); s * 512 < e.offset + e.length; s++) out[s] = 1;
  }
  return out;
}

/** Marks the sectors [offset, offset+length) touches. */
export function touch(sectors: Uint8Array, offset: number, length: number): void {
  for (let s = Math.floor(offset / 512); s * 512 < offset + length; s++) sectors[s] = 1;
}

/**
 * Checks changedSince against what happened since the snapshot: every sector whose bytes differ
 * is reported, and every sector data was written to; nothing outside the sectors touched by
 * writes, zeroes and trims is.
 */
function assertChanges(extents: ChangeExtent[], f: { before: Buffer; now: Buffer; written: Uint8Array; touched: Uint8Array; what: string }): void {
  assertCovers(extents, 0, f.now.length, f.what);
  const changed = changedSectors(extents, f.now.length);
  for (let s = 0; s < changed.length; s++) {
    const a = f.before.subarray(s * 512, (s + 1) * 512);
    const b = f.now.subarray(s * 512, (s + 1) * 512);
    if (!a.equals(b)) assert.equal(changed[s], 1, `${f.what}: sector ${s} differs from the snapshot but is not reported changed`);
    if (f.written[s]) assert.equal(changed[s], 1, `${f.what}: sector ${s} was written but is not reported changed`);
    if (changed[s]) assert.equal(f.touched[s], 1, `${f.what}: sector ${s} is reported changed but nothing touched it`);
  }
}

/** Declares the suite (a node:test `describe`) for one implementation. */
export function volumeConformance(name: string, factory: VolumeFactory): void {
  const lacks = factory.lacks ?? {};
  const needs = (cap: VolumeCapability) => (lacks[cap] !== undefined ? { skip: `${name} has no ${cap}: ${lacks[cap]}` } : {});

  /** Runs `fn` with a fresh volume of `bytes`; closes every handle and disposes of it after. */
  async function withVolume(bytes: number, fn: (u: VolumeUnderTest, model: Buffer, handles: Volume[]) => Promise<void>): Promise<void> {
    const u = await factory.open(bytes);
    const handles: Volume[] = [u.volume];
    try {
      assert.equal(u.initial.length, bytes, 'the factory says what the volume holds, all of it');
      await fn(u, Buffer.from(u.initial), handles);
    } finally {
      for (const h of handles) {
        try {
          h.close();
        } catch {
          // A dead handle (after crash) may refuse; dispose releases what is left.
        }
      }
      await u.dispose();
    }
  }

  /** Reads the whole volume and checks it against the model. */
  async function assertVolume(v: Volume, model: Buffer, what: string): Promise<void> {
    assertBytes(await v.read(0, model.length), model, what);
  }

  function capability<K extends 'snapshot' | 'openSnapshot' | 'resize' | 'crash'>(u: VolumeUnderTest, key: K): NonNullable<VolumeUnderTest[K]> {
    const fn = u[key];
    assert.ok(typeof fn === 'function', `${name}: the factory lacks ${key}() but does not declare it in lacks`);
    return fn.bind(u) as NonNullable<VolumeUnderTest[K]>;
  }

  describe(`${name} volume conformance`, () => {
    test(`${name} a new volume says what it is and reads its initial content`, () =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        assert.equal(typeof v.disk, 'string');
        assert.ok(v.disk.length > 0);
        assert.equal(v.snapshot, null);
        assert.equal(v.readOnly, false);
        assert.equal(v.sizeBytes, sizeBytes);
        assert.ok(Number.isSafeInteger(v.blockBytes) && v.blockBytes >= 512 && (v.blockBytes & (v.blockBytes - 1)) === 0, `blockBytes ${v.blockBytes}: a power of two, at least a sector`);
        await assertVolume(v, model, 'initial content');
      }));

    test(`${name} writes at every sector and sub-sector alignment read back byte-exact`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        let n = 0;
        for (const offset of edgeOffsets) {
          for (const length of edgeLengths) {
            // Spread the writes over the volume so they land on fresh and on written blocks.
            const at = (offset + n * 5 * 4096) % (sizeBytes - length - 1);
            const data = seededBytes(seed, `w${n++}`, length);
            await v.write(at, data);
            data.copy(model, at);
            const from = Math.max(0, at - 2 * 4096);
            const to = Math.min(sizeBytes, at + length + 2 * 4096);
            assertBytes(await v.read(from, to - from), model.subarray(from, to), `after a write of ${length} at ${at} (seed ${seed})`, from);
          }
        }
        // The very end: a write ending at the last byte, one of the last byte alone.
        const tail = seededBytes(seed, 'tail', 4096 + 3);
        await v.write(sizeBytes - tail.length, tail);
        tail.copy(model, sizeBytes - tail.length);
        await v.write(sizeBytes - 1, Buffer.from([0xa5]));
        model[sizeBytes - 1] = 0xa5;
        await assertVolume(v, model, `after every write (seed ${seed})`);
      }));

    test(`${name} reads at every alignment are byte-exact, with or without a buffer to read into`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        const data = seededBytes(seed, 'fill', 96 * KiB);
        await v.write(4096 + 100, data);
        data.copy(model, 4096 + 100);
        for (const offset of edgeOffsets) {
          for (const length of edgeLengths) {
            const at = offset + 3 * 4096;
            const want = model.subarray(at, at + length);
            assertBytes(await v.read(at, length), want, `read of ${length} at ${at}`);
            // Room for every block the range touches, room for less, and a buffer with old bytes in it.
            const whole = (Math.ceil((at + length) / 4096) - Math.floor(at / 4096) + 1) * 4096;
            for (const room of [whole, 512]) {
              const into = Buffer.alloc(room, 0xcc);
              const got = await v.read(at, length, into);
              assert.equal(got.length, length, `read into a buffer of ${room} returns ${length} bytes`);
              assertBytes(got, want, `read of ${length} at ${at} into a buffer of ${room}`);
            }
          }
        }
      }));

    test(`${name} a write does not keep the caller's buffer once it settles`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        for (const [at, length] of [[0, 4096], [700, 5000], [8192 + 1, 511]] as const) {
          const data = seededBytes(seed, `b${at}`, length);
          await v.write(at, data);
          data.copy(model, at);
          data.fill(0xee); // the caller reuses its buffer
        }
        await assertVolume(v, model, 'after the callers reused their buffers');
      }));

    test(`${name} write-zeroes and trims read back as zeroes, whole and partial blocks`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        const data = seededBytes(seed, 'data', sizeBytes);
        await v.write(0, data);
        data.copy(model, 0);
        const ops: [kind: 'trim' | 'zero' | 'zero-nohole', offset: number, length: number][] = [
          ['trim', 4096, 4096], // one whole block
          ['trim', 3 * 4096 + 512, 1024], // sectors inside a block
          ['trim', 5 * 4096 - 10, 20], // across a block edge, sub-sector
          ['zero', 8 * 4096, 3 * 4096], // whole blocks, may punch a hole
          ['zero', 12 * 4096 + 1, 4094], // inside a block, both ends unaligned
          ['zero-nohole', 16 * 4096, 2 * 4096], // whole blocks, must stay allocated
          ['zero-nohole', 19 * 4096 + 300, 2 * 4096 + 77], // spanning three blocks
          ['trim', 24 * 4096 - 100, 4 * 4096 + 200], // partial, whole, whole, whole, partial
          ['zero', sizeBytes - 1536 - 4096, 1536 + 4096], // up to the end, the partial last block
          ['trim', 30 * 4096, 0], // zero length
          ['zero', 31 * 4096, 0],
        ];
        for (const [kind, offset, length] of ops) {
          if (kind === 'trim') await v.trim(offset, length);
          else await v.writeZeroes(offset, length, { mayTrim: kind === 'zero' });
          model.fill(0, offset, offset + length);
          const from = Math.max(0, offset - 4096);
          const to = Math.min(sizeBytes, offset + length + 4096);
          assertBytes(await v.read(from, to - from), model.subarray(from, to), `after ${kind} of ${length} at ${offset}`, from);
        }
        await assertVolume(v, model, 'after every zero and trim');
        assertStatusTrue(await v.blockStatus(0, sizeBytes), model, 0, sizeBytes, 'block status after zeroes and trims');
        // Whole blocks trimmed are deallocated: a hole.
        for (const e of await v.blockStatus(4096, 4096)) assert.ok(e.hole && e.zero, `a trimmed whole block is a hole: ${JSON.stringify(e)}`);
        for (const e of await v.blockStatus(25 * 4096, 2 * 4096)) assert.ok(e.hole && e.zero, `trimmed whole blocks are a hole: ${JSON.stringify(e)}`);
        // Written data is never reported zero.
        for (const e of await v.blockStatus(2 * 4096, 4096)) assert.ok(!e.zero, `a block of data is not zero: ${JSON.stringify(e)}`);
      }));

    test(`${name} block status covers any range exactly and never calls data zero`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        const rng = new Rng(seed);
        for (let i = 0; i < 12; i++) {
          const offset = rng.int(sizeBytes);
          const length = rng.range(1, Math.min(20 * 4096, sizeBytes - offset));
          const data = seededBytes(seed, `s${i}`, length);
          data[0] |= 1; // the first byte is not zero, so the block holding it is data
          await v.write(offset, data);
          data.copy(model, offset);
        }
        for (const [offset, length] of [[0, sizeBytes], [1, sizeBytes - 2], [4095, 2], [sizeBytes - 1, 1], [513, 0], [sizeBytes, 0]] as const) {
          assertStatusTrue(await v.blockStatus(offset, length), model, offset, length, `block status of ${offset}+${length} (seed ${seed})`);
        }
        for (let i = 0; i < 30; i++) {
          const offset = rng.int(sizeBytes);
          const length = rng.int(sizeBytes - offset + 1);
          assertStatusTrue(await v.blockStatus(offset, length), model, offset, length, `block status of ${offset}+${length} (seed ${seed})`);
        }
      }));

    test(`${name} flush and FUA writes, zeroes and trims complete and read back, through any handle`, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const v = u.volume;
        const other = u.openHandle();
        handles.push(other);
        const seed = testSeed(t);
        await v.flush();
        const a = seededBytes(seed, 'a', 6000);
        await v.write(1000, a, { fua: true });
        a.copy(model, 1000);
        const b = seededBytes(seed, 'b', 4096);
        await other.write(16 * 4096, b);
        b.copy(model, 16 * 4096);
        await v.writeZeroes(2000, 3000, { fua: true, mayTrim: true });
        model.fill(0, 2000, 5000);
        await other.writeZeroes(16 * 4096 + 10, 10, { fua: true });
        model.fill(0, 16 * 4096 + 10, 16 * 4096 + 20);
        await v.trim(5000, 100, { fua: true });
        model.fill(0, 5000, 5100);
        await v.write(7000, Buffer.alloc(0), { fua: true }); // an empty FUA write is a flush
        await other.flush();
        await v.flush();
        await assertVolume(v, model, 'through the first handle');
        await assertVolume(other, model, 'through the second handle');
      }));

    test(`${name} survives a crash: what FUA and flush made durable stays, the rest is old or new`, { ...needs('crash') }, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const crash = capability(u, 'crash');
        const seed = testSeed(t);
        let v = u.volume;
        // Each step makes something durable in one way, then writes something that is not, and
        // crashes: a durable step made durable by a later one would prove nothing.
        const steps: { what: string; durable: (v: Volume) => Promise<[number, number][]> }[] = [
          {
            what: 'a write and a trim, then a flush',
            durable: async (v) => {
              const a = seededBytes(seed, 'a', 40 * KiB + 3);
              await v.write(5, a);
              a.copy(model, 5);
              await v.trim(20 * KiB, 8 * KiB);
              model.fill(0, 20 * KiB, 28 * KiB);
              await v.flush();
              return [[5, 40 * KiB + 8]];
            },
          },
          {
            what: 'a FUA write',
            durable: async (v) => {
              const b = seededBytes(seed, 'b', 9000);
              await v.write(64 * KiB + 100, b, { fua: true });
              b.copy(model, 64 * KiB + 100);
              return [[64 * KiB + 100, 64 * KiB + 9100]];
            },
          },
          {
            what: 'a FUA write-zeroes',
            durable: async (v) => {
              await v.writeZeroes(30 * KiB + 1, 12 * KiB, { fua: true, mayTrim: false });
              model.fill(0, 30 * KiB + 1, 42 * KiB + 1);
              return [[30 * KiB + 1, 42 * KiB + 1]];
            },
          },
          {
            what: 'a FUA trim',
            durable: async (v) => {
              await v.trim(60 * KiB - 700, 9 * KiB, { fua: true });
              model.fill(0, 60 * KiB - 700, 69 * KiB - 700);
              return [[60 * KiB - 700, 69 * KiB - 700]];
            },
          },
        ];
        for (const [i, step] of steps.entries()) {
          const durable = await step.durable(v);
          // Not durable: may be lost, never torn into something else.
          const before = Buffer.from(model);
          const c = seededBytes(seed, `c${i}`, 20 * KiB);
          const at = 100 * KiB + 7 + i * 20 * KiB;
          await v.write(at, c);
          c.copy(model, at);
          v = await crash();
          handles.push(v);
          const got = await v.read(0, sizeBytes);
          for (let b = 0; b < sizeBytes; b++) {
            if (got[b] !== model[b] && got[b] !== before[b]) assert.fail(`after ${step.what} and a crash byte ${b} is ${got[b]}: neither ${before[b]} (before the last write) nor ${model[b]} (seed ${seed})`);
          }
          for (const [from, to] of durable) assertBytes(got.subarray(from, to), model.subarray(from, to), `after ${step.what} and a crash (seed ${seed})`, from);
          got.copy(model);
        }
        // The recovered disk works: writes, a flush, and another crash keep them.
        const d = seededBytes(seed, 'd', 12 * KiB);
        await v.write(150 * KiB + 511, d);
        d.copy(model, 150 * KiB + 511);
        await v.flush();
        v = await crash();
        handles.push(v);
        await assertVolume(v, model, `after a flush and another crash (seed ${seed})`);
      }));

    test(`${name} invalid and out-of-range arguments are typed errors of the right code`, () =>
      withVolume(sizeBytes, async (u) => {
        const v = u.volume;
        const I = EngineErrorCode.INVALID;
        const R = EngineErrorCode.OUT_OF_RANGE;
        const cases: [offset: number, length: number, code: EngineErrorCodeValue][] = [
          [-1, 1, I], [0, -1, I], [1.5, 1, I], [0, 0.5, I], [NaN, 1, I], [0, NaN, I], [Infinity, 0, I], [0, Infinity, I],
          [2 ** 53, 1, I], [-0.5, 0, I],
          [sizeBytes, 1, R], [sizeBytes + 1, 0, R], [sizeBytes - 1, 2, R], [0, sizeBytes + 1, R], [2 ** 52, 1, R], [Number.MAX_SAFE_INTEGER, 1, R],
        ];
        for (const [offset, length, code] of cases) {
          const what = `offset ${offset} length ${length}`;
          await rejectsWithCode(() => v.read(offset, length), code, `read ${what}`);
          await rejectsWithCode(() => v.writeZeroes(offset, length), code, `writeZeroes ${what}`);
          await rejectsWithCode(() => v.trim(offset, length), code, `trim ${what}`);
          await rejectsWithCode(() => v.blockStatus(offset, length), code, `blockStatus ${what}`);
          // The range is checked before the snapshot is looked up.
          await rejectsWithCode(() => v.changedSince('no-such-snapshot', offset, length), code, `changedSince ${what}`);
          if (Number.isSafeInteger(length) && length >= 0 && length <= sizeBytes + 1) {
            await rejectsWithCode(() => v.write(offset, Buffer.alloc(length, 1)), code, `write ${what}`);
          }
        }
        await rejectsWithCode(() => v.changedSince('no-such-snapshot', 0, 512), EngineErrorCode.NOT_FOUND, 'changedSince of an unknown snapshot');
        await rejectsWithCode(() => v.changedSince('no-such-snapshot', 0, 0), EngineErrorCode.NOT_FOUND, 'changedSince of an unknown snapshot, empty range');
        // Nothing was written by the refused requests.
        await assertVolume(v, u.initial, 'after refused requests');
      }));

    test(`${name} sizes at the limits: empty requests, the last byte, the whole volume`, (t) =>
      withVolume(sizeBytes, async (u, model) => {
        const v = u.volume;
        const seed = testSeed(t);
        for (const at of [0, 4096, 4097, sizeBytes - 1, sizeBytes]) {
          assert.equal((await v.read(at, 0)).length, 0, `an empty read at ${at}`);
          await v.write(at, Buffer.alloc(0));
          await v.write(at, Buffer.alloc(0), { fua: true });
          await v.writeZeroes(at, 0);
          await v.writeZeroes(at, 0, { mayTrim: true, fua: true });
          await v.trim(at, 0);
          assert.deepEqual(await v.blockStatus(at, 0), [], `an empty block status at ${at}`);
        }
        await assertVolume(v, model, 'after empty requests');
        await v.write(sizeBytes - 1, Buffer.from([0x5a]));
        model[sizeBytes - 1] = 0x5a;
        assert.deepEqual(await v.read(sizeBytes - 1, 1), Buffer.from([0x5a]), 'the last byte');
        assertStatusTrue(await v.blockStatus(sizeBytes - 1, 1), model, sizeBytes - 1, 1, 'block status of the last byte');
        const all = seededBytes(seed, 'all', sizeBytes);
        await v.write(0, all);
        all.copy(model);
        await assertVolume(v, model, 'after a write of the whole volume');
        await v.writeZeroes(0, sizeBytes);
        model.fill(0);
        await assertVolume(v, model, 'after write-zeroes of the whole volume');
        await v.write(0, all);
        await v.trim(0, sizeBytes);
        await assertVolume(v, model, 'after a trim of the whole volume');
        assertStatusTrue(await v.blockStatus(0, sizeBytes), model, 0, sizeBytes, 'block status after a trim of the whole volume');
      }));

    test(`${name} snapshots through the volume: read-only views, frozen content, changes since`, { ...needs('snapshots') }, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const snapshot = capability(u, 'snapshot');
        const openSnapshot = capability(u, 'openSnapshot');
        const seed = testSeed(t);
        const v = u.volume;
        const a = seededBytes(seed, 'a', 50 * KiB);
        await v.write(3000, a);
        a.copy(model, 3000);
        await snapshot('s1');
        const atS1 = Buffer.from(model);
        const s1 = openSnapshot('s1');
        handles.push(s1);
        assert.equal(s1.disk, v.disk);
        assert.equal(s1.snapshot, 's1');
        assert.equal(s1.readOnly, true);
        assert.equal(s1.sizeBytes, sizeBytes);
        assert.equal(s1.blockBytes, v.blockBytes);
        // Read-only: every kind of write is refused, before its range is looked at.
        for (const [offset, length] of [[0, 1], [0, 0], [sizeBytes, 1], [-1, 1]] as const) {
          const what = `on a snapshot at ${offset}+${length}`;
          await rejectsWithCode(() => s1.write(offset, Buffer.alloc(Math.max(0, length))), EngineErrorCode.READ_ONLY, `write ${what}`);
          await rejectsWithCode(() => s1.writeZeroes(offset, length), EngineErrorCode.READ_ONLY, `writeZeroes ${what}`);
          await rejectsWithCode(() => s1.trim(offset, length), EngineErrorCode.READ_ONLY, `trim ${what}`);
        }
        await rejectsWithCode(() => s1.write(0, Buffer.alloc(4096), { fua: true }), EngineErrorCode.READ_ONLY, 'FUA write on a snapshot');
        await s1.flush(); // a flush writes nothing
        await rejectsWithCode(() => s1.read(sizeBytes, 1), EngineErrorCode.OUT_OF_RANGE, 'read past the end of a snapshot');
        // The head changes; the snapshot does not.
        const written = new Uint8Array(Math.ceil(sizeBytes / 512));
        const touched = new Uint8Array(written.length);
        const b = seededBytes(seed, 'b', 10 * KiB + 5);
        await v.write(20 * KiB - 3, b);
        b.copy(model, 20 * KiB - 3);
        touch(written, 20 * KiB - 3, b.length);
        touch(touched, 20 * KiB - 3, b.length);
        await v.write(100 * KiB + 1, Buffer.from('one sector'));
        Buffer.from('one sector').copy(model, 100 * KiB + 1);
        touch(written, 100 * KiB + 1, 10);
        touch(touched, 100 * KiB + 1, 10);
        await v.trim(4 * KiB, 8 * KiB);
        model.fill(0, 4 * KiB, 12 * KiB);
        touch(touched, 4 * KiB, 8 * KiB);
        await v.writeZeroes(40 * KiB + 100, 600);
        model.fill(0, 40 * KiB + 100, 40 * KiB + 700);
        touch(touched, 40 * KiB + 100, 600);
        await v.trim(150 * KiB, 8 * KiB); // nothing there: no content changes
        touch(touched, 150 * KiB, 8 * KiB);
        await assertVolume(s1, atS1, 'the snapshot after the head changed');
        await assertVolume(v, model, 'the head after the snapshot');
        assertStatusTrue(await s1.blockStatus(0, sizeBytes), atS1, 0, sizeBytes, 'block status of the snapshot');
        assertChanges(await v.changedSince('s1', 0, sizeBytes), { before: atS1, now: model, written, touched, what: `the head's changes since s1 (seed ${seed})` });
        assert.deepEqual(await s1.changedSince('s1', 0, sizeBytes), [{ offset: 0, length: sizeBytes, changed: false }], 'a snapshot has nothing changed since itself');
        // A range inside: cut to it exactly.
        const part = await v.changedSince('s1', 20 * KiB - 1000, 1000);
        assertCovers(part, 20 * KiB - 1000, 1000, 'changes of a part');
        assert.deepEqual(part.map((e) => e.changed), [false, true], `changes of a part: ${JSON.stringify(part)}`);
        assert.equal(part[1].offset, 20 * KiB - 512, 'changes are tracked by sector');
        assert.deepEqual(await v.changedSince('s1', 5, 0), [], 'no changes in an empty range');
        // A second snapshot: changes between the two, as seen from the newer one.
        await snapshot('s2');
        const atS2 = Buffer.from(model);
        const s2 = openSnapshot('s2');
        handles.push(s2);
        const c = seededBytes(seed, 'c', 4096);
        await v.write(60 * KiB, c);
        c.copy(model, 60 * KiB);
        await assertVolume(s2, atS2, 'the second snapshot');
        assertChanges(await s2.changedSince('s1', 0, sizeBytes), { before: atS1, now: atS2, written, touched, what: `s2's changes since s1 (seed ${seed})` });
        const sinceS2 = changedSectors(await v.changedSince('s2', 0, sizeBytes), sizeBytes);
        for (let s = 0; s < sinceS2.length; s++) assert.equal(sinceS2[s], s >= 120 && s < 128 ? 1 : 0, `sector ${s} changed since s2`);
      }));

    test(`${name} the size follows a resize of the disk; snapshots keep theirs`, { ...needs('resize') }, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const resize = capability(u, 'resize');
        const seed = testSeed(t);
        const v = u.volume;
        const other = u.openHandle();
        handles.push(other);
        const a = seededBytes(seed, 'a', sizeBytes);
        await v.write(0, a);
        a.copy(model);
        const snapshots = lacks.snapshots === undefined;
        if (snapshots) await capability(u, 'snapshot')('before-resize');
        const bigger = sizeBytes + 64 * KiB + 512;
        await resize(bigger);
        assert.equal(v.sizeBytes, bigger, 'an open handle sees the new size');
        assert.equal(other.sizeBytes, bigger);
        const grown = Buffer.concat([model, Buffer.alloc(bigger - sizeBytes)]);
        await assertVolume(other, grown, 'after growing: zeroes past the old end');
        const b = seededBytes(seed, 'b', 5000);
        await v.write(bigger - 5000, b);
        b.copy(grown, bigger - 5000);
        await assertVolume(v, grown, 'a write into the grown part');
        const smaller = 64 * KiB - 512;
        await resize(smaller);
        assert.equal(v.sizeBytes, smaller);
        await rejectsWithCode(() => v.read(smaller, 1), EngineErrorCode.OUT_OF_RANGE, 'a read past the new end');
        await resize(bigger);
        const regrown = Buffer.alloc(bigger);
        model.copy(regrown, 0, 0, smaller);
        await assertVolume(v, regrown, 'shrunk then grown: what was cut off reads as zeroes');
        if (snapshots) {
          const s = capability(u, 'openSnapshot')('before-resize');
          handles.push(s);
          assert.equal(s.sizeBytes, sizeBytes, 'a snapshot keeps the size it was taken at');
          await assertVolume(s, model, 'a snapshot after resizes');
        }
      }));

    test(`${name} close: later requests fail as closed, a second close does nothing, other handles go on`, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const seed = testSeed(t);
        const v = u.volume;
        const other = u.openHandle();
        handles.push(other);
        const a = seededBytes(seed, 'a', 9000);
        await v.write(10, a);
        a.copy(model, 10);
        v.close();
        v.close();
        const C = EngineErrorCode.CLOSED;
        await rejectsWithCode(() => v.read(0, 1), C, 'read after close');
        await rejectsWithCode(() => v.read(0, 0), C, 'empty read after close');
        await rejectsWithCode(() => v.read(sizeBytes, 1), C, 'out-of-range read after close');
        await rejectsWithCode(() => v.write(0, Buffer.alloc(1)), C, 'write after close');
        await rejectsWithCode(() => v.writeZeroes(0, 512), C, 'writeZeroes after close');
        await rejectsWithCode(() => v.trim(0, 4096), C, 'trim after close');
        await rejectsWithCode(() => v.flush(), C, 'flush after close');
        await rejectsWithCode(() => v.blockStatus(0, 4096), C, 'blockStatus after close');
        await rejectsWithCode(() => v.changedSince('no-such-snapshot', 0, 4096), C, 'changedSince after close');
        await assertVolume(other, model, 'another handle after the first closed');
        const b = seededBytes(seed, 'b', 100);
        await other.write(50 * KiB, b);
        b.copy(model, 50 * KiB);
        await assertVolume(other, model, 'another handle writes after the first closed');
      }));

    test(`${name} a seeded random sequence of concurrent requests matches a model`, (t) =>
      withVolume(sizeBytes, async (u, model, handles) => {
        const seed = testSeed(t);
        const rng = new Rng(seed);
        const vols = [u.volume, u.openHandle()];
        handles.push(vols[1]);
        const snapshots = lacks.snapshots === undefined;
        if (snapshots) await capability(u, 'snapshot')('start');
        const atStart = Buffer.from(model);
        const written = new Uint8Array(Math.ceil(sizeBytes / 512));
        const touched = new Uint8Array(written.length);
        const trace: string[] = [];
        for (let wave = 0; wave < 60; wave++) {
          // Requests of a wave touch no byte another one of the wave touches, so the model is
          // exact; they cluster in a few blocks, so neighbours share blocks and sectors.
          const taken: [number, number][] = [];
          const base = rng.int(sizeBytes);
          const ops: Promise<void>[] = [];
          for (let i = 0; i < 8; i++) {
            const offset = Math.min(sizeBytes - 1, rng.next() < 0.7 ? base + rng.int(3 * 4096) : rng.int(sizeBytes));
            const length = Math.min(sizeBytes - offset, rng.next() < 0.6 ? rng.range(1, 1500) : rng.range(1, 6 * 4096));
            if (!taken.every(([a, b]) => offset + length <= a || offset >= b)) continue;
            taken.push([offset, offset + length]);
            const v = vols[rng.int(2)];
            const fua = rng.next() < 0.2;
            const kind = rng.int(12);
            const what = `wave ${wave}: ${kind} ${offset}+${length}${fua ? ' fua' : ''}`;
            trace.push(what);
            if (kind < 4) {
              const into = rng.next() < 0.5 ? Buffer.alloc(length + 2 * 4096) : undefined;
              const want = Buffer.from(model.subarray(offset, offset + length));
              ops.push(v.read(offset, length, into).then((got) => assertBytes(got, want, `${what} (seed ${seed})\n${trace.slice(-20).join('\n')}`, offset)));
            } else if (kind < 8) {
              const data = seededBytes(seed, `w${wave}.${i}`, length);
              data.copy(model, offset);
              touch(written, offset, length);
              touch(touched, offset, length);
              ops.push(v.write(offset, data, { fua }));
            } else if (kind < 10) {
              model.fill(0, offset, offset + length);
              touch(touched, offset, length);
              ops.push(v.writeZeroes(offset, length, { fua, mayTrim: kind === 8 }));
            } else if (kind < 11) {
              model.fill(0, offset, offset + length);
              touch(touched, offset, length);
              ops.push(v.trim(offset, length, { fua }));
            } else {
              ops.push(v.flush());
            }
          }
          await Promise.all(ops);
          if (wave % 10 === 9) {
            await assertVolume(vols[wave % 2], model, `after wave ${wave} (seed ${seed})\n${trace.slice(-20).join('\n')}`);
            assertStatusTrue(await vols[0].blockStatus(0, sizeBytes), model, 0, sizeBytes, `block status after wave ${wave} (seed ${seed})`);
          }
        }
        await assertVolume(vols[0], model, `at the end (seed ${seed})`);
        if (snapshots) {
          assertChanges(await vols[1].changedSince('start', 0, sizeBytes), { before: atStart, now: model, written, touched, what: `changes since the start (seed ${seed})` });
          const s = capability(u, 'openSnapshot')('start');
          handles.push(s);
          await assertVolume(s, atStart, `the snapshot taken at the start (seed ${seed})`);
        }
      }));
  });
}


/** One read-only view of a disk's head opened for a test (readOnlyVolumeConformance). */
export interface ReadOnlyVolumeUnderTest {
  /** A read-only handle on a disk's head: `readOnly` true, `snapshot` null. */
  volume: Volume;
  /** Everything it reads: not a whole number of 4 KiB blocks, at least 64 KiB. */
  content: Buffer;
  /** Another handle on the same disk's head (closed by the suite). */
  openHandle(): Volume;
  /**
   * A snapshot of the disk, what it holds, and what happened on the head since: the sectors data
   * was written to and those touched by writes, zeroes and trims (see assertChanges).
   */
  snapshot: { name: string; content: Buffer; written: Uint8Array; touched: Uint8Array };
  /** Releases everything the factory made. */
  dispose(): Promise<void>;
}

/**
 * The contract of a disk's head that cannot be written (a store opened read-only): reads, block
 * status and changes as of any volume, every kind of write refused with ENGINE_READ_ONLY before
 * its range is looked at, a flush that succeeds, the same order of refusals and the same close.
 */
export function readOnlyVolumeConformance(name: string, factory: { open(): Promise<ReadOnlyVolumeUnderTest> }): void {
  async function withVolume(fn: (u: ReadOnlyVolumeUnderTest, handles: Volume[]) => Promise<void>): Promise<void> {
    const u = await factory.open();
    const handles: Volume[] = [u.volume];
    try {
      assert.ok(u.content.length >= 64 * KiB && u.content.length % 4096 !== 0, `${name}: content of ${u.content.length} bytes, its last block partial`);
      await fn(u, handles);
    } finally {
      for (const h of handles) h.close();
      await u.dispose();
    }
  }

  describe(`${name} read-only volume conformance`, () => {
    test(`${name} a read-only head says what it is and reads its content at every alignment, with or without a buffer`, () =>
      withVolume(async (u) => {
        const v = u.volume;
        const size = u.content.length;
        assert.equal(v.snapshot, null);
        assert.equal(v.readOnly, true);
        assert.equal(v.sizeBytes, size);
        await assertWhole(v, u.content, 'the whole content');
        for (const offset of edgeOffsets) {
          for (const length of edgeLengths) {
            const at = (offset + 5 * 4096) % (size - length);
            const want = u.content.subarray(at, at + length);
            assertBytes(await v.read(at, length), want, `read of ${length} at ${at}`, at);
            const whole = (Math.ceil((at + length) / 4096) - Math.floor(at / 4096) + 1) * 4096;
            for (const room of [whole, 512]) assertBytes(await v.read(at, length, Buffer.alloc(room, 0xcc)), want, `read of ${length} at ${at} into a buffer of ${room}`, at);
          }
        }
        assert.deepEqual(await v.read(size - 1, 1), u.content.subarray(size - 1), 'the last byte');
      }));

    test(`${name} every kind of write is refused as read-only before its range is looked at; a flush succeeds`, () =>
      withVolume(async (u) => {
        const v = u.volume;
        const size = u.content.length;
        for (const [offset, length] of [[0, 1], [0, 0], [size, 0], [size, 1], [size - 1, 2], [-1, 1], [1.5, 1]] as const) {
          const what = `at ${offset}+${length}`;
          await rejectsWithCode(() => v.write(offset, Buffer.alloc(Math.max(0, length))), EngineErrorCode.READ_ONLY, `write ${what}`);
          await rejectsWithCode(() => v.write(offset, Buffer.alloc(Math.max(0, length)), { fua: true }), EngineErrorCode.READ_ONLY, `FUA write ${what}`);
          await rejectsWithCode(() => v.writeZeroes(offset, length), EngineErrorCode.READ_ONLY, `writeZeroes ${what}`);
          await rejectsWithCode(() => v.writeZeroes(offset, length, { mayTrim: true, fua: true }), EngineErrorCode.READ_ONLY, `writeZeroes (may trim, FUA) ${what}`);
          await rejectsWithCode(() => v.trim(offset, length), EngineErrorCode.READ_ONLY, `trim ${what}`);
        }
        await v.flush();
        await assertWhole(v, u.content, 'after the refused writes');
      }));

    test(`${name} reads, block status and changes: invalid and out-of-range arguments, empty requests`, () =>
      withVolume(async (u) => {
        const v = u.volume;
        const size = u.content.length;
        const I = EngineErrorCode.INVALID;
        const R = EngineErrorCode.OUT_OF_RANGE;
        const cases: [offset: number, length: number, code: EngineErrorCodeValue][] = [
          [-1, 1, I], [0, -1, I], [1.5, 1, I], [NaN, 1, I], [0, Infinity, I], [2 ** 53, 1, I],
          [size, 1, R], [size + 1, 0, R], [size - 1, 2, R], [0, size + 1, R], [Number.MAX_SAFE_INTEGER, 1, R],
        ];
        for (const [offset, length, code] of cases) {
          const what = `offset ${offset} length ${length}`;
          await rejectsWithCode(() => v.read(offset, length), code, `read ${what}`);
          await rejectsWithCode(() => v.blockStatus(offset, length), code, `blockStatus ${what}`);
          await rejectsWithCode(() => v.changedSince(u.snapshot.name, offset, length), code, `changedSince ${what}`);
        }
        await rejectsWithCode(() => v.changedSince('no-such-snapshot', 0, 512), EngineErrorCode.NOT_FOUND, 'changedSince of an unknown snapshot');
        for (const at of [0, 4097, size - 1, size]) {
          assert.equal((await v.read(at, 0)).length, 0, `an empty read at ${at}`);
          assert.deepEqual(await v.blockStatus(at, 0), [], `an empty block status at ${at}`);
          assert.deepEqual(await v.changedSince(u.snapshot.name, at, 0), [], `no changes in an empty range at ${at}`);
        }
      }));

    test(`${name} block status covers any range exactly and never calls data zero; changes since a snapshot are exact`, (t) =>
      withVolume(async (u) => {
        const v = u.volume;
        const size = u.content.length;
        const rng = new Rng(testSeed(t));
        for (const [offset, length] of [[0, size], [1, size - 2], [4095, 2], [size - 1, 1]] as const) {
          assertStatusTrue(await v.blockStatus(offset, length), u.content, offset, length, `block status of ${offset}+${length}`);
        }
        for (let i = 0; i < 30; i++) {
          const offset = rng.int(size);
          const length = rng.int(size - offset + 1);
          assertStatusTrue(await v.blockStatus(offset, length), u.content, offset, length, `block status of ${offset}+${length}`);
        }
        const s = u.snapshot;
        assertChanges(await v.changedSince(s.name, 0, size), { before: s.content, now: u.content, written: s.written, touched: s.touched, what: `changes since ${s.name}` });
      }));

    test(`${name} close: later requests fail as closed (before read-only), a second close does nothing, other handles go on`, () =>
      withVolume(async (u, handles) => {
        const v = u.volume;
        const other = u.openHandle();
        handles.push(other);
        assert.equal(other.readOnly, true);
        v.close();
        v.close();
        const C = EngineErrorCode.CLOSED;
        await rejectsWithCode(() => v.read(0, 1), C, 'read after close');
        await rejectsWithCode(() => v.write(0, Buffer.alloc(1)), C, 'write after close');
        await rejectsWithCode(() => v.writeZeroes(0, 512), C, 'writeZeroes after close');
        await rejectsWithCode(() => v.trim(0, 4096), C, 'trim after close');
        await rejectsWithCode(() => v.flush(), C, 'flush after close');
        await rejectsWithCode(() => v.blockStatus(0, 4096), C, 'blockStatus after close');
        await assertWhole(other, u.content, 'another handle after the first closed');
      }));

    test(`${name} concurrent reads on two handles match the content`, (t) =>
      withVolume(async (u, handles) => {
        const seed = testSeed(t);
        const rng = new Rng(seed);
        const vols = [u.volume, u.openHandle()];
        handles.push(vols[1]);
        const size = u.content.length;
        for (let wave = 0; wave < 20; wave++) {
          const ops: Promise<void>[] = [];
          for (let i = 0; i < 8; i++) {
            const offset = rng.int(size);
            const length = rng.int(Math.min(size - offset, 6 * 4096) + 1);
            const into = rng.next() < 0.5 ? Buffer.alloc(length + 2 * 4096) : undefined;
            ops.push(vols[rng.int(2)].read(offset, length, into).then((got) => assertBytes(got, u.content.subarray(offset, offset + length), `wave ${wave}: read of ${length} at ${offset} (seed ${seed})`, offset)));
          }
          await Promise.all(ops);
        }
      }));
  });
}

/** Reads a whole volume and checks it against the content it should hold. */
async function assertWhole(v: Volume, model: Buffer, what: string): Promise<void> {
  assertBytes(await v.read(0, model.length), model, what);
}
