import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createApiServer } from '../../src/api/index.ts';
import { listRoutes } from '../../src/api/routes.ts';
import { openApiDocument } from '../../src/api/openapi.ts';
import type { ApiServer, ApiServerOptions } from '../../src/api/index.ts';
import { EngineError, EngineErrorCode, Store } from '../../src/engine/index.ts';
import { cleanup, startPortChild } from '../helpers/index.ts';
import type { EngineErrorCodeValue } from '../../src/engine/index.ts';
import { Logger } from '../../src/observe/index.ts';

const MiB = 1024 * 1024;

/** A reply as a test sees it. */
interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

/** An API server on an ephemeral port, and a way to call it. */
async function startApi(opts: ApiServerOptions): Promise<{ server: ApiServer; base: string }> {
  const server = createApiServer(opts);
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, base: `http://127.0.0.1:${port}/api/v1` };
}

async function call(base: string, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Reply> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
}

/** Checks a reply is an error with `status` and `code` in the API's JSON error shape. */
function assertError(reply: Reply, status: number, code: string): void {
  assert.equal(reply.status, status, JSON.stringify(reply.body));
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
  assert.deepEqual(Object.keys(reply.body), ['error']);
  assert.equal(reply.body.error.code, code);
  assert.equal(typeof reply.body.error.message, 'string');
  assert.ok(reply.body.error.message.length > 0);
}

describe('api on a real store', () => {
  let dir: string;
  let store: Store;
  let server: ApiServer;
  let base: string;
  const logged: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-api-'));
    store = await Store.open({ dir: join(dir, 'store') });
    ({ server, base } = await startApi({
      store,
      log: Logger.create({ level: 'debug', write: (line) => logged.push(line) }),
      nodeFacts: () => ({ version: '9.9.9', dataDir: dir, nbd: { tcp: { host: '127.0.0.1', port: 10809 }, socket: '/tmp/x.sock', connections: 0 } }),
    }));
  });

  after(async () => {
    await server?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('POST /disks creates a disk: 201, its DiskInfo and a Location header', async () => {
    const r = await call(base, 'POST', '/disks', { name: 'create1', sizeBytes: 4 * MiB });
    assert.equal(r.status, 201);
    assert.equal(r.body.name, 'create1');
    assert.equal(r.body.sizeBytes, 4 * MiB);
    assert.deepEqual(r.body.snapshots, []);
    assert.equal(r.body.origin, null);
    assert.equal(r.headers.get('location'), '/api/v1/disks/create1');
    assert.equal(store.getDisk('create1').sizeBytes, 4 * MiB);
  });

  test('GET /disks lists every disk as a JSON array of DiskInfo', async () => {
    await call(base, 'POST', '/disks', { name: 'list1', sizeBytes: MiB });
    await call(base, 'POST', '/disks', { name: 'list2', sizeBytes: 2 * MiB });
    const r = await call(base, 'GET', '/disks');
    assert.equal(r.status, 200);
    assert.ok(Array.isArray(r.body));
    const byName = new Map(r.body.map((d: any) => [d.name, d]));
    assert.equal((byName.get('list1') as any).sizeBytes, MiB);
    assert.equal((byName.get('list2') as any).sizeBytes, 2 * MiB);
    assert.deepEqual(r.body.map((d: any) => d.name).sort(), store.listDisks().map((d) => d.name).sort());
  });

  test('GET /disks/{name} describes one disk', async () => {
    await call(base, 'POST', '/disks', { name: 'get1', sizeBytes: MiB });
    const r = await call(base, 'GET', '/disks/get1');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, store.getDisk('get1'));
  });

  test('POST /disks with a taken name answers 409 EXISTS', async () => {
    await call(base, 'POST', '/disks', { name: 'dup1', sizeBytes: MiB });
    assertError(await call(base, 'POST', '/disks', { name: 'dup1', sizeBytes: MiB }), 409, 'EXISTS');
  });

  test('POST /disks with a size that is not a multiple of 512 answers 400 INVALID', async () => {
    assertError(await call(base, 'POST', '/disks', { name: 'odd1', sizeBytes: 1000 }), 400, 'INVALID');
    assert.equal(store.listDisks().some((d) => d.name === 'odd1'), false);
  });

  test('unknown disks and snapshots answer 404 NOT_FOUND on every route that names them', async () => {
    await call(base, 'POST', '/disks', { name: 'nf1', sizeBytes: MiB });
    assertError(await call(base, 'GET', '/disks/nope'), 404, 'NOT_FOUND');
    assertError(await call(base, 'DELETE', '/disks/nope'), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/nope/resize', { sizeBytes: MiB }), 404, 'NOT_FOUND');
    assertError(await call(base, 'PATCH', '/disks/nope', { sizeBytes: MiB }), 404, 'NOT_FOUND');
    assertError(await call(base, 'GET', '/disks/nope/snapshots'), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/nope/snapshots', { name: 's' }), 404, 'NOT_FOUND');
    assertError(await call(base, 'DELETE', '/disks/nf1/snapshots/nope'), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/nf1/snapshots/nope/revert'), 404, 'NOT_FOUND');
    assertError(await call(base, 'POST', '/disks/nf1/clone', { snapshot: 'nope', name: 'nf2' }), 404, 'NOT_FOUND');
  });

  test('DELETE /disks/{name} answers 204 with no body and the disk is gone', async () => {
    await call(base, 'POST', '/disks', { name: 'del1', sizeBytes: MiB });
    const r = await call(base, 'DELETE', '/disks/del1');
    assert.equal(r.status, 204);
    assert.equal(r.body, undefined);
    assertError(await call(base, 'GET', '/disks/del1'), 404, 'NOT_FOUND');
  });

  test('POST /disks/{name}/resize and PATCH /disks/{name} both resize', async () => {
    await call(base, 'POST', '/disks', { name: 'rs1', sizeBytes: MiB });
    const grown = await call(base, 'POST', '/disks/rs1/resize', { sizeBytes: 8 * MiB });
    assert.equal(grown.status, 200);
    assert.equal(grown.body.sizeBytes, 8 * MiB);
    const shrunk = await call(base, 'PATCH', '/disks/rs1', { sizeBytes: 2 * MiB });
    assert.equal(shrunk.status, 200);
    assert.equal(shrunk.body.sizeBytes, 2 * MiB);
    assert.equal(store.getDisk('rs1').sizeBytes, 2 * MiB);
  });

  test('snapshot routes create (201), list, revert (200) and delete (204) snapshots', async () => {
    await call(base, 'POST', '/disks', { name: 'sn1', sizeBytes: MiB });
    const vol = store.openVolume('sn1');
    await vol.write(0, Buffer.alloc(4096, 0xaa));
    vol.close();

    const created = await call(base, 'POST', '/disks/sn1/snapshots', { name: 'a' });
    assert.equal(created.status, 201);
    assert.equal(created.body.name, 'a');
    assert.equal(created.body.disk, 'sn1');
    assert.equal(created.headers.get('location'), '/api/v1/disks/sn1/snapshots/a');
    assertError(await call(base, 'POST', '/disks/sn1/snapshots', { name: 'a' }), 409, 'EXISTS');
    await call(base, 'POST', '/disks/sn1/snapshots', { name: 'b' });

    const listed = await call(base, 'GET', '/disks/sn1/snapshots');
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.map((s: any) => s.name), ['a', 'b']);

    const vol2 = store.openVolume('sn1');
    await vol2.write(0, Buffer.alloc(4096, 0xbb));
    vol2.close();
    const reverted = await call(base, 'POST', '/disks/sn1/snapshots/a/revert');
    assert.equal(reverted.status, 200);
    assert.equal(reverted.body.name, 'sn1');
    const vol3 = store.openVolume('sn1');
    assert.deepEqual(await vol3.read(0, 4096), Buffer.alloc(4096, 0xaa));
    vol3.close();

    const deleted = await call(base, 'DELETE', '/disks/sn1/snapshots/b');
    assert.equal(deleted.status, 204);
    assert.deepEqual(store.listSnapshots('sn1').map((s) => s.name), ['a']);
  });

  test('POST /disks/{name}/clone answers 201 with a new disk holding the snapshot', async () => {
    await call(base, 'POST', '/disks', { name: 'cl1', sizeBytes: MiB });
    const vol = store.openVolume('cl1');
    await vol.write(512, Buffer.alloc(512, 0x5c));
    vol.close();
    await call(base, 'POST', '/disks/cl1/snapshots', { name: 'gold' });
    const r = await call(base, 'POST', '/disks/cl1/clone', { snapshot: 'gold', name: 'cl2' });
    assert.equal(r.status, 201);
    assert.equal(r.body.name, 'cl2');
    assert.equal(r.body.origin, 'cl1@gold');
    assert.equal(r.body.sizeBytes, MiB);
    assert.equal(r.headers.get('location'), '/api/v1/disks/cl2');
    const clone = store.openVolume('cl2');
    assert.deepEqual(await clone.read(512, 512), Buffer.alloc(512, 0x5c));
    clone.close();
    assertError(await call(base, 'POST', '/disks/cl1/clone', { snapshot: 'gold', name: 'cl2' }), 409, 'EXISTS');
  });

  test('deleting a disk with an open volume on its head or a snapshot answers 409 IN_USE', async () => {
    await call(base, 'POST', '/disks', { name: 'busy1', sizeBytes: MiB });
    await call(base, 'POST', '/disks/busy1/snapshots', { name: 's' });
    for (const snap of [null, 's']) {
      const vol = store.openVolume('busy1', snap);
      try {
        const r = await call(base, 'DELETE', '/disks/busy1');
        assertError(r, 409, 'IN_USE');
        assert.match(r.body.error.message, /busy1/);
      } finally {
        vol.close();
      }
    }
    assert.equal((await call(base, 'DELETE', '/disks/busy1')).status, 204);
  });

  test('GET /node reports version, data dir, NBD endpoints and the store figures', async () => {
    const r = await call(base, 'GET', '/node');
    assert.equal(r.status, 200);
    assert.equal(r.body.version, '9.9.9');
    assert.equal(r.body.dataDir, dir);
    assert.deepEqual(r.body.nbd, { tcp: { host: '127.0.0.1', port: 10809 }, socket: '/tmp/x.sock', connections: 0 });
    assert.equal(r.body.api, base.replace(/\/api\/v1$/, ''));
    assert.equal(r.body.pid, process.pid);
    assert.equal(r.body.disks, store.listDisks().length);
    assert.deepEqual(Object.keys(r.body.stats).sort(), ['liveBytes', 'logBytes', 'segments']);
    for (const v of Object.values(r.body.stats)) assert.ok(Number.isSafeInteger(v));
  });

  test('POST /compact runs a compaction and answers its figures', async () => {
    const r = await call(base, 'POST', '/compact');
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys(r.body).sort(), ['bytesReclaimed', 'bytesRewritten', 'segmentsRemoved']);
    for (const v of Object.values(r.body)) assert.ok(Number.isSafeInteger(v) && (v as number) >= 0);
  });

  test('a malformed JSON body answers 400 BAD_REQUEST', async () => {
    assertError(await call(base, 'POST', '/disks', '{"name": "x",'), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/disks', ''), 400, 'BAD_REQUEST');
  });

  test('bodies with missing, unknown or mistyped fields answer 400 BAD_REQUEST and change nothing', async () => {
    const bad: unknown[] = [
      [],
      'null',
      '"x"',
      { name: 'bt1' },
      { sizeBytes: MiB },
      { name: 'bt1', sizeBytes: '1048576' },
      { name: 'bt1', sizeBytes: -512 },
      { name: 'bt1', sizeBytes: 1.5 },
      { name: 'bt1', sizeBytes: 2 ** 60 },
      { name: 1, sizeBytes: MiB },
      { name: 'bt1', sizeBytes: MiB, size: '1G' },
    ];
    for (const body of bad) {
      const r = await call(base, 'POST', '/disks', typeof body === 'string' ? body : JSON.stringify(body));
      assertError(r, 400, 'BAD_REQUEST');
    }
    assert.equal(store.listDisks().some((d) => d.name === 'bt1'), false);
    assertError(await call(base, 'POST', '/disks/nf1/clone', { snapshot: 5, name: 'x' }), 400, 'BAD_REQUEST');
    assertError(await call(base, 'POST', '/disks/nf1/snapshots', {}), 400, 'BAD_REQUEST');
  });

  test('a body that is not application/json answers 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    assertError(await call(base, 'POST', '/disks', '{"name":"ct1","sizeBytes":1048576}', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assertError(await call(base, 'POST', '/disks', 'name=ct1', 'application/x-www-form-urlencoded'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assert.equal(store.listDisks().some((d) => d.name === 'ct1'), false);
    // A charset parameter is fine.
    const ok = await call(base, 'POST', '/disks', '{"name":"ct2","sizeBytes":1048576}', 'application/json; charset=utf-8');
    assert.equal(ok.status, 201);
  });

  test('a body over 1 MiB answers 413 BODY_TOO_LARGE', async () => {
    const big = JSON.stringify({ name: 'x'.repeat(MiB + 1), sizeBytes: MiB });
    assertError(await call(base, 'POST', '/disks', big), 413, 'BODY_TOO_LARGE');
  });

  test('a chunked body over the limit answers 413 BODY_TOO_LARGE', async () => {
    const url = new URL(base + '/disks');
    const reply = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c) => (text += c)).on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      // No Content-Length: the server only learns the size while reading.
      for (let i = 0; i < 3; i++) req.write(Buffer.alloc(MiB / 2, 0x20));
      req.end();
    });
    assert.equal(reply.status, 413);
    assert.equal(reply.body.error.code, 'BODY_TOO_LARGE');
  });

  test('an unknown path answers 404 NO_ROUTE', async () => {
    for (const path of ['/nope', '/disks/a/b/c/d/e', '/', '/disks/']) {
      assertError(await call(base, 'GET', path), 404, 'NO_ROUTE');
    }
    const outside = await fetch(base.replace('/api/v1', '/other'));
    assert.equal(outside.status, 404);
    assert.equal(((await outside.json()) as any).error.code, 'NO_ROUTE');
  });

  test('a known path with the wrong method answers 405 METHOD_NOT_ALLOWED with an Allow header', async () => {
    const r = await call(base, 'PUT', '/disks');
    assertError(r, 405, 'METHOD_NOT_ALLOWED');
    assert.equal(r.headers.get('allow'), 'GET, POST');
    const r2 = await call(base, 'GET', '/compact');
    assertError(r2, 405, 'METHOD_NOT_ALLOWED');
    assert.equal(r2.headers.get('allow'), 'POST');
  });

  test('names are percent-decoded from the path', async () => {
    await call(base, 'POST', '/disks', { name: 'pct-1', sizeBytes: MiB });
    const r = await call(base, 'GET', '/disks/pct%2D1');
    assert.equal(r.status, 200);
    assert.equal(r.body.name, 'pct-1');
  });
});

describe('api on a store opened read-only', () => {
  test('every change answers 409 READ_ONLY saying the node runs read-only, before a body is read; reads, a flush, a scrub and GET /node work', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-api-ro-'));
    let store = await Store.open({ dir, maintenanceIntervalMs: 0 });
    await store.createDisk('d', MiB);
    await store.createSnapshot('d', 's');
    await store.close();
    store = await Store.open({ dir, readOnly: true });
    const { server, base } = await startApi({ store });
    try {
      const changes: [string, string, unknown][] = [
        ['POST', '/disks', { name: 'x', sizeBytes: MiB }],
        ['DELETE', '/disks/d', undefined],
        ['PATCH', '/disks/d', { sizeBytes: 2 * MiB }],
        ['POST', '/disks/d/resize', { sizeBytes: 2 * MiB }],
        ['POST', '/disks/d/clone', { snapshot: 's', name: 'c' }],
        ['POST', '/disks/d/snapshots', { name: 't' }],
        ['DELETE', '/disks/d/snapshots/s', undefined],
        ['POST', '/disks/d/snapshots/s/revert', undefined],
        ['POST', '/disks/d/trim', { offset: 0, length: 4096 }],
        ['POST', '/snapshots', { name: 'g', disks: ['d'] }],
        ['POST', '/compact', undefined],
        ['POST', '/backup-schedules', { disks: ['d'], repo: '/srv/b', passwordFile: '/etc/pw', everyMs: 3_600_000 }],
        ['DELETE', '/backup-schedules/0000abcd', undefined],
        ['POST', '/snapshot-schedules', { disk: 'd', everyMs: 3_600_000, keep: 1 }],
        ['DELETE', '/snapshot-schedules/0000abcd', undefined],
        // Refused before the body is looked at: even a malformed one gets 409.
        ['POST', '/disks', '{not json'],
      ];
      for (const [method, path, body] of changes) {
        const r = await call(base, method, path, body);
        assertError(r, 409, 'READ_ONLY');
        assert.equal(r.body.error.message, `The node runs read-only (tessera serve --read-only): ${method} /api/v1${path} would change it`);
      }
      const put = await call(base, 'PUT', '/disks/d/data?offset=0', 'x'.repeat(4096), 'application/octet-stream');
      assertError(put, 409, 'READ_ONLY');
      assert.equal((await call(base, 'POST', '/disks/d/flush')).status, 204);
      assert.equal((await call(base, 'POST', '/scrub', {})).status, 200);
      assert.equal((await call(base, 'GET', '/disks/d')).status, 200);
      assert.equal((await call(base, 'GET', '/disks/d/snapshots/s/extents')).status, 200);
      const node = await call(base, 'GET', '/node');
      assert.equal(node.body.readOnly, true);
      assert.deepEqual(store.listDisks().map((d) => d.name), ['d'], 'nothing changed');
    } finally {
      await server.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('api openapi document', () => {
  test('openapi.json names exactly the routes the router serves', () => {
    const served = listRoutes().map((r) => `${r.method} ${r.path}`).sort();
    const documented: string[] = [];
    for (const [path, item] of Object.entries(openApiDocument.paths)) {
      for (const method of Object.keys(item)) documented.push(`${method.toUpperCase()} ${path}`);
    }
    assert.deepEqual(documented.sort(), served);
  });

  test('openapi.json declares every path parameter of its templates', () => {
    for (const [path, item] of Object.entries(openApiDocument.paths)) {
      const inPath = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      for (const [method, op] of Object.entries(item)) {
        const declared = ((op as { parameters?: Array<{ name: string; in: string }> }).parameters ?? [])
          .filter((p) => p.in === 'path')
          .map((p) => p.name)
          .sort();
        assert.deepEqual(declared, inPath, `${method} ${path}`);
      }
    }
  });

  test('openapi.json has no dangling $ref', () => {
    const text = JSON.stringify(openApiDocument);
    for (const m of text.matchAll(/"\$ref":"#\/components\/(\w+)\/(\w+)"/g)) {
      const section = (openApiDocument.components as Record<string, Record<string, unknown>>)[m[1]];
      assert.ok(section && Object.hasOwn(section, m[2]), `dangling ${m[0]}`);
    }
  });

  test('GET /openapi.json serves the document', async () => {
    const stub = {} as unknown as Store;
    const { server, base } = await startApi({ store: stub });
    try {
      const r = await call(base, 'GET', '/openapi.json');
      assert.equal(r.status, 200);
      assert.equal(r.body.openapi, '3.1.0');
      assert.deepEqual(r.body, JSON.parse(JSON.stringify(openApiDocument)));
    } finally {
      await server.close();
    }
  });
});

describe('api error mapping', () => {
  const expected: Array<[EngineErrorCodeValue, number, string]> = [
    [EngineErrorCode.NOT_FOUND, 404, 'NOT_FOUND'],
    [EngineErrorCode.EXISTS, 409, 'EXISTS'],
    [EngineErrorCode.INVALID, 400, 'INVALID'],
    [EngineErrorCode.IN_USE, 409, 'IN_USE'],
    [EngineErrorCode.READ_ONLY, 409, 'READ_ONLY'],
    [EngineErrorCode.OUT_OF_RANGE, 400, 'OUT_OF_RANGE'],
    [EngineErrorCode.NO_SPACE, 507, 'NO_SPACE'],
    [EngineErrorCode.CORRUPT, 500, 'CORRUPT'],
    [EngineErrorCode.IO, 500, 'IO_ERROR'],
    [EngineErrorCode.CLOSED, 503, 'CLOSED'],
    [EngineErrorCode.ACCESS, 500, 'INTERNAL'],
  ];

  test('every engine error code maps to its HTTP status and wire code, message kept', async () => {
    assert.deepEqual(expected.map(([c]) => c).sort(), Object.values(EngineErrorCode).sort(), 'the table covers every engine code');
    let next: EngineError | null = null;
    const stub = {
      async createDisk() {
        throw next;
      },
    } as unknown as Store;
    const { server, base } = await startApi({ store: stub });
    try {
      for (const [engineCode, status, code] of expected) {
        next = new EngineError(engineCode, `Message of ${engineCode}`);
        const r = await call(base, 'POST', '/disks', { name: 'x', sizeBytes: 512 });
        assertError(r, status, code);
        assert.equal(r.body.error.message, `Message of ${engineCode}`);
      }
    } finally {
      await server.close();
    }
  });

  test('a failure of the world without a code of its own answers 500 INTERNAL with a generic message, is logged, and the server keeps serving', async () => {
    const logged: string[] = [];
    const stub = {
      listDisks(): never {
        // What fs gives for a drive that fails a read.
        throw Object.assign(new Error('EIO: i/o error, read secret detail'), { code: 'EIO', errno: -5, syscall: 'read' });
      },
      async compact() {
        return { segmentsRemoved: 1, bytesReclaimed: 2, bytesRewritten: 3 };
      },
    } as unknown as Store;
    const { server, base } = await startApi({ store: stub, log: Logger.create({ level: 'debug', write: (line) => logged.push(line) }) });
    try {
      const r = await call(base, 'GET', '/disks');
      assertError(r, 500, 'INTERNAL');
      assert.doesNotMatch(r.body.error.message, /secret/);
      assert.ok(logged.some((l) => l.includes('EIO: i/o error, read secret detail')), 'the cause is in the log');
      const after = await call(base, 'POST', '/compact');
      assert.equal(after.status, 200);
      assert.deepEqual(after.body, { segmentsRemoved: 1, bytesReclaimed: 2, bytesRewritten: 3 });
    } finally {
      await server.close();
    }
  });

  test('a bug in a handler is not answered: its stack is logged and the node crashes', async (t) => {
    t.after(cleanup);
    const { port, exited, stderr } = await startPortChild(new URL('./buggy-api.ts', import.meta.url).pathname);
    const outcome = await fetch(`http://127.0.0.1:${port}/api/v1/disks`).then(
      (res) => `answered ${res.status}`,
      (err: Error) => `failed: ${err.message}`,
    );
    const code = await exited;
    assert.equal(code, 1, stderr());
    assert.match(outcome, /^failed/, 'no reply, not even a 500');
    assert.match(stderr(), /ERROR api: bug: secret detail of a bug [^\n]*method=GET path=\/api\/v1\/disks[^\n]*\n\s+TypeError: secret detail of a bug\n\s+at /);
  });

  test('requests beyond the in-flight limit answer 503 BUSY', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const stub = {
      async compact() {
        entered();
        await gate;
        return { segmentsRemoved: 0, bytesReclaimed: 0, bytesRewritten: 0 };
      },
    } as unknown as Store;
    const { server, base } = await startApi({ store: stub, requestsInFlightMax: 1 });
    try {
      const first = call(base, 'POST', '/compact');
      await inside;
      assertError(await call(base, 'POST', '/compact'), 503, 'BUSY');
      release();
      assert.equal((await first).status, 200);
      assert.equal((await call(base, 'POST', '/compact')).status, 200);
    } finally {
      release();
      await server.close();
    }
  });

  test('close() resolves while a keep-alive client is connected', async () => {
    const stub = { listDisks: () => [] } as unknown as Store;
    const { server, base } = await startApi({ store: stub, closeGraceMs: 200 });
    assert.equal((await call(base, 'GET', '/disks')).status, 200);
    const started = Date.now();
    await server.close();
    assert.ok(Date.now() - started < 5000);
    await assert.rejects(fetch(base + '/disks'));
  });
});
