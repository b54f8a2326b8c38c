import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createApiServer } from '../../src/api/index.ts';
import type { ApiServer } from '../../src/api/index.ts';
import { Store } from '../../src/engine/index.ts';

const MiB = 1024 * 1024;

interface Reply {
  status: number;
  headers: Headers;
  body: any;
  bytes: Buffer;
}

async function call(base: string, method: string, path: string, opts: { json?: unknown; bytes?: Buffer; contentType?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  let body: string | Buffer | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.bytes !== undefined) {
    headers['content-type'] = opts.contentType ?? 'application/octet-stream';
    body = opts.bytes;
  }
  const res = await fetch(base + path, { method, headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  const isJson = (res.headers.get('content-type') ?? '').startsWith('application/json');
  return { status: res.status, headers: res.headers, body: isJson && bytes.length > 0 ? JSON.parse(bytes.toString()) : undefined, bytes };
}

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.body?.error?.code, code, JSON.stringify(r.body));
  assert.ok(r.body.error.message.length > 0);
}

describe('api disk data', () => {
  let dir: string;
  let store: Store;
  let server: ApiServer;
  let base: string;
  /** A second server over the same store with tiny limits, to see paging and the range limit. */
  let small: ApiServer;
  let smallBase: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-api-data-'));
    store = await Store.open({ dir: join(dir, 'store'), maintenanceIntervalMs: 0 });
    server = createApiServer({ store });
    base = `http://127.0.0.1:${(await server.listen({ host: '127.0.0.1', port: 0 })).port}/api/v1`;
    small = createApiServer({ store, extentsMax: 2, rangeBytesMax: 64 * 1024 });
    smallBase = `http://127.0.0.1:${(await small.listen({ host: '127.0.0.1', port: 0 })).port}/api/v1`;
  });

  after(async () => {
    await server?.close();
    await small?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('extents of a snapshot: data, zero and hole runs covering the disk exactly', async () => {
    await store.createDisk('alloc', 8 * MiB);
    const v = store.openVolume('alloc');
    await v.write(1 * MiB, randomBytes(64 * 1024));
    await v.write(3 * MiB, randomBytes(128 * 1024));
    await v.writeZeroes(3 * MiB, 128 * 1024, { mayTrim: false }); // zeroes over data stay allocated
    await v.write(5 * MiB, randomBytes(4096));
    await store.createSnapshot('alloc', 's1');
    await v.write(7 * MiB, randomBytes(4096)); // after the snapshot: not in it
    v.close();
    const r = await call(base, 'GET', '/disks/alloc/snapshots/s1/extents');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, {
      sizeBytes: 8 * MiB,
      since: null,
      offset: 0,
      length: 8 * MiB,
      next: null,
      extents: [
        { offset: 0, length: 1 * MiB, type: 'hole' },
        { offset: 1 * MiB, length: 64 * 1024, type: 'data' },
        { offset: 1 * MiB + 64 * 1024, length: 2 * MiB - 64 * 1024, type: 'hole' },
        { offset: 3 * MiB, length: 128 * 1024, type: 'zero' },
        { offset: 3 * MiB + 128 * 1024, length: 2 * MiB - 128 * 1024, type: 'hole' },
        { offset: 5 * MiB, length: 4096, type: 'data' },
        { offset: 5 * MiB + 4096, length: 3 * MiB - 4096, type: 'hole' },
      ],
    });
    const part = await call(base, 'GET', `/disks/alloc/snapshots/s1/extents?offset=${MiB + 4096}&length=8192`);
    assert.deepEqual(part.body.extents, [{ offset: MiB + 4096, length: 8192, type: 'data' }]);

    // Paging: a reply stops near its extent limit and says where to go on; the pages add up.
    const pages: any[] = [];
    let next: number | null = 0;
    for (let i = 0; next !== null && i < 100; i++) {
      const p: Reply = await call(smallBase, 'GET', `/disks/alloc/snapshots/s1/extents?offset=${next}`);
      assert.equal(p.status, 200);
      assert.equal(p.body.offset, next);
      pages.push(...p.body.extents);
      next = p.body.next;
    }
    assert.equal(next, null);
    const merged: any[] = [];
    for (const e of pages) {
      const last = merged.at(-1);
      if (last && last.type === e.type && last.offset + last.length === e.offset) last.length += e.length;
      else merged.push({ ...e });
    }
    assert.deepEqual(merged, r.body.extents);
  });

  test('extents since another snapshot: the changed runs at sector granularity, deletions too', async () => {
    await store.createDisk('cbt', 4 * MiB);
    const v = store.openVolume('cbt');
    await v.write(0, randomBytes(2 * MiB));
    await store.createSnapshot('cbt', 'base');
    await v.write(512 * 1024 + 1024, randomBytes(512)); // one sector inside a block
    await v.trim(MiB, 64 * 1024);
    await v.write(3 * MiB, randomBytes(8192)); // a hole before, data now
    await store.createSnapshot('cbt', 'next');
    await v.write(2 * MiB, randomBytes(4096)); // after 'next': not reported
    v.close();
    const r = await call(base, 'GET', '/disks/cbt/snapshots/next/extents?since=base');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.since, 'base');
    assert.deepEqual(r.body.extents.filter((e: any) => e.type === 'changed'), [
      { offset: 512 * 1024 + 1024, length: 512, type: 'changed' },
      { offset: MiB, length: 64 * 1024, type: 'changed' },
      { offset: 3 * MiB, length: 8192, type: 'changed' },
    ]);
    assert.equal(r.body.extents.reduce((n: number, e: any) => n + e.length, 0), 4 * MiB, 'runs cover the disk');
    const same = await call(base, 'GET', '/disks/cbt/snapshots/base/extents?since=base');
    assert.deepEqual(same.body.extents, [{ offset: 0, length: 4 * MiB, type: 'unchanged' }]);
  });

  test('extents refuse bad queries, unknown objects and ranges past the end', async () => {
    await store.createDisk('exbad', MiB);
    await store.createSnapshot('exbad', 's');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?sinse=x'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?offset=abc'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?offset=-1'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?offset=1&offset=2'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?since='), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', `/disks/exbad/snapshots/s/extents?offset=${MiB + 512}`), 400, 'OUT_OF_RANGE');
    assertError(await call(base, 'GET', `/disks/exbad/snapshots/s/extents?offset=512&length=${MiB}`), 400, 'OUT_OF_RANGE');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/nope/extents'), 404, 'NOT_FOUND');
    assertError(await call(base, 'GET', '/disks/nope/snapshots/s/extents'), 404, 'NOT_FOUND');
    assertError(await call(base, 'GET', '/disks/exbad/snapshots/s/extents?since=nope'), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/exbad/snapshots/s/extents'), 405, 'METHOD_NOT_ALLOWED');
  });

  test('data of a snapshot by range: exact bytes, unaligned, across pieces, as at the snapshot', async () => {
    await store.createDisk('read', 8 * MiB);
    const content = randomBytes(8 * MiB);
    const v = store.openVolume('read');
    await v.write(0, content);
    await store.createSnapshot('read', 's');
    await v.write(0, randomBytes(8 * MiB)); // the head moves on; the snapshot does not
    v.close();
    for (const [offset, length] of [[0, 4096], [12345, 3 * MiB + 777], [0, 8 * MiB], [8 * MiB - 1, 1], [100, 0]]) {
      const r = await call(base, 'GET', `/disks/read/snapshots/s/data?offset=${offset}&length=${length}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), 'application/octet-stream');
      assert.equal(r.headers.get('content-length'), String(length));
      assert.ok(r.bytes.equals(content.subarray(offset, offset + length)), `bytes ${offset}+${length}`);
    }
    // The snapshot is open while it is read, so it cannot be deleted under a reader; afterwards it can.
    assert.deepEqual(store.listSnapshots('read').map((s) => s.name), ['s']);
  });

  test('concurrent data reads through reused reply buffers: every reply has its own bytes', async () => {
    await store.createDisk('many', 32 * MiB);
    const content = randomBytes(32 * MiB);
    const v = store.openVolume('many');
    await v.write(0, content);
    v.close();
    await store.createSnapshot('many', 's');
    // 16 readers of 8 MiB at once: a buffer given back before the socket took its bytes would be
    // refilled by another reply's read, and some reply would carry another range's bytes.
    for (let round = 0; round < 3; round++) {
      const ranges = Array.from({ length: 16 }, (_, i) => [((i * 5 + round) % 24) * MiB, 8 * MiB]);
      const replies = await Promise.all(ranges.map(([o, n]) => call(base, 'GET', `/disks/many/snapshots/s/data?offset=${o}&length=${n}`)));
      replies.forEach((r, i) => assert.ok(r.bytes.equals(content.subarray(ranges[i][0], ranges[i][0] + ranges[i][1])), `round ${round} reply ${i}`));
    }
  });

  test('data reads refuse a range over the limit, past the end, bad queries and unknown objects', async () => {
    await store.createDisk('rbad', MiB);
    await store.createSnapshot('rbad', 's');
    assertError(await call(smallBase, 'GET', `/disks/rbad/snapshots/s/data?offset=0&length=${64 * 1024 + 1}`), 400, 'BAD_REQUEST');
    assert.equal((await call(smallBase, 'GET', `/disks/rbad/snapshots/s/data?offset=0&length=${64 * 1024}`)).status, 200);
    assertError(await call(base, 'GET', `/disks/rbad/snapshots/s/data?offset=${MiB - 10}&length=11`), 400, 'OUT_OF_RANGE');
    assertError(await call(base, 'GET', '/disks/rbad/snapshots/s/data?offset=0'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/rbad/snapshots/s/data?length=1'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/rbad/snapshots/s/data?offset=0&length=1e3'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'GET', '/disks/rbad/snapshots/x/data?offset=0&length=1'), 404, 'NOT_FOUND');
    // A refused read leaves no open handle behind: the snapshot can be deleted.
    await store.deleteSnapshot('rbad', 's');
  });

  test('PUT data writes a disk, trim deallocates; bad bodies are refused', async () => {
    await store.createDisk('wr', 4 * MiB);
    const data = randomBytes(MiB + 4096);
    assert.equal((await call(base, 'PUT', `/disks/wr/data?offset=${MiB - 512}`, { bytes: data })).status, 204);
    const v = store.openVolume('wr');
    assert.ok((await v.read(MiB - 512, data.length)).equals(data));
    assert.equal((await call(base, 'POST', '/disks/wr/trim', { json: { offset: MiB, length: 65536 } })).status, 204);
    assert.ok((await v.read(MiB, 65536)).equals(Buffer.alloc(65536)));
    const st = await v.blockStatus(MiB, 65536);
    assert.deepEqual(st.map((e) => e.hole), [true]);
    v.close();

    assertError(await call(base, 'PUT', '/disks/wr/data?offset=0', { bytes: Buffer.alloc(10), contentType: 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assertError(await call(smallBase, 'PUT', '/disks/wr/data?offset=0', { bytes: Buffer.alloc(64 * 1024 + 1) }), 413, 'BODY_TOO_LARGE');
    assertError(await call(base, 'PUT', `/disks/wr/data?offset=${4 * MiB - 100}`, { bytes: Buffer.alloc(101) }), 400, 'OUT_OF_RANGE');
    assertError(await call(base, 'PUT', '/disks/wr/data', { bytes: Buffer.alloc(1) }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'PUT', '/disks/nope/data?offset=0', { bytes: Buffer.alloc(1) }), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/wr/trim', { json: { offset: 0 } }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/disks/wr/trim', { json: { offset: 4 * MiB, length: 512 } }), 400, 'OUT_OF_RANGE');

    assert.equal((await call(base, 'POST', '/disks/wr/flush')).status, 204);
    assertError(await call(base, 'POST', '/disks/nope/flush'), 404, 'NOT_FOUND');
    // A chunked body has no Content-Length: refused.
    const chunked = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const url = new URL(base + '/disks/wr/data?offset=0');
      const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c) => (text += c)).on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end(Buffer.alloc(100));
    });
    assert.equal(chunked.status, 400);
    assert.equal(chunked.body.error.code, 'BAD_REQUEST');
    // The disk is not held open by any refused request.
    await store.deleteDisk('wr');
  });

  test('POST /snapshots snapshots a group at one seq; refusals create nothing', async () => {
    await store.createDisk('g1', MiB);
    await store.createDisk('g2', MiB);
    const r = await call(base, 'POST', '/snapshots', { json: { name: 'both', disks: ['g2', 'g1'] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.deepEqual(r.body.map((s: any) => `${s.disk}@${s.name}`), ['g2@both', 'g1@both']);
    assert.equal(r.body[0].seq, r.body[1].seq);

    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: ['g1', 'g1'] } }), 400, 'INVALID');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: ['g1', 'nope'] } }), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: [] } }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: 'g1' } }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: ['g1', 2] } }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x', disks: Array(257).fill('g1') } }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'x/y', disks: ['g1'] } }), 400, 'INVALID');
    await store.createSnapshot('g2', 'taken');
    assertError(await call(base, 'POST', '/snapshots', { json: { name: 'taken', disks: ['g1', 'g2'] } }), 409, 'EXISTS');
    assert.deepEqual(store.listSnapshots('g1').map((s) => s.name), ['both']);
    assert.deepEqual(store.listSnapshots('g2').map((s) => s.name), ['both', 'taken']);
  });
});
