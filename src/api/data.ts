/**
 * Disk data over HTTP, for backup clients (docs/api.md, "Disk data"): a snapshot's extents
 * (allocation, or changes since another snapshot), its bytes by range, writes and trims of a
 * disk for restores, and consistency-group snapshots.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import type { Volume } from '../engine/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import { BufferPool } from '../flow/index.ts';
import { drained, readOctetsBody } from './http.ts';
import type { Reply, RequestContext } from './route.ts';
import { checkQuery } from './validate.ts';
import { snapshotWire } from './to-wire.ts';
import type { ExtentRun, ExtentsReply } from './client/wire.ts';
import { atHead, checkSnapshotName } from './at-head.ts';

/** Disks one consistency group may hold. */
export const groupDisksMax = 256;
/** The engine is asked about this much of a disk at a time, so a reply stops near its extent limit. */
const extentWindowBytes = 1 << 30;
/** A data reply is read from the engine and sent in pieces of this size, one read ahead. */
const pieceBytes = 1 << 20;

/** Opens `disk@snap` (or the head) for one request, through the node's counting when it has one; the caller closes it. */
function openVolume(ctx: RequestContext, disk: string, snap: string | null): Volume {
  return ctx.openVolume(disk, snap);
}

/** Checks [offset, offset + length) against a volume's size. */
function checkRange(vol: Volume, offset: number, length: number): void {
  if (offset + length > vol.sizeBytes) {
    throw new ApiError(ApiErrorCode.OUT_OF_RANGE, `Range ${offset}+${length} is past the end of ${vol.snapshot === null ? vol.disk : `${vol.disk}@${vol.snapshot}`} (${vol.sizeBytes} bytes)`);
  }
}

/**
 * The runs of [offset, offset + length) of `vol` as the extents route types them: allocation
 * (`data`, `zero`, `hole`), or with `since` `changed` / `unchanged` (a backup run by the node reads
 * them this way too).
 */
export async function extentRunsOf(vol: Volume, offset: number, length: number, since?: string): Promise<ExtentRun[]> {
  if (since !== undefined) return (await vol.changedSince(since, offset, length)).map((e) => ({ offset: e.offset, length: e.length, type: e.changed ? 'changed' : 'unchanged' }));
  return (await vol.blockStatus(offset, length)).map((e) => ({ offset: e.offset, length: e.length, type: !e.zero ? 'data' : e.hole ? 'hole' : 'zero' }));
}

/** GET /disks/{name}/snapshots/{snap}/extents[?since=SNAP][&offset=N][&length=N] */
export async function readExtents(p: Record<string, string>, _b: unknown, ctx: RequestContext): Promise<Reply> {
  const q = checkQuery(ctx.query, { since: { type: 'string', required: false }, offset: { type: 'bytes', required: false }, length: { type: 'bytes', required: false } });
  const vol = openVolume(ctx, p.name, p.snap);
  try {
    const sizeBytes = vol.sizeBytes;
    const offset = q.offset ?? 0;
    if (offset > sizeBytes) checkRange(vol, offset, 0);
    const length = q.length ?? sizeBytes - offset;
    checkRange(vol, offset, length);
    if (q.since !== undefined && !ctx.store.listSnapshots(p.name).some((s) => s.name === q.since)) {
      throw new ApiError(ApiErrorCode.NOT_FOUND, `Disk "${p.name}" has no snapshot named "${q.since}"`);
    }
    const end = offset + length;
    const extents: ExtentRun[] = [];
    const push = (from: number, n: number, type: ExtentRun['type']) => {
      const last = extents.at(-1);
      if (last !== undefined && last.type === type && last.offset + last.length === from) last.length += n;
      else extents.push({ offset: from, length: n, type });
    };
    let at = offset;
    while (at < end && extents.length < ctx.extentsMax) {
      const n = Math.min(extentWindowBytes - (at % extentWindowBytes), end - at);
      let covered = at;
      for (const e of await extentRunsOf(vol, at, n, q.since)) {
        // The reply promises runs covering the range exactly: a gap or an overlap would tell a
        // backup client that data is a hole, or unchanged, where it is not.
        assert.ok(e.offset === covered && e.length > 0, `the engine returned a run [${e.offset}, +${e.length}) where one at ${covered} was due`);
        covered += e.length;
        push(e.offset, e.length, e.type);
      }
      assert.equal(covered, at + n, 'the engine\'s runs cover the window asked for');
      at += n;
    }
    const body: ExtentsReply = { sizeBytes, since: q.since ?? null, offset, length: at - offset, extents, next: at < end ? at : null };
    return { status: 200, body };
  } finally {
    vol.close();
  }
}

/** GET /disks/{name}/snapshots/{snap}/data?offset=N&length=N: the bytes, streamed. */
export async function readSnapshotData(p: Record<string, string>, _b: unknown, ctx: RequestContext): Promise<Reply> {
  const q = checkQuery(ctx.query, { offset: { type: 'bytes', required: true }, length: { type: 'bytes', required: true } });
  if (q.length > ctx.rangeBytesMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Length ${q.length} is over the limit of ${ctx.rangeBytesMax} bytes per request`);
  const vol = openVolume(ctx, p.name, p.snap);
  try {
    checkRange(vol, q.offset, q.length);
  } catch (err) {
    vol.close();
    throw err;
  }
  return {
    status: 200,
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(q.length), 'cache-control': 'no-store' },
    async stream(res: ServerResponse) {
      try {
        await streamRange(vol, q.offset, q.length, res);
      } finally {
        vol.close();
      }
    },
  };
}

/**
 * Reply buffers of data reads, reused: a fresh megabyte per piece made the node collect garbage
 * for external memory about as often as it read (as in the NBD server). A buffer goes back once
 * the socket has taken its bytes.
 */
const replyPool = new BufferPool({ pooledBytesMax: 32 << 20 });

/** Sends [offset, offset + length) of `vol` in pieces, reading the next piece while one is sent. */
async function streamRange(vol: Volume, offset: number, length: number, res: ServerResponse): Promise<void> {
  const end = offset + length;
  const readPiece = async (at: number) => {
    const n = Math.min(pieceBytes, end - at);
    const buf = replyPool.take(n);
    try {
      return { buf, piece: await vol.read(at, n, buf) };
    } catch (err) {
      replyPool.give(buf);
      throw err;
    }
  };
  let at = offset;
  let next = length > 0 ? readPiece(at) : null;
  while (next !== null) {
    const { buf, piece } = await next;
    // The reply promised `length` bytes in its Content-Length: a short piece would shift every
    // byte after it to the wrong offset of the client's copy.
    assert.equal(piece.length, Math.min(pieceBytes, end - at), 'the engine read returns the length asked for');
    at += piece.length;
    next = at < end ? readPiece(at) : null;
    // A read that fails while the previous piece is sent must not go unhandled.
    next?.catch(() => {});
    if (res.destroyed) {
      // The client went away: nothing left to send it.
      replyPool.give(buf);
      return;
    }
    // Given back from the write's callback, when the socket is done with the bytes (or failed).
    if (!res.write(piece, () => replyPool.give(buf)) && !(await drained(res))) return;
  }
  res.end();
}

/** PUT /disks/{name}/data?offset=N with an application/octet-stream body: writes it to the disk. */
export async function writeDiskData(p: Record<string, string>, _b: unknown, ctx: RequestContext): Promise<Reply> {
  const q = checkQuery(ctx.query, { offset: { type: 'bytes', required: true } });
  let vol: Volume;
  try {
    vol = openVolume(ctx, p.name, null);
  } catch (err) {
    ctx.req.resume();
    throw err;
  }
  try {
    const data = await readOctetsBody(ctx.req, ctx.rangeBytesMax);
    checkRange(vol, q.offset, data.length);
    // readOctetsBody answers exactly Content-Length bytes or fails; fewer would leave stale bytes
    // on the disk where the client believes its data went.
    assert.equal(data.length, Number(ctx.req.headers['content-length']), 'a write has the whole body the client sent');
    await vol.write(q.offset, data);
    return { status: 204 };
  } finally {
    vol.close();
  }
}

/** POST /disks/{name}/trim {offset, length}: deallocates; the range reads as zeroes. */
export async function trimDisk(p: Record<string, string>, b: { offset: number; length: number }, ctx: RequestContext): Promise<Reply> {
  const vol = openVolume(ctx, p.name, null);
  try {
    checkRange(vol, b.offset, b.length);
    await vol.trim(b.offset, b.length);
    return { status: 204 };
  } finally {
    vol.close();
  }
}

/** POST /disks/{name}/flush: everything written so far becomes durable. */
export async function flushDisk(p: Record<string, string>, _b: unknown, ctx: RequestContext): Promise<Reply> {
  const vol = openVolume(ctx, p.name, null);
  try {
    await vol.flush();
    return { status: 204 };
  } finally {
    vol.close();
  }
}

/**
 * POST /snapshots {name, disks}: one snapshot of every disk at the same instant. In a cluster it
 * runs at the node that heads every disk (here, or asked of that node), through each disk's
 * chain (docs/cluster.md, "Group snapshots"); disks with different heads are refused.
 */
export async function snapshotGroup(_p: Record<string, string>, b: { name: string; disks: string[] }, ctx: RequestContext): Promise<Reply> {
  if (b.disks.length === 0 || b.disks.length > groupDisksMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field 'disks' must name 1 to ${groupDisksMax} disks`);
  const r = ctx.cluster;
  if (r === null) return { status: 201, body: (await ctx.store.createSnapshots(b.disks, b.name)).map(snapshotWire) };
  checkSnapshotName(ctx, b.name);
  r.groupHead(b.disks);
  return atHead(ctx, b.disks[0], async () => ({ status: 201, body: (await r.snapshotGroup(b.disks, b.name)).map(snapshotWire) }), (head) => head.snapshotGroup({ name: b.name, disks: b.disks }), 201);
}
