/**
 * A data mover thread: hashes, compresses, seals, opens and checks blobs and packs so that the
 * main thread only moves bytes. It answers the WorkerPool's requests through serveTasks
 * (src/flow); buffers travel as transferred ArrayBuffers where possible.
 */
import { serveTasks } from '../flow/index.ts';
import { blobId, openBlob, openBlobInto, seal, sealBlob, sha256, type Keys } from './crypto.ts';
import { BackupErrorCode } from './errors.ts';
import { encodePackEntries, headerLengthBytes, type PackEntry } from './format.ts';
import { parsePackTail } from './pack.ts';
import type { WorkerInit, WorkerRequest } from './pool.ts';

/** The repository's keys: the pool's first message (it may start the thread before it has them). */
let keys: Keys = { encKey: Buffer.alloc(0), idKey: Buffer.alloc(0) };

function buf(u8: Uint8Array): Buffer {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

/** Checks a whole pack: its hash, header and every blob. Faults are returned, not thrown. */
function checkPack(pack: Buffer, packIdHex: string): { hashOk: boolean; entries: PackEntry[] | null; badBlobs: { index: number; message: string }[]; headerError?: string } {
  const hashOk = sha256(pack).toString('hex') === packIdHex;
  let entries: PackEntry[];
  try {
    entries = parsePackTail(keys, pack, pack.length, packIdHex);
  } catch (err) {
    return { hashOk, entries: null, badBlobs: [], headerError: (err as Error).message };
  }
  const badBlobs: { index: number; message: string }[] = [];
  let offset = 0;
  entries.forEach((e, index) => {
    try {
      openBlob(keys, pack.subarray(offset, offset + e.storedLength), e, `Blob ${e.id.toString('hex')} in pack ${packIdHex}`);
    } catch (err) {
      badBlobs.push({ index, message: (err as Error).message });
    }
    offset += e.storedLength;
  });
  return { hashOk, entries, badBlobs };
}

function handle(msg: WorkerRequest): unknown {
  switch (msg.op) {
    case 'hashAt':
      return { id: blobId(keys.idKey, Buffer.from(msg.memory, msg.offset, msg.length)) };
    case 'sealAt':
      return sealBlob(keys.encKey, Buffer.from(msg.memory, msg.offset, msg.length));
    case 'hashSealAt': {
      const plain = Buffer.from(msg.memory, msg.offset, msg.length);
      return { ...sealBlob(keys.encKey, plain), id: blobId(keys.idKey, plain) };
    }
    case 'seal': {
      const plain = buf(msg.plain);
      const s = sealBlob(keys.encKey, plain);
      return { ...s, id: msg.withId ? blobId(keys.idKey, plain) : undefined };
    }
    case 'open':
      return { plain: openBlob(keys, buf(msg.sealed), { flags: msg.flags, plainLength: msg.plainLength, id: buf(msg.id) }, msg.what) };
    case 'openMany': {
      // Blobs back to back in one range read: open each, return plaintexts in order.
      const data = buf(msg.data);
      return {
        plains: msg.blobs.map((b) => openBlob(keys, data.subarray(b.offset, b.offset + b.storedLength), { flags: b.flags, plainLength: b.plainLength, id: buf(b.id) }, b.what)),
      };
    }
    case 'openManyInto': {
      // The same, each plaintext opened into its slot of shared memory; returns their lengths.
      const data = buf(msg.data);
      return {
        lengths: msg.blobs.map((b, i) =>
          openBlobInto(keys, data.subarray(b.offset, b.offset + b.storedLength), { flags: b.flags, plainLength: b.plainLength, id: buf(b.id) }, b.what, Buffer.from(msg.memory, msg.offsets[i], msg.slotBytes)),
        ),
      };
    }
    case 'packTrailer': {
      const header = seal(keys.encKey, encodePackEntries(msg.entries.map((e) => ({ ...e, id: buf(e.id) }))));
      const trailer = Buffer.allocUnsafeSlow(header.length + headerLengthBytes);
      header.copy(trailer, 0);
      trailer.writeUInt32LE(header.length, header.length);
      return trailer;
    }
    case 'checkPack':
      return checkPack(buf(msg.pack), msg.packIdHex);
  }
}

serveTasks<WorkerRequest, WorkerInit>({
  init(k) {
    keys = { encKey: Buffer.from(k.encKey), idKey: Buffer.from(k.idKey) };
  },
  handle,
  // An error without a code came from opening damaged data (a library's plain Error).
  codeOfUncoded: BackupErrorCode.CORRUPT,
});
