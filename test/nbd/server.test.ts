/** NbdServer lifecycle and limits: listening, closing, in-flight limits, connection limits. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeOptionRequest, encodeRequestHeader } from '../../src/nbd/codec.ts';
import { resolveLimits } from '../../src/nbd/limits.ts';
import { Command, Option, Size } from '../../src/nbd/protocol.ts';
import { NbdError, NbdErrorCode, NbdServer } from '../../src/nbd/index.ts';
import { DEFAULT_NBD_LIMITS } from '../../src/nbd/limits.ts';
import { cleanup, makeTempDir, Rng, testSeed } from '../helpers/index.ts';
import { useReadBuffer } from '../../src/util/socket-read.ts';
import { greet, NbdClient, Wire } from './client.ts';
import { gate, startMemoryServer, until } from './harness.ts';
import { MemoryStore } from './memory-volume.ts';

after(() => cleanup());

test('server limits default as documented and reject values that are not positive integers', () => {
  assert.deepEqual(resolveLimits(), {
    requestBytesMax: 32 * 1024 * 1024,
    inflightRequestsMax: 64,
    inflightBytesMax: 128 * 1024 * 1024,
    optionBytesMax: 64 * 1024,
    handshakeTimeoutMs: 30_000,
    connectionsMax: 1024,
  });
  assert.deepEqual(resolveLimits({ inflightRequestsMax: 3 }), { ...DEFAULT_NBD_LIMITS, inflightRequestsMax: 3 });
  for (const bad of [{ inflightRequestsMax: 0 }, { connectionsMax: 1.5 }, { requestBytesMax: 100 }, { optionBytesMax: 10 }, { handshakeTimeoutMs: -1 }]) {
    assert.throws(
      () => new NbdServer({ provider: new MemoryStore(), limits: bad }),
      (err: unknown) => err instanceof NbdError && err.code === NbdErrorCode.INVALID_ARGUMENT,
      JSON.stringify(bad),
    );
  }
  assert.throws(() => resolveLimits({ nonsense: 1 } as never), NbdError);
});

test('server stops reading a connection at inflightRequestsMax and resumes as requests complete', async () => {
  const ms = await startMemoryServer({ inflightRequestsMax: 4 });
  try {
    const gates: ReturnType<typeof gate>[] = [];
    ms.store.hook = (op) => {
      if (op !== 'read') return;
      const g = gate();
      gates.push(g);
      return g.promise;
    };
    const client = await NbdClient.connect(ms.target, { exportName: 'disk' });
    const reads = Array.from({ length: 10 }, (_, i) => client.read(i * 512, 512));
    await until(() => gates.length === 4, 2000, 'four reads in the engine');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(gates.length, 4, 'no fifth request read while four are in flight');
    for (let opened = 0; opened < 10; opened++) {
      await until(() => gates.length > opened, 2000, `read ${opened} to reach the engine`);
      assert.ok(gates.length - opened <= 4, 'never more than four in flight');
      gates[opened].open();
    }
    await Promise.all(reads);
    await client.disconnect();
  } finally {
    await ms.close();
  }
});

test('server stops reading a connection at inflightBytesMax', async () => {
  const ms = await startMemoryServer({ inflightBytesMax: 8192 });
  try {
    const gates: ReturnType<typeof gate>[] = [];
    ms.store.hook = (op) => {
      if (op !== 'read') return;
      const g = gate();
      gates.push(g);
      return g.promise;
    };
    const client = await NbdClient.connect(ms.target, { exportName: 'disk' });
    const reads = Array.from({ length: 6 }, (_, i) => client.read(i * 4096, 4096));
    await until(() => gates.length === 2, 2000, 'two reads in the engine');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(gates.length, 2, '8 KiB of reads in flight is the limit');
    for (let opened = 0; opened < 6; opened++) {
      await until(() => gates.length > opened, 2000, `read ${opened}`);
      gates[opened].open();
    }
    await Promise.all(reads);
    await client.disconnect();
  } finally {
    await ms.close();
  }
});

test('server keeps a slow reader\'s replies bounded instead of buffering without limit', async () => {
  const ms = await startMemoryServer({ inflightRequestsMax: 8 });
  try {
    let reads = 0;
    ms.store.hook = (op) => {
      if (op === 'read') reads++;
    };
    const wire = await Wire.connect(ms.target);
    await greet(wire);
    wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('disk')));
    await wire.read(Size.EXPORT_NAME_REPLY);
    // 256 reads of 1 MiB, and the client reads none of the replies.
    wire.socket.pause();
    for (let i = 0; i < 256; i++) wire.write(encodeRequestHeader({ flags: 0, type: Command.READ, cookie: BigInt(i), offset: 0, length: 1024 * 1024 }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(reads < 64, `only as many reads as the socket buffers can hold were served (${reads})`);
    wire.socket.destroy();
  } finally {
    await ms.close();
  }
});

test('server closes connections beyond connectionsMax on accept and counts open connections', async () => {
  const ms = await startMemoryServer({ connectionsMax: 2 });
  try {
    const a = await NbdClient.connect(ms.target, { exportName: 'disk' });
    const b = await Wire.connect(ms.target);
    await greet(b);
    await until(() => ms.server.connections === 2, 2000, 'two connections');
    const c = await Wire.connect(ms.target);
    assert.ok(await c.closesWithin(2000), 'third connection closed');
    assert.ok(ms.logs.some((l) => /2 connections open/.test(l)));
    b.socket.destroy();
    await until(() => ms.server.connections === 1, 2000, 'one connection');
    const d = await NbdClient.connect(ms.target, { exportName: 'disk' });
    await d.disconnect();
    await a.disconnect();
    await until(() => ms.server.connections === 0, 2000, 'no connections');
    assert.equal(ms.store.openVolumes, 0);
  } finally {
    await ms.close();
  }
});

test('server close answers in-flight requests, closes connections and volumes, and stops listening', async () => {
  const ms = await startMemoryServer();
  const g = gate();
  ms.store.hook = (op) => (op === 'write' ? g.promise : undefined);
  const client = await NbdClient.connect(ms.target, { exportName: 'disk' });
  const handshaking = await Wire.connect(ms.target);
  await greet(handshaking);
  const write = client.write(0, Buffer.alloc(4096, 1));
  await until(() => ms.store.openVolumes === 1, 2000, 'volume open');
  await new Promise((resolve) => setTimeout(resolve, 20));
  const closing = ms.server.close();
  assert.ok(await handshaking.closesWithin(2000), 'a handshaking client is cut off');
  g.open();
  await write; // answered before the connection closed
  await closing;
  await client.wire.closed;
  assert.equal(ms.store.openVolumes, 0);
  assert.equal(ms.server.connections, 0);
  await assert.rejects(Wire.connect(ms.target), /ECONNREFUSED/);
  await assert.rejects(ms.server.listenTcp({ host: '127.0.0.1', port: 0 }), (err: unknown) => err instanceof NbdError && err.code === NbdErrorCode.CLOSED);
});

test('server releases the volume when a client vanishes, even with requests in flight', async () => {
  const ms = await startMemoryServer();
  try {
    const g = gate();
    ms.store.hook = (op) => (op === 'read' ? g.promise : undefined);
    const client = await NbdClient.connect(ms.target, { exportName: 'disk' });
    void client.read(0, 4096).catch(() => {});
    await until(() => ms.store.openVolumes === 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    client.wire.socket.resetAndDestroy(); // RST: gone, not merely done sending
    await until(() => ms.server.connections === 0, 2000, 'connection gone');
    assert.equal(ms.store.openVolumes, 1, 'volume held while the read is in the engine');
    g.open();
    await until(() => ms.store.openVolumes === 0, 2000, 'volume released');
  } finally {
    await ms.close();
  }
});

test('server listens on a Unix socket, replacing a stale socket file but not a live one or a regular file', async () => {
  const dir = makeTempDir('tessera-nbd-');
  const path = join(dir, 'nbd.sock');
  // A stale socket: a listener that went away without removing its file.
  const stale = net.createServer();
  await new Promise<void>((resolve) => stale.listen(path, resolve));
  const handle = (stale as unknown as { _handle: { close(): void } | null })._handle;
  handle?.close(); // Closes the fd without unlinking, like a crashed process.
  const store = new MemoryStore();
  store.createDisk('disk', 1024 * 1024);
  const server = new NbdServer({ provider: store });
  try {
    await server.listenUnix(path);
    const client = await NbdClient.connect({ path }, { exportName: 'disk' });
    await client.write(0, Buffer.alloc(512, 7));
    assert.deepEqual(await client.read(0, 512), Buffer.alloc(512, 7));
    await client.disconnect();
    const second = new NbdServer({ provider: store });
    await assert.rejects(second.listenUnix(path), (err: unknown) => err instanceof NbdError && err.code === NbdErrorCode.ADDRESS_IN_USE);
    const file = join(dir, 'file');
    writeFileSync(file, 'not a socket');
    await assert.rejects(second.listenUnix(file), /not a socket/);
    await second.close();
  } finally {
    await server.close();
  }
});

test('server listenTcp reports an address in use as NBD_ERR_ADDRESS_IN_USE', async () => {
  const ms = await startMemoryServer();
  try {
    const port = (ms.target as { port: number }).port;
    const other = new NbdServer({ provider: ms.store });
    await assert.rejects(other.listenTcp({ host: '127.0.0.1', port }), (err: unknown) => err instanceof NbdError && err.code === NbdErrorCode.ADDRESS_IN_USE);
    await other.close();
  } finally {
    await ms.close();
  }
});

test('an accepted socket reads into the given buffer under this Node.js, each read a view of it', async () => {
  const shared = Buffer.alloc(64 * 1024);
  const seen: Buffer[] = [];
  let used = false;
  const server = net.createServer((socket) => {
    used = useReadBuffer(socket, shared, (bytes) => seen.push(Buffer.from(bytes)));
    socket.once('end', () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    client.end(Buffer.from('through the shared buffer'));
    await new Promise((resolve) => client.once('close', resolve));
    assert.ok(used, 'this Node.js has the slots node:net fills for `onread` (else every read allocates; see src/util/socket-read.ts)');
    assert.equal(Buffer.concat(seen).toString(), 'through the shared buffer');
    assert.equal(shared.subarray(0, 25).toString(), 'through the shared buffer');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('two connections sending writes in interleaved pieces through the shared read buffer each write their own bytes', async (t) => {
  const ms = await startMemoryServer();
  const rng = new Rng(testSeed(t));
  const rand = () => rng.next();
  try {
    // Payloads larger than the read buffer, so each spans reads; the pieces alternate between
    // the two connections, with a pause between them so that each arrives as a read of its own.
    const size = 300 * 1024;
    const payloads = [0, 1].map((k) => Buffer.from(Array.from({ length: size }, (_, i) => (i * 31 + k * 101) & 0xff)));
    const wires = await Promise.all([0, 1].map(async () => {
      const wire = await Wire.connect(ms.target);
      await greet(wire);
      wire.write(encodeOptionRequest(Option.EXPORT_NAME, Buffer.from('disk')));
      await wire.read(Size.EXPORT_NAME_REPLY);
      return wire;
    }));
    const streams = payloads.map((p, k) => Buffer.concat([encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: BigInt(k), offset: k * size, length: size }), p]));
    const at = [0, 0];
    while (at[0] < streams[0].length || at[1] < streams[1].length) {
      for (const k of [0, 1]) {
        if (at[k] >= streams[k].length) continue;
        const n = 1 + Math.floor(rand() * (rand() < 0.5 ? 40 : 100_000));
        wires[k].write(streams[k].subarray(at[k], at[k] + n));
        at[k] += n;
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    for (const wire of wires) assert.equal((await wire.read(Size.SIMPLE_REPLY_HEADER)).readUInt32BE(4), 0, 'write succeeded');
    const client = await NbdClient.connect(ms.target, { exportName: 'disk' });
    assert.ok((await client.read(0, size)).equals(payloads[0]));
    assert.ok((await client.read(size, size)).equals(payloads[1]));
    await client.disconnect();
    for (const wire of wires) wire.socket.destroy();
  } finally {
    await ms.close();
  }
});
