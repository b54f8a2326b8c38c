/**
 * The receiver's partial state of one transfer (docs/transfer.md, "Resume and integrity"), under
 * `DIR/.tessera-transfer/`: `<id>.part` (the data at its offsets), `<id>.chunks` (a journal, one
 * 40-byte record per chunk written and verified: u32 chunk, SHA-256, u32 CRC-32 of the 36 bytes
 * before) and `<id>.json` (name, size, chunk size). Nothing here is ever named like a received
 * file: the final name appears only by rename, after the whole file was verified.
 */
import { timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm, statfs, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from '../native/index.ts';
import { digestFile } from './digest.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import type { OpenRequest } from './gate.ts';

/** The hidden directory of partial state inside the receiving directory. */
export const STATE_DIR = '.tessera-transfer';
const RECORD_BYTES = 40;
/** Room kept free beyond the bytes still to come, for the journal and the file system's own. */
const SPACE_MARGIN_BYTES = 1024 * 1024;

/** A write error as the sender should see it: ENOSPC and EDQUOT as TRANSFER_NO_SPACE. */
export function writeError(err: unknown, what: string): TransferError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new TransferError(TransferErrorCode.NO_SPACE, `The receiver's disk is full: cannot write ${what}`, { cause: err });
  return new TransferError(TransferErrorCode.IO, `The receiver cannot write ${what}: ${(err as Error).message}`, { cause: err });
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Decodes a journal: the valid records, in order; a torn or damaged record ends it. */
export function decodeJournal(buf: Buffer, chunks: number): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 0; at + RECORD_BYTES <= buf.length; at += RECORD_BYTES) {
    const rec = buf.subarray(at, at + RECORD_BYTES);
    if (crc32(rec.subarray(0, 36)) >>> 0 !== rec.readUInt32LE(36)) break;
    const chunk = rec.readUInt32LE(0);
    if (chunk >= chunks) break;
    out.set(chunk, Buffer.from(rec.subarray(4, 36)));
  }
  return out;
}

/** One journal record. */
export function encodeRecord(chunk: number, sha256: Buffer): Buffer {
  const rec = Buffer.allocUnsafe(RECORD_BYTES);
  rec.writeUInt32LE(chunk, 0);
  sha256.copy(rec, 4);
  rec.writeUInt32LE(crc32(rec.subarray(0, 36)) >>> 0, 36);
  return rec;
}

/** A transfer's partial file and journal, open for writing. */
export class PartialFile {
  readonly req: OpenRequest;
  readonly dir: string;
  readonly #part: string;
  readonly #journal: string;
  readonly #meta: string;
  #data: FileHandle;
  #log: FileHandle;
  /** The chunks held, verified, with their SHA-256. */
  readonly held: Map<number, Buffer>;

  private constructor(dir: string, req: OpenRequest, data: FileHandle, log: FileHandle, held: Map<number, Buffer>) {
    this.dir = dir;
    this.req = req;
    const base = join(dir, STATE_DIR, req.transfer);
    this.#part = `${base}.part`;
    this.#journal = `${base}.chunks`;
    this.#meta = `${base}.json`;
    this.#data = data;
    this.#log = log;
    this.held = held;
  }

  /**
   * Opens the partial state of `req` in `dir`: a resume keeps the journal's chunks whose bytes
   * still hash as recorded; a new transfer (or one whose state does not match) starts empty.
   * Refuses with TRANSFER_NO_SPACE when the file system lacks the bytes still to come.
   */
  static async open(dir: string, req: OpenRequest): Promise<PartialFile> {
    const stateDir = join(dir, STATE_DIR);
    const base = join(stateDir, req.transfer);
    let held = new Map<number, Buffer>();
    try {
      await mkdir(stateDir, { recursive: true });
      const meta = JSON.parse(await readFile(`${base}.json`, 'utf8').catch(() => 'null')) as { name?: string; sizeBytes?: number; chunkBytes?: number } | null;
      const matches = meta !== null && meta.name === req.name && meta.sizeBytes === req.sizeBytes && meta.chunkBytes === req.chunkBytes;
      if (matches) {
        const listed = decodeJournal(await readFile(`${base}.chunks`).catch(() => Buffer.alloc(0)), req.chunks);
        if (listed.size > 0) {
          const digest = await digestFile(`${base}.part`, req.sizeBytes, req.chunkBytes).catch(() => null);
          if (digest !== null) for (const [chunk, sha] of listed) if (timingSafeEqual(digest.chunks[chunk], sha)) held.set(chunk, sha);
        }
      } else held = new Map();
      let heldBytes = 0;
      for (const chunk of held.keys()) heldBytes += Math.min(req.chunkBytes, req.sizeBytes - chunk * req.chunkBytes);
      const fs = await statfs(dir);
      const free = Number(fs.bavail) * Number(fs.bsize);
      const needed = req.sizeBytes - heldBytes;
      if (free < needed + SPACE_MARGIN_BYTES) {
        throw new TransferError(TransferErrorCode.NO_SPACE, `The receiver's disk is full: ${req.name} needs ${needed} more bytes, ${free} are free`);
      }
      if (!matches) await writeFile(`${base}.json`, JSON.stringify({ name: req.name, sizeBytes: req.sizeBytes, chunkBytes: req.chunkBytes }));
      // The journal is rewritten with the verified chunks only, so a damaged tail is not kept.
      await writeFile(`${base}.chunks`, Buffer.concat([...held].map(([chunk, sha]) => encodeRecord(chunk, sha))));
      const data = await open(`${base}.part`, matches ? constants.O_RDWR | constants.O_CREAT : constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o644);
      await data.truncate(req.sizeBytes);
      const log = await open(`${base}.chunks`, 'a');
      return new PartialFile(dir, req, data, log, held);
    } catch (err) {
      if (err instanceof TransferError) throw err;
      throw writeError(err, `the partial state of ${req.name}`);
    }
  }

  /** Bytes of the chunks held. */
  get heldBytes(): number {
    let n = 0;
    for (const chunk of this.held.keys()) n += Math.min(this.req.chunkBytes, this.req.sizeBytes - chunk * this.req.chunkBytes);
    return n;
  }

  /** The bitmap of chunks held, as OPENED carries it. */
  bitmap(): Buffer {
    const map = Buffer.alloc(Math.ceil(this.req.chunks / 8));
    for (const chunk of this.held.keys()) map[chunk >> 3] |= 1 << (chunk & 7);
    return map;
  }

  /** Writes `data` at `offset` of the partial file, whole. */
  async write(offset: number, data: Buffer): Promise<void> {
    try {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await this.#data.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw writeError(err, this.req.name);
    }
  }

  /** Records a chunk written and verified. */
  async record(chunk: number, sha256: Buffer): Promise<void> {
    try {
      await this.#log.write(encodeRecord(chunk, sha256));
    } catch (err) {
      throw writeError(err, `the journal of ${this.req.name}`);
    }
    this.held.set(chunk, sha256);
  }

  /**
   * Makes the file durable, checks it read back against `sha256` and the recorded chunk hashes,
   * then renames it into place and drops the partial state. A mismatch drops the chunks that
   * differ from the journal and throws TRANSFER_INTEGRITY.
   */
  async finish(sha256: Buffer): Promise<void> {
    const { req } = this;
    try {
      await this.#data.sync();
    } catch (err) {
      throw writeError(err, req.name);
    }
    const digest = await digestFile(this.#part, req.sizeBytes, req.chunkBytes);
    const bad = [...this.held].filter(([chunk, sha]) => !digest.chunks[chunk].equals(sha)).map(([chunk]) => chunk);
    if (bad.length > 0) {
      for (const chunk of bad) this.held.delete(chunk);
      await writeFile(this.#journal, Buffer.concat([...this.held].map(([c, s]) => encodeRecord(c, s))));
      throw new TransferError(TransferErrorCode.INTEGRITY, `${req.name}: chunks ${bad.slice(0, 8).join(', ')} read back differently from what was written`);
    }
    if (!digest.whole.equals(sha256)) {
      throw new TransferError(TransferErrorCode.SOURCE_CHANGED, `${req.name}: every chunk matched but the whole file's SHA-256 does not: the source changed while it was read`);
    }
    await this.close();
    try {
      await rename(this.#part, join(this.dir, req.name));
      await fsyncDir(this.dir);
    } catch (err) {
      throw writeError(err, req.name);
    }
    await rm(this.#journal, { force: true });
    await rm(this.#meta, { force: true });
  }

  /** Closes the files; the partial state stays for a resume. */
  async close(): Promise<void> {
    await Promise.allSettled([this.#data.close(), this.#log.close()]);
  }
}
