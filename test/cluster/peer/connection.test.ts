/**
 * Peer connections over real TCP on 127.0.0.1: the handshake (accepted, refused either way, no
 * common version, versions negotiated down for rolling upgrades), peers that send garbage or
 * nothing, multiplexed requests answered out of order, backpressure under the in-flight limits,
 * errors travelling back with their code, a lost connection rejecting what is pending, and the
 * pool (connect on demand, reconnect, a bounded connect).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterError, ClusterErrorCode } from '../../../src/cluster/errors.ts';
import { PeerConnection, type PeerClock } from '../../../src/cluster/peer/connection.ts';
import { decodeBody, encodeBody, encodeFrame } from '../../../src/cluster/peer/codec.ts';
import { AUTH_ID, HELLO_ID } from '../../../src/cluster/peer/handshake.ts';
import { resolvePeerLimits } from '../../../src/cluster/peer/limits.ts';
import { FrameParser, type Frame } from '../../../src/cluster/peer/parser.ts';
import { PeerPool, type PeerPoolOptions } from '../../../src/cluster/peer/pool.ts';
import { PeerServer, type PeerServerOptions } from '../../../src/cluster/peer/server.ts';
import { Flag, MessageType } from '../../../src/cluster/peer/spec.ts';
import type { OpBody, ReadSnapBody } from '../../../src/cluster/peer/messages.ts';
import { Logger } from '../../../src/observe/index.ts';
import { Rng, seededBytes, testSeed } from '../../helpers/index.ts';

const SECRET = Buffer.alloc(32, 7);
const CLUSTER = 'c-test';
const SIZE = 1 << 30;
const scoped = { disk: 'vm1', epoch: 4, rev: 1, hlc: 1n };

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

async function startServer(opts: Partial<PeerServerOptions> = {}): Promise<{ server: PeerServer; port: number }> {
  const server = new PeerServer({ node: 'n2', cluster: CLUSTER, secret: SECRET, disks: (name) => (name === 'vm1' ? { sizeBytes: SIZE, epoch: 4, head: true } : null), ...opts });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => server.close());
  return { server, port };
}

function pool(port: number, opts: Partial<PeerPoolOptions> = {}): PeerPool {
  const p = new PeerPool({ node: 'n1', cluster: CLUSTER, secret: SECRET, resolve: (node) => (node === 'n2' ? `127.0.0.1:${port}` : null), ...opts });
  closers.push(() => p.close());
  return p;
}

/** A clock that counts; remembers the highest value it was told of. */
function counter(start: bigint): PeerClock & { seen: bigint } {
  let value = start;
  return {
    seen: 0n,
    now() {
      return ++value;
    },
    update(remote) {
      this.seen = remote > this.seen ? remote : this.seen;
      if (remote > value) value = remote;
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ClusterError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ClusterError, `a ClusterError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

/** A raw TCP client speaking frames by hand, for peers that misbehave. */
async function rawClient(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.on('error', () => {});
  const parser = new FrameParser();
  const frames: Frame[] = [];
  let wake: (() => void) | null = null;
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => {
    parser.push(chunk);
    for (let f = parser.next(); f !== null; f = parser.next()) frames.push(f);
    wake?.();
  });
  socket.once('close', () => wake?.());
  return {
    socket,
    closed,
    send: (buffers: Buffer[]) => socket.write(Buffer.concat(buffers)),
    async next(): Promise<Frame | null> {
      while (frames.length === 0 && !socket.destroyed) await new Promise<void>((r) => (wake = r));
      return frames.shift() ?? null;
    },
  };
}

const hello = (versions: [number, number], cluster = CLUSTER) => encodeFrame(MessageType.HELLO, 0, HELLO_ID, encodeBody({ versions, node: 'raw', cluster, nonce: randomBytes(32) }));

test('handshake: peers of one cluster connect at version 2 and PING with the HLC', async () => {
  const serverClock = counter(1000n);
  const clientClock = counter(5n);
  const { server, port } = await startServer({ clock: serverClock });
  const p = pool(port, { clock: clientClock });
  const conn = await p.connection('n2');
  assert.equal(conn.version, 2);
  assert.equal(conn.remoteNode, 'n2');
  const { rttMs, hlc } = await conn.ping();
  assert.ok(rttMs >= 0 && rttMs < 5000);
  assert.ok(hlc !== null && hlc > 1000n, 'PONG carries the server clock');
  assert.equal(clientClock.seen, hlc, 'the client learned it');
  assert.ok(serverClock.seen > 5n, 'the server learned the client clock');
  assert.ok(typeof (await p.ping('n2')) === 'number');
  assert.equal([...server.connections][0].remoteNode, 'n1');
});

test('handshake: a wrong secret is refused either way', async () => {
  const { port } = await startServer();
  // The client checks the server's proof first: a server without our secret is refused by us.
  await rejectsWith(pool(port, { secret: Buffer.alloc(32, 8) }).connection('n2'), ClusterErrorCode.AUTH_FAILED, /n2 did not prove it holds the cluster secret/);
  // A client that cannot prove the secret is refused by the server.
  const raw = await rawClient(port);
  raw.send(hello([1, 2]));
  const reply = await raw.next();
  assert.equal(reply!.header.flags, Flag.RESPONSE);
  raw.send(encodeFrame(MessageType.AUTH, 0, AUTH_ID, encodeBody({ proof: randomBytes(32) })));
  const refusal = (await raw.next())!;
  assert.equal(refusal.header.flags, Flag.RESPONSE | Flag.ERROR);
  assert.equal(decodeBody(refusal.header.flags, refusal.body).meta!.code, ClusterErrorCode.AUTH_FAILED);
  await raw.closed;
  // A missing proof as well.
  const raw2 = await rawClient(port);
  raw2.send(hello([1, 2]));
  await raw2.next();
  raw2.send(encodeFrame(MessageType.AUTH, 0, AUTH_ID, encodeBody({})));
  assert.equal(decodeBody(0, (await raw2.next())!.body).meta!.code, ClusterErrorCode.AUTH_FAILED);
  await raw2.closed;
});

test('handshake: another cluster is refused', async () => {
  const { port } = await startServer();
  await rejectsWith(pool(port, { cluster: 'other' }).connection('n2'), ClusterErrorCode.AUTH_FAILED, /Node n1 is of cluster other, not c-test/);
});

test('handshake: no common version is answered and closed', async () => {
  const { port } = await startServer({ protocolMax: 1 });
  const attempt = PeerConnection.connect({
    host: '127.0.0.1',
    port,
    connectTimeoutMs: 2000,
    identity: { node: 'n9', cluster: CLUSTER, secret: SECRET, versions: [2, 3] },
    limits: resolvePeerLimits(),
    log: Logger.silent(),
  });
  await rejectsWith(attempt, ClusterErrorCode.NO_COMMON_VERSION, /No common protocol version: n2 speaks 1\.\.1, n9 2\.\.3/);
});

test('handshake: a version 1 node and a version 2 node speak 1, PING without the HLC', async () => {
  for (const [serverMax, clientMax] of [
    [1, undefined],
    [undefined, 1],
  ] as const) {
    const { port } = await startServer({ protocolMax: serverMax, clock: counter(100n) });
    const clock = counter(1n);
    const conn = await pool(port, { protocolMax: clientMax, clock }).connection('n2');
    assert.equal(conn.version, 1);
    const pong = await conn.ping();
    assert.equal(pong.hlc, null, 'no HLC on version 1');
    assert.equal(clock.seen, 0n);
    // Sent by hand, an HLC on version 1 is refused by the gate.
    await rejectsWith(conn.request(MessageType.PING, { hlc: 5n }), ClusterErrorCode.PROTOCOL, /PING carries hlc, which protocol version 1 does not have/);
  }
  assert.throws(() => new PeerServer({ node: 'x', cluster: CLUSTER, secret: SECRET, protocolMax: 3 }), /Peer protocol max 3 is outside the versions spoken, 1\.\.2/);
});

test('a peer sending garbage gets an error frame and is closed; the server goes on', async (t) => {
  const rng = new Rng(testSeed(t));
  const { port } = await startServer();
  for (let i = 0; i < 5; i++) {
    const raw = await rawClient(port);
    raw.socket.write(seededBytes(rng.int(2 ** 31), 'garbage', rng.range(32, 2000)));
    const frame = await raw.next();
    if (frame !== null) {
      assert.equal(frame.header.flags, Flag.ERROR);
      assert.equal(decodeBody(frame.header.flags, frame.body).meta!.code, ClusterErrorCode.PROTOCOL);
    }
    await raw.closed;
  }
  // Any frame but HELLO before the handshake ends is refused.
  const raw = await rawClient(port);
  raw.send(encodeFrame(MessageType.PING, 0, 1n, encodeBody({})));
  assert.match(String(decodeBody(Flag.ERROR, (await raw.next())!.body).meta!.message), /Expected HELLO in the handshake/);
  await raw.closed;
  // After the handshake, garbage closes the connection; its pending requests reject.
  const conn = await pool(port).connection('n2');
  assert.equal((await conn.ping()).hlc, null);
});

test('handshake deadline: a silent peer is cut off, a silent server fails the connect', async () => {
  const { port } = await startServer({ limits: { handshakeTimeoutMs: 200 } });
  const raw = await rawClient(port);
  const start = Date.now();
  await raw.closed;
  assert.ok(Date.now() - start < 3000, 'closed by the deadline');

  const mute = net.createServer(() => {});
  await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
  const mutePort = (mute.address() as net.AddressInfo).port;
  closers.push(async () => {
    mute.close();
  });
  await rejectsWith(pool(mutePort, { limits: { handshakeTimeoutMs: 200 } }).connection('n2'), ClusterErrorCode.PEER_UNAVAILABLE, /handshake not finished within 200 ms/);
});

test('requests are multiplexed: answers out of order reach their requests', async (t) => {
  const rng = new Rng(testSeed(t));
  const { server, port } = await startServer();
  const completed: number[] = [];
  server.handle(MessageType.READ_SNAP, async (req) => {
    const { offset, length } = req.body;
    // Later requests answer first.
    await sleep(Math.max(0, 60 - offset / 1000));
    completed.push(offset);
    return { payload: seededBytes(offset, 'snap', length) };
  });
  const conn = await pool(port).connection('n2');
  const offsets = Array.from({ length: 30 }, (_, i) => i * 2000);
  const replies = await Promise.all(
    offsets.map((offset) => conn.request(MessageType.READ_SNAP, { ...scoped, snapshot: 's', offset, length: rng.range(1, 70000) } satisfies ReadSnapBody).then((r) => ({ offset, r }))),
  );
  for (const { offset, r } of replies) {
    assert.equal(r.payload!.toString('hex'), seededBytes(offset, 'snap', r.payload!.length).toString('hex'));
  }
  assert.notDeepEqual(completed, offsets, 'answered out of order');
});

test('errors travel back with their code, rule and current epoch', async () => {
  const { server, port } = await startServer();
  server.handle(MessageType.OP, async () => {
    throw new ClusterError(ClusterErrorCode.STALE_EPOCH, 'Disk vm1 is at epoch 9', { current: 9 });
  });
  const p = pool(port);
  const op: OpBody = { ...scoped, id: [4, 1], prev: null, restart: true, kind: 'flush' };
  const err = await rejectsWith(p.request('n2', MessageType.OP, op), ClusterErrorCode.STALE_EPOCH, /Disk vm1 is at epoch 9/);
  assert.equal(err.current, 9);
  const gate = await rejectsWith(p.request('n2', MessageType.OP, { ...op, epoch: 3 }), ClusterErrorCode.STALE_EPOCH, /^OP FLUSH for disk vm1 at epoch 3, older than ours 4$/);
  assert.equal(gate.current, 4);
  await rejectsWith(
    p.request('n2', MessageType.IO, { ...scoped, kind: 'write', offset: SIZE - 1, fua: false }, Buffer.alloc(2)),
    ClusterErrorCode.INVALID,
    /^IO WRITE past the end: offset\+length 1073741825 > size 1073741824$/,
  );
  await rejectsWith(p.request('n2', MessageType.EXTENTS, { ...scoped, snapshot: 's', since: null, offset: 0, length: 1 }), ClusterErrorCode.PROTOCOL, /EXTENTS is not served by n2/);
  await rejectsWith(p.request('n2', MessageType.OP, { ...op, kind: 'snapshot', name: 'x'.repeat(5000) } as OpBody), ClusterErrorCode.LIMIT, /exceed 4096/);
  // The connection is still good.
  assert.equal(typeof (await p.ping('n2')), 'number');
});

test('backpressure: a sender stays within the in-flight limits of a slow handler', async () => {
  const { server, port } = await startServer({ limits: { inflightRequestsMax: 4 } });
  let running = 0;
  let runningMax = 0;
  server.handle(MessageType.OP, async (req) => {
    running++;
    runningMax = Math.max(runningMax, running);
    await sleep(10);
    running--;
    return { body: { disk: req.body.disk, epoch: req.body.epoch, id: req.body.id } };
  });
  const conn = await pool(port, { limits: { inflightRequestsMax: 4, inflightBytesMax: 10_000 } }).connection('n2');
  let outMax = 0;
  const sample = setInterval(() => (outMax = Math.max(outMax, conn.outgoing.requests)), 1);
  const ops = Array.from({ length: 40 }, (_, i) =>
    conn.request(MessageType.OP, { ...scoped, id: [4, i + 1], prev: null, restart: true, kind: 'write', offset: i * 4000, fua: false }, Buffer.alloc(i < 20 ? 100 : 4000, i)),
  );
  assert.ok(conn.outgoing.requests <= 4 && conn.outgoing.queued >= 36, `${JSON.stringify(conn.outgoing)}: the rest waits`);
  const acks = await Promise.all(ops);
  clearInterval(sample);
  acks.forEach((a, i) => assert.deepEqual(a.body.id, [4, i + 1]));
  assert.ok(runningMax <= 4, `handler concurrency ${runningMax}`);
  assert.ok(outMax <= 4, `sender in flight ${outMax}`);
  assert.ok(runningMax >= 2, 'requests did overlap');
  assert.deepEqual(conn.outgoing, { requests: 0, bytes: 0, queued: 0 });
});

test('backpressure: bytes in flight bound the sender too', async () => {
  const { server, port } = await startServer();
  let running = 0;
  let runningMax = 0;
  server.handle(MessageType.OP, async (req) => {
    running++;
    runningMax = Math.max(runningMax, running);
    await sleep(5);
    running--;
    return { body: { disk: req.body.disk, epoch: req.body.epoch, id: req.body.id } };
  });
  const conn = await pool(port, { limits: { inflightBytesMax: 10_000 } }).connection('n2');
  await Promise.all(Array.from({ length: 12 }, (_, i) => conn.request(MessageType.OP, { ...scoped, id: [4, i + 1], prev: null, restart: true, kind: 'write', offset: 0, fua: false }, Buffer.alloc(4000))));
  assert.ok(runningMax <= 2, `two 4000-byte writes fit in 10000 bytes, not three (ran ${runningMax})`);
});

test('a lost connection rejects every pending and waiting request', async () => {
  const { server, port } = await startServer();
  let started = 0;
  server.handle(MessageType.OP, () => {
    started++;
    return new Promise(() => {});
  });
  const p = pool(port, { limits: { inflightRequestsMax: 2 } });
  const conn = await p.connection('n2');
  const ops = Array.from({ length: 5 }, (_, i) => conn.request(MessageType.OP, { ...scoped, id: [4, i + 1], prev: null, restart: true, kind: 'flush' }));
  const settled = Promise.allSettled(ops);
  while (started < 2) await sleep(5);
  for (const c of server.connections) await c.close();
  for (const r of await settled) {
    assert.equal(r.status, 'rejected');
    assert.equal((r.reason as ClusterError).code, ClusterErrorCode.PEER_UNAVAILABLE);
  }
  await rejectsWith(conn.request(MessageType.PING, {}), ClusterErrorCode.PEER_UNAVAILABLE);
  // The pool connects again on demand.
  await conn.closed;
  const again = await p.connection('n2');
  assert.notEqual(again, conn);
  assert.equal(typeof (await p.ping('n2')), 'number');
});

test('the pool: unknown nodes, unreachable ones, the wrong node at an address', async () => {
  const { port } = await startServer();
  const gone = net.createServer();
  await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
  const gonePort = (gone.address() as net.AddressInfo).port;
  await new Promise((resolve) => gone.close(resolve));
  const p = pool(port, {
    connectTimeoutMs: 300,
    resolve: (node) => ({ n2: `127.0.0.1:${port}`, n3: `127.0.0.1:${port}`, n4: `127.0.0.1:${gonePort}`, n5: '10.255.255.1:9' })[node] ?? null,
  });
  await rejectsWith(p.connection('n9'), ClusterErrorCode.PEER_UNAVAILABLE, /No peer address known for node n9/);
  await rejectsWith(p.connection('n3'), ClusterErrorCode.PEER_UNAVAILABLE, /Reached node n2 where n3 was expected/);
  await rejectsWith(p.connection('n4'), ClusterErrorCode.PEER_UNAVAILABLE, /Cannot connect to n4 at 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
  const start = Date.now();
  await rejectsWith(p.connection('n5'), ClusterErrorCode.PEER_UNAVAILABLE, /n5 at 10\.255\.255\.1:9/);
  assert.ok(Date.now() - start < 2000, 'bounded by the connect timeout');
  const [a, b] = await Promise.all([p.connection('n2'), p.connection('n2')]);
  assert.equal(a, b, 'one connection per node');
  assert.deepEqual(Object.keys(await p.pingAll(['n2', 'n9'])), ['n2']);
  await p.close();
  await rejectsWith(p.connection('n2'), ClusterErrorCode.CLOSED);
});

test('backpressure: a receiver behind stops reading a sender that ignores its limits', async () => {
  const { server, port } = await startServer({ limits: { inflightRequestsMax: 2 } });
  let running = 0;
  let runningMax = 0;
  server.handle(MessageType.OP, async (req) => {
    running++;
    runningMax = Math.max(runningMax, running);
    await sleep(5);
    running--;
    return { body: { disk: req.body.disk, epoch: req.body.epoch, id: req.body.id } };
  });
  // This sender allows itself 100 in flight; the receiver takes 2 at a time all the same.
  const conn = await pool(port, { limits: { inflightRequestsMax: 100 } }).connection('n2');
  const acks = await Promise.all(Array.from({ length: 30 }, (_, i) => conn.request(MessageType.OP, { ...scoped, id: [4, i + 1], prev: null, restart: true, kind: 'flush' })));
  assert.equal(acks.length, 30);
  assert.ok(runningMax <= 2, `receiver ran ${runningMax} at once`);
  for (const c of server.connections) assert.deepEqual(c.incoming, { requests: 0, bytes: 0 });
});
