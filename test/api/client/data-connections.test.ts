/**
 * The node data connections (src/api/client/data-connections.ts) and NodeData over them: bodies read
 * straight into the caller's buffer from a node:http server (as the node's API is), replies of
 * every framing the API uses, a request the node closed the connection under sent again, and
 * servers that misbehave (garbage, too many bytes, endless headers, silence, a closed port), each
 * one clear ClientError that leaves the pool usable.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { NodeData, type ExtentRun } from '../../../src/api/client/index.ts';
import { DataConnections, headBytesMax, smallBodyBytesMax } from '../../../src/api/client/data-connections.ts';

async function listen(server: Server | NetServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function stop(server: Server | NetServer, sockets: Set<Socket> = new Set()): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => server.close(resolve));
}

test('data connections: bodies into the caller buffer, JSON, chunked and empty replies, errors with the node message', async () => {
  const disk = randomBytes(8 << 20);
  const written = Buffer.alloc(1 << 20);
  const seen: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    seen.push(`${req.method} ${url.pathname}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (url.pathname.endsWith('/data') && req.method === 'GET') {
        const offset = Number(url.searchParams.get('offset'));
        const length = Number(url.searchParams.get('length'));
        if (offset + length > disk.length) {
          res.writeHead(416, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'OUT_OF_RANGE', message: `range ${offset}+${length} is past the end` } }));
          return;
        }
        res.writeHead(200, { 'content-length': String(length) });
        // In pieces, as the node streams a range.
        for (let at = 0; at < length; at += 100_000) res.write(disk.subarray(offset + at, offset + Math.min(length, at + 100_000)));
        res.end();
        return;
      }
      if (url.pathname.endsWith('/data') && req.method === 'PUT') {
        Buffer.concat(chunks).copy(written, Number(url.searchParams.get('offset')));
        res.writeHead(204).end();
        return;
      }
      if (url.pathname.endsWith('/extents')) {
        // No content-length: node:http sends it chunked.
        const offset = Number(url.searchParams.get('offset'));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(JSON.stringify({ extents: [{ offset, length: 4096, type: 'data' }], next: offset === 0 ? 4096 : null }).slice(0, 10));
        res.end(JSON.stringify({ extents: [{ offset, length: 4096, type: 'data' }], next: offset === 0 ? 4096 : null }).slice(10));
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not here');
    });
  });
  const url = await listen(server);
  const data = new NodeData(url, { connectionsMax: 3 });
  try {
    // Reads of every size, 8 at once over 3 connections, bodies split over many socket reads.
    const shared = Buffer.from(new SharedArrayBuffer(8 << 20));
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => data.read('d', 's', i << 20, shared.subarray(i << 20, (i + 1) << 20))),
    );
    assert.ok(shared.equals(disk));
    const small = Buffer.alloc(1);
    await data.read('d', 's', 12345, small);
    assert.equal(small[0], disk[12345]);
    await data.read('d', 's', 0, Buffer.alloc(0));
    // One request into several buffers (consecutive chunks), sizes odd and even, some empty; the
    // first bytes come with the reply's head, so they are spread over the buffers as well.
    const parts = [7, 0, 65_536, 1, 300_001, 0, 4096].map((n) => Buffer.alloc(n));
    const before = seen.length;
    await data.readMany('d', 's', 777, parts);
    assert.equal(seen.length, before + 1, 'one request');
    assert.ok(Buffer.concat(parts).equals(disk.subarray(777, 777 + 7 + 65_536 + 1 + 300_001 + 4096)));
    // Over the largest range of one request: a read per buffer.
    const large = [Buffer.alloc(5 << 20), Buffer.alloc(3 << 20), Buffer.alloc(9 << 20)];
    await assert.rejects(data.readMany('d', 's', 0, large), { code: 'CLIENT_REFUSED', status: 416 }, 'past the 8 MiB disk');
    await data.readMany('d', 's', 0, large.slice(0, 2));
    assert.ok(Buffer.concat(large.slice(0, 2)).equals(disk));
    // A write, then the chunked JSON of the extents, page by page.
    const piece = randomBytes(300_000);
    await data.write('d', 4096, piece);
    assert.ok(written.subarray(4096, 4096 + piece.length).equals(piece));
    const extents: number[] = [];
    await data.extents('d', 's', (e) => extents.push(e.offset));
    assert.deepEqual(extents, [0, 4096]);
    // Error replies: the node's message, or the status when there is none.
    await assert.rejects(data.read('d', 's', (8 << 20) - 10, Buffer.alloc(20)), { code: 'CLIENT_REFUSED', status: 416, nodeCode: 'OUT_OF_RANGE', message: `range ${(8 << 20) - 10}+20 is past the end` });
    await assert.rejects(data.flush('d'), { code: 'CLIENT_REFUSED', status: 404, nodeCode: null, message: 'the node answered HTTP 404 to POST /api/v1/disks/d/flush' });
    // The pool still works after them.
    const again = Buffer.alloc(4096);
    await data.read('d', 's', 4096 * 7, again);
    assert.ok(again.equals(disk.subarray(4096 * 7, 4096 * 8)));
    assert.ok(seen.includes('PUT /api/v1/disks/d/data'));
  } finally {
    data.close();
    await stop(server);
  }
});

test('data connections: a request lost with a reused connection is sent again, on a new one; one lost with a new connection is not', async () => {
  // Each connection answers its first request and is closed under its second, unanswered, as
  // when the node times an idle connection out just as a request goes out on it.
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let head = '';
    let served = 0;
    s.on('data', (c) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const path = head.split(' ')[1];
      head = '';
      if (path === '/first-lost' || served++ > 0) s.destroy();
      else s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
    });
  });
  const url = await listen(server);
  const pool = new DataConnections(url, { connectionsMax: 1 });
  try {
    for (let i = 0; i < 3; i++) {
      const b = Buffer.alloc(5);
      assert.equal((await pool.request({ method: 'GET', path: '/x', into: b })).status, 200);
      assert.equal(b.toString(), 'hello');
    }
    assert.equal(connections, 3);
    // A new connection closed before it answers is the node failing: no second try.
    const fresh = new DataConnections(url);
    await assert.rejects(fresh.request({ method: 'GET', path: '/first-lost' }), { code: 'CLIENT_LOST', message: /it closed the connection/ });
    fresh.close();
    assert.equal(connections, 4);
  } finally {
    pool.close();
    await stop(server, sockets);
  }
});

test('data connections: garbage, too many bytes, endless headers, a cut reply, silence and a closed port are one ClientError each', async () => {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let head = '';
    s.on('data', (c) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const path = head.split(' ')[1];
      head = '';
      if (path === '/garbage') s.write('SSH-2.0-OpenSSH\r\n\r\n');
      else if (path === '/long') s.write('HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n12345678');
      else if (path === '/extra') s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n12345678');
      else if (path === '/headers') s.write('HTTP/1.1 200 OK\r\n' + 'x-filler: y\r\n'.repeat(headBytesMax / 10));
      else if (path === '/cut') s.end('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n12');
      else if (path === '/nolength') s.write('HTTP/1.1 200 OK\r\n\r\n1234');
      else if (path === '/huge') s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${smallBodyBytesMax + 1}\r\n\r\n`);
      else if (path === '/silent') return;
      else s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd');
    });
  });
  const url = await listen(server);
  const pool = new DataConnections(url, { connectionsMax: 2, idleTimeoutMs: 300 });
  const get = (path: string, n = 4) => pool.request({ method: 'GET', path, into: Buffer.alloc(n) });
  try {
    const failed = { code: 'CLIENT_BAD_REPLY' };
    await assert.rejects(get('/garbage'), { ...failed, message: /GET \/garbage: it sent something other than an HTTP\/1.1 reply/ });
    await assert.rejects(get('/long'), { ...failed, message: /it sent 8 bytes where 4 were asked/ });
    await assert.rejects(get('/extra'), { ...failed, message: /it sent more bytes than its reply holds/ });
    await assert.rejects(get('/headers'), { ...failed, message: new RegExp(`it sent over ${headBytesMax} bytes of headers`) });
    await assert.rejects(get('/cut'), { code: 'CLIENT_LOST', message: /it closed the connection/ });
    await assert.rejects(get('/nolength'), { ...failed, message: /it sent a body without a length/ });
    await assert.rejects(pool.request({ method: 'GET', path: '/huge' }), { ...failed, message: new RegExp(`it sent a reply of ${smallBodyBytesMax + 1} bytes, over the ${smallBodyBytesMax} expected`) });
    await assert.rejects(get('/silent'), { code: 'CLIENT_TIMEOUT', message: /it did not answer within 0.3 s/ });
    // Each failure closed its connection only: the pool goes on.
    const ok = Buffer.alloc(4);
    await pool.request({ method: 'GET', path: '/ok', into: ok });
    assert.equal(ok.toString(), 'abcd');
  } finally {
    pool.close();
    await stop(server, sockets);
  }
  await assert.rejects(new DataConnections(url).request({ method: 'GET', path: '/ok' }), { code: 'CLIENT_UNREACHABLE', message: /cannot reach the Tessera node at .*: ECONNREFUSED/ });
  assert.throws(() => new DataConnections('https://127.0.0.1:1'), { code: 'CLIENT_BAD_URL' });
});
