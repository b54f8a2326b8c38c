/** validatePeerRequest: each rule, in the order the gate checks them, with the sentence it answers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClusterErrorCode } from '../../../src/cluster/errors.ts';
import { decodeBody, decodeHeader, encodeBody, encodeFrame } from '../../../src/cluster/peer/codec.ts';
import { validatePeerRequest, type DiskView, type GateContext } from '../../../src/cluster/peer/gate.ts';
import { MessageType, Size } from '../../../src/cluster/peer/spec.ts';

const SIZE = 10737418240;
const disks: Record<string, DiskView> = { vm1: { sizeBytes: SIZE, epoch: 7, head: true }, vm2: { sizeBytes: 4096, epoch: 3, head: false } };
const ctx = (version = 2): GateContext => ({ version, disk: (name) => disks[name] ?? null });
const scoped = { disk: 'vm1', epoch: 7, rev: 100, hlc: 12345n };

/** The gate's verdict on a request as it would arrive: encoded, then decoded. */
function verdict(type: number, meta: object | undefined, payload?: Buffer, version = 2) {
  const frame = Buffer.concat(encodeFrame(type, 0, 1n, encodeBody(meta, payload)));
  const header = decodeHeader(frame.subarray(0, 32));
  return validatePeerRequest(ctx(version), header, decodeBody(header.flags, frame.subarray(32)));
}

function refused(v: ReturnType<typeof verdict>, code: string, rule: string | RegExp): void {
  assert.ok(v !== null, 'refused');
  assert.equal(v.code, code);
  if (typeof rule === 'string') assert.equal(v.rule, rule);
  else assert.match(v.rule, rule);
}

test('gate lets well-formed requests through', () => {
  assert.equal(verdict(MessageType.PING, {}), null);
  assert.equal(verdict(MessageType.PING, { hlc: 5n }), null);
  assert.equal(verdict(MessageType.PING, {}, undefined, 1), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'write', offset: SIZE - 4, fua: false }, Buffer.alloc(4)), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 2], prev: null, restart: true, kind: 'zero', offset: 0, length: SIZE, fua: true, mayTrim: true }), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 3], prev: null, restart: true, kind: 'flush' }), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 4], prev: null, restart: true, kind: 'snapshot', name: 's1' }), null);
  // The head's stamp: optional, and at every version (a node that does not know it passes it on).
  for (const version of [1, 2]) assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 4], prev: null, restart: true, kind: 'snapshot', name: 's1', stamp: 117047296000000005n }, undefined, version), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 5], prev: null, restart: true, kind: 'snapshot-delete', name: 's1' }), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 6], prev: null, restart: true, kind: 'revert', snapshot: 's1' }), null);
  assert.equal(verdict(MessageType.OP, { ...scoped, id: [7, 7], prev: null, restart: true, kind: 'resize', sizeBytes: 2 * SIZE }), null);
  assert.equal(verdict(MessageType.ACK, { disk: 'vm1', epoch: 7, id: [7, 7] }), null);
  assert.equal(verdict(MessageType.CONFIGURE, { ...scoped, disk: 'new', epoch: 1, chain: ['n1', 'n2'], sizeBytes: SIZE }), null);
  assert.equal(verdict(MessageType.CONFIGURE, { ...scoped, epoch: 8, chain: ['n1'], sizeBytes: SIZE }), null);
  assert.equal(verdict(MessageType.IO, { ...scoped, kind: 'read', offset: 0, length: Size.PAYLOAD_BYTES_MAX }), null);
  assert.equal(verdict(MessageType.IO, { ...scoped, kind: 'write', offset: 0, fua: true }, Buffer.alloc(512)), null);
  assert.equal(verdict(MessageType.IO, { ...scoped, kind: 'block-status', offset: 0, length: SIZE }), null);
  assert.equal(verdict(MessageType.IO, { ...scoped, kind: 'changed-since', snapshot: 's1', offset: 0, length: SIZE }), null);
  assert.equal(verdict(MessageType.EXTENTS, { ...scoped, snapshot: 's1', since: null, offset: 0, length: SIZE }), null);
  assert.equal(verdict(MessageType.READ_SNAP, { ...scoped, snapshot: 's1', offset: 4096, length: 4096 }), null);
});

test('gate: known type at the negotiated version', () => {
  refused(verdict(0x7777, {}), ClusterErrorCode.PROTOCOL, 'Unknown message type 30583');
  refused(verdict(MessageType.HELLO, {}), ClusterErrorCode.PROTOCOL, 'HELLO after the handshake');
  refused(verdict(MessageType.AUTH, {}), ClusterErrorCode.PROTOCOL, 'AUTH after the handshake');
  refused(verdict(MessageType.PING, {}, undefined, 0), ClusterErrorCode.PROTOCOL, 'PING is not in protocol version 0 (since 1)');
  refused(verdict(MessageType.PING, { hlc: 5n }, undefined, 1), ClusterErrorCode.PROTOCOL, 'PING carries hlc, which protocol version 1 does not have (since 2)');
});

test('gate: a well-formed body of bounded size', () => {
  const header = decodeHeader(Buffer.concat(encodeFrame(MessageType.OP, 0, 1n, encodeBody(undefined))).subarray(0, 32));
  const bad = validatePeerRequest(ctx(), header, { meta: null, payload: null, malformed: 'not a msgpack map' });
  refused(bad, ClusterErrorCode.PROTOCOL, 'OP body malformed: not a msgpack map');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'snapshot', name: 'x'.repeat(5000) }), ClusterErrorCode.LIMIT, /^OP fields of 50\d\d bytes exceed 4096$/);
});

test('gate: required fields present and well typed', () => {
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'explode' }), ClusterErrorCode.PROTOCOL, 'OP kind "explode" is not one of write, zero, trim, flush, snapshot, snapshot-delete, revert, resize');
  refused(verdict(MessageType.IO, { ...scoped }), ClusterErrorCode.PROTOCOL, /^IO kind absent is not one of read, write/);
  refused(verdict(MessageType.OP, { ...scoped, kind: 'flush' }), ClusterErrorCode.PROTOCOL, 'OP FLUSH field id must be an op id [epoch, n], is absent');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, -1], prev: null, restart: true, kind: 'flush' }), ClusterErrorCode.PROTOCOL, 'OP FLUSH field id must be an op id [epoch, n], is a list');
  refused(verdict(MessageType.OP, { ...scoped, hlc: 5, id: [7, 1], prev: null, restart: true, kind: 'flush' }), ClusterErrorCode.PROTOCOL, 'OP FLUSH field hlc must be a 64-bit unsigned integer, is number 5');
  refused(verdict(MessageType.IO, { ...scoped, kind: 'read', offset: 1.5, length: 1 }), ClusterErrorCode.PROTOCOL, 'IO READ field offset must be a non-negative integer, is number 1.5');
  refused(verdict(MessageType.IO, { ...scoped, disk: '', kind: 'flush' }), ClusterErrorCode.PROTOCOL, 'IO FLUSH field disk must be a non-empty string, is ""');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'zero', offset: 0, length: 1, fua: 'yes', mayTrim: true }), ClusterErrorCode.PROTOCOL, 'OP ZERO field fua must be a boolean, is "yes"');
  refused(verdict(MessageType.CONFIGURE, { ...scoped, chain: [], sizeBytes: 1 }), ClusterErrorCode.PROTOCOL, 'CONFIGURE field chain must be a non-empty list of non-empty strings, is a list');
  refused(verdict(MessageType.EXTENTS, { ...scoped, snapshot: 's1', offset: 0, length: 1 }), ClusterErrorCode.PROTOCOL, 'EXTENTS field since must be null or a non-empty string, is absent');
  refused(verdict(MessageType.PING, { hlc: 'soon' }), ClusterErrorCode.PROTOCOL, 'PING field hlc must be absent or a 64-bit unsigned integer, is "soon"');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'snapshot', name: 's1', stamp: 5 }), ClusterErrorCode.PROTOCOL, 'OP SNAPSHOT field stamp must be absent or a 64-bit unsigned integer, is number 5');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'snapshot', name: 's1', stamp: -5n }), ClusterErrorCode.PROTOCOL, 'OP SNAPSHOT field stamp must be absent or a 64-bit unsigned integer, is -5');
});

test('gate: data only where a write carries it, reads within a frame', () => {
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'write', offset: 0, fua: false }), ClusterErrorCode.PROTOCOL, 'OP WRITE has no data');
  refused(verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'write', offset: 0, fua: false }, Buffer.alloc(0)), ClusterErrorCode.PROTOCOL, 'OP WRITE of 0 bytes');
  refused(verdict(MessageType.IO, { ...scoped, kind: 'flush' }, Buffer.alloc(3)), ClusterErrorCode.PROTOCOL, 'IO FLUSH carries 3 bytes of data it does not take');
  refused(verdict(MessageType.IO, { ...scoped, kind: 'read', offset: 0, length: Size.PAYLOAD_BYTES_MAX + 1 }), ClusterErrorCode.LIMIT, 'IO READ of 8388609 bytes exceeds 8388608');
  refused(verdict(MessageType.READ_SNAP, { ...scoped, snapshot: 's', offset: 0, length: Size.PAYLOAD_BYTES_MAX + 1 }), ClusterErrorCode.LIMIT, 'READ_SNAP of 8388609 bytes exceeds 8388608');
});

test('gate: the disk known here, at our epoch, IO at its head', () => {
  refused(verdict(MessageType.OP, { ...scoped, disk: 'vm9', id: [7, 1], prev: null, restart: true, kind: 'flush' }), ClusterErrorCode.DISK_NOT_FOUND, 'OP FLUSH for disk vm9, unknown here');
  const stale = verdict(MessageType.OP, { ...scoped, epoch: 6, id: [6, 1], prev: null, restart: true, kind: 'flush' });
  refused(stale, ClusterErrorCode.STALE_EPOCH, 'OP FLUSH for disk vm1 at epoch 6, older than ours 7');
  assert.equal(stale!.current, 7);
  refused(verdict(MessageType.CONFIGURE, { ...scoped, epoch: 6, chain: ['n1'], sizeBytes: 1 }), ClusterErrorCode.STALE_EPOCH, 'CONFIGURE for disk vm1 at epoch 6, older than ours 7');
  refused(verdict(MessageType.IO, { ...scoped, epoch: 8, kind: 'flush' }), ClusterErrorCode.EPOCH_AHEAD, 'IO FLUSH for disk vm1 at epoch 8, newer than ours 7');
  refused(verdict(MessageType.ACK, { disk: 'vm1', epoch: 5, id: [5, 1] }), ClusterErrorCode.STALE_EPOCH, 'ACK for disk vm1 at epoch 5, older than ours 7');
  refused(verdict(MessageType.IO, { ...scoped, disk: 'vm2', epoch: 3, kind: 'flush' }), ClusterErrorCode.NOT_HEAD, 'IO FLUSH for disk vm2, not headed here');
});

test('gate: offset+length within the disk', () => {
  refused(
    verdict(MessageType.OP, { ...scoped, id: [7, 1], prev: null, restart: true, kind: 'write', offset: SIZE - 4, fua: false }, Buffer.alloc(5)),
    ClusterErrorCode.INVALID,
    'OP WRITE past the end: offset+length 10737418241 > size 10737418240',
  );
  refused(verdict(MessageType.IO, { ...scoped, kind: 'trim', offset: SIZE, length: 1, fua: false }), ClusterErrorCode.INVALID, 'IO TRIM past the end: offset+length 10737418241 > size 10737418240');
  refused(
    verdict(MessageType.READ_SNAP, { ...scoped, snapshot: 's', offset: SIZE - 1, length: 2 }),
    ClusterErrorCode.INVALID,
    'READ_SNAP past the end: offset+length 10737418241 > size 10737418240',
  );
  refused(
    verdict(MessageType.IO, { ...scoped, kind: 'changed-since', snapshot: 's', offset: 0, length: SIZE + 1 }),
    ClusterErrorCode.INVALID,
    'IO CHANGED_SINCE past the end: offset+length 10737418241 > size 10737418240',
  );
});
