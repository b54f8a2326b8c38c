/**
 * The one gate of the peer protocol: validatePeerRequest decides each request's fate in one pure
 * function, as validateRequest does for NBD (src/nbd/transmission.ts). Code past it trusts the
 * request's body to have the type messages.ts gives it. A rejection names the rule broken, with
 * the values that broke it: `OP WRITE past the end: offset+length 10737418241 > size 10737418240`.
 */
import type { ClusterErrorCodeValue } from '../errors.ts';
import { ClusterErrorCode } from '../errors.ts';
import type { DecodedBody, FrameHeader } from './codec.ts';
import { IO_KINDS, OP_KINDS } from './messages.ts';
import { Flag, MessageType, Size, TypeSince, typeName, Version } from './spec.ts';

/** What this node knows of a disk, for the gate. */
export interface DiskView {
  sizeBytes: number;
  /** The newest epoch this node accepted for the disk. */
  epoch: number;
  /** Whether this node is the disk's head now (IO goes to heads only); unknown when absent. */
  head?: boolean;
}

/** What the gate needs to know besides the request. */
export interface GateContext {
  /** The connection's negotiated protocol version. */
  version: number;
  /** The disk of this name as this node knows it, or null. */
  disk(name: string): DiskView | null;
}

/** Why a request is refused: the error code to answer with, the rule broken (a sentence). */
export interface PeerRejection {
  code: ClusterErrorCodeValue;
  /** Names the message, the rule and the values that broke it; sentence case, no final period. */
  rule: string;
  /** With CLUSTER_STALE_EPOCH: the receiver's epoch. */
  current?: number;
}

/** How a field must look. `?` after a kind: may be absent; `|null`: may be null. */
type FieldKind = 'string' | 'uint' | 'bool' | 'bigint' | 'opId' | 'opId|null' | 'strings' | 'strings?' | 'string|null' | 'bigint?';
type Fields = Record<string, FieldKind>;

const DISK_SCOPED: Fields = { disk: 'string', epoch: 'uint', rev: 'uint', hlc: 'bigint' };
const RANGE: Fields = { offset: 'uint', length: 'uint' };

/** Fields of each op kind besides DISK_SCOPED and `id`. */
const OP_FIELDS: Record<(typeof OP_KINDS)[number], Fields> = {
  write: { offset: 'uint', fua: 'bool' },
  zero: { ...RANGE, fua: 'bool', mayTrim: 'bool' },
  trim: { ...RANGE, fua: 'bool' },
  flush: {},
  snapshot: { name: 'string', stamp: 'bigint?' },
  'snapshot-delete': { name: 'string' },
  revert: { snapshot: 'string' },
  resize: { sizeBytes: 'uint' },
};

/** Fields of each I/O kind besides DISK_SCOPED. */
const IO_FIELDS: Record<(typeof IO_KINDS)[number], Fields> = {
  read: RANGE,
  write: { offset: 'uint', fua: 'bool' },
  zero: { ...RANGE, fua: 'bool', mayTrim: 'bool' },
  trim: { ...RANGE, fua: 'bool' },
  flush: {},
  'block-status': RANGE,
  'changed-since': { snapshot: 'string', ...RANGE },
};

/** Fields of each request type without kinds. */
const TYPE_FIELDS: Partial<Record<number, Fields>> = {
  [MessageType.PING]: { hlc: 'bigint?' },
  [MessageType.CONFIGURE]: { ...DISK_SCOPED, chain: 'strings', sizeBytes: 'uint', catchingUp: 'strings?' },
  [MessageType.ACK]: { disk: 'string', epoch: 'uint', id: 'opId' },
  [MessageType.EXTENTS]: { ...DISK_SCOPED, snapshot: 'string', since: 'string|null', ...RANGE },
  [MessageType.READ_SNAP]: { ...DISK_SCOPED, snapshot: 'string', ...RANGE },
};

/** A message's label in rules and its fields, worked out once per type and kind (the gate runs per request). */
interface Check {
  label: string;
  fields: Array<[name: string, kind: FieldKind]>;
}

function kindChecks(name: string, kinds: Record<string, Fields>, common: Fields): Map<string, Check> {
  return new Map(Object.entries(kinds).map(([kind, fields]) => [kind, { label: `${name} ${kind.toUpperCase().replace('-', '_')}`, fields: Object.entries({ ...common, ...fields }) }]));
}

const OP_CHECKS = kindChecks('OP', OP_FIELDS, { ...DISK_SCOPED, id: 'opId', prev: 'opId|null', restart: 'bool' });
const IO_CHECKS = kindChecks('IO', IO_FIELDS, DISK_SCOPED);
const TYPE_CHECKS = new Map(Object.entries(TYPE_FIELDS).map(([type, fields]) => [Number(type), { label: typeName(Number(type)), fields: Object.entries(fields!) }]));

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function fits(kind: FieldKind, v: unknown): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string' && v.length > 0;
    case 'uint':
      return isUint(v);
    case 'bool':
      return typeof v === 'boolean';
    case 'bigint':
      return typeof v === 'bigint' && v >= 0n;
    case 'bigint?':
      return v === undefined || (typeof v === 'bigint' && v >= 0n);
    case 'opId':
      return Array.isArray(v) && v.length === 2 && isUint(v[0]) && isUint(v[1]);
    case 'opId|null':
      return v === null || (Array.isArray(v) && v.length === 2 && isUint(v[0]) && isUint(v[1]));
    case 'strings?':
      return v === undefined || (Array.isArray(v) && v.every((s) => typeof s === 'string' && s.length > 0));
    case 'strings':
      return Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string' && s.length > 0);
    case 'string|null':
      return v === null || (typeof v === 'string' && v.length > 0);
  }
}

const KIND_WORDS: Record<FieldKind, string> = {
  string: 'a non-empty string',
  uint: 'a non-negative integer',
  bool: 'a boolean',
  bigint: 'a 64-bit unsigned integer',
  'bigint?': 'absent or a 64-bit unsigned integer',
  opId: 'an op id [epoch, n]',
  'opId|null': 'null or an op id [epoch, n]',
  'strings?': 'absent or a list of non-empty strings',
  strings: 'a non-empty list of non-empty strings',
  'string|null': 'null or a non-empty string',
};

function describe(v: unknown): string {
  if (v === undefined) return 'absent';
  if (v === null) return 'null';
  if (Buffer.isBuffer(v)) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'bigint') return `${v}`;
  if (typeof v === 'string') return `"${v.length > 40 ? `${v.slice(0, 40)}…` : v}"`;
  return typeof v === 'object' ? 'a map' : `${typeof v} ${String(v)}`;
}

/** The first field of `meta` not as the check says, as a rule; null if all are. */
function checkFields(check: Check, meta: Record<string, unknown>): PeerRejection | null {
  for (const [name, kind] of check.fields) {
    if (!fits(kind, meta[name])) {
      return { code: ClusterErrorCode.PROTOCOL, rule: `${check.label} field ${name} must be ${KIND_WORDS[kind]}, is ${describe(meta[name])}` };
    }
  }
  return null;
}

/** The msgpack part's bytes, which a request keeps small whatever data it carries. */
function metaBytes(header: FrameHeader, body: DecodedBody): number {
  return (header.flags & Flag.PAYLOAD) !== 0 ? header.bodyBytes - 4 - (body.payload?.length ?? 0) : header.bodyBytes;
}

/**
 * Decides a request's fate: null to carry it out, or the rejection to answer with. Checks, in
 * order: a request type known at the negotiated version (HELLO and AUTH belong to the handshake
 * only); a well-formed body within Size.META_BYTES_MAX; each required field present and well
 * typed (and the op or I/O kind known); data only where a write carries it, and a read's answer
 * within Size.PAYLOAD_BYTES_MAX; for disk-scoped messages, the disk known here (CONFIGURE may
 * introduce one), the epoch neither older (CLUSTER_STALE_EPOCH with `current`) nor, except for
 * CONFIGURE, newer (CLUSTER_EPOCH_AHEAD) than ours, IO only at the head, and offset+length within
 * the disk.
 */
export function validatePeerRequest(ctx: GateContext, header: FrameHeader, body: DecodedBody): PeerRejection | null {
  const { type } = header;
  const name = typeName(type);
  const since = (TypeSince as Record<number, number | undefined>)[type];
  if (since === undefined) return { code: ClusterErrorCode.PROTOCOL, rule: `Unknown message ${name}` };
  if (since > ctx.version) return { code: ClusterErrorCode.PROTOCOL, rule: `${name} is not in protocol version ${ctx.version} (since ${since})` };
  if (type === MessageType.HELLO || type === MessageType.AUTH) return { code: ClusterErrorCode.PROTOCOL, rule: `${name} after the handshake` };
  if (body.malformed !== null || body.meta === null) return { code: ClusterErrorCode.PROTOCOL, rule: `${name} body malformed: ${body.malformed ?? 'no map'}` };
  const meta = body.meta;
  const fieldsBytes = metaBytes(header, body);
  if (fieldsBytes > Size.META_BYTES_MAX) {
    return { code: ClusterErrorCode.LIMIT, rule: `${name} fields of ${fieldsBytes} bytes exceed ${Size.META_BYTES_MAX}` };
  }

  let check: Check;
  if (type === MessageType.OP || type === MessageType.IO) {
    const checks = type === MessageType.OP ? OP_CHECKS : IO_CHECKS;
    const kind = meta.kind;
    const found = typeof kind === 'string' ? checks.get(kind) : undefined;
    if (found === undefined) {
      return { code: ClusterErrorCode.PROTOCOL, rule: `${name} kind ${describe(kind)} is not one of ${[...checks.keys()].join(', ')}` };
    }
    check = found;
  } else {
    check = TYPE_CHECKS.get(type)!;
  }
  const label = check.label;
  const broken = checkFields(check, meta);
  if (broken !== null) return broken;
  if (type === MessageType.PING && meta.hlc !== undefined && ctx.version < Version.PING_HLC) {
    return { code: ClusterErrorCode.PROTOCOL, rule: `PING carries hlc, which protocol version ${ctx.version} does not have (since ${Version.PING_HLC})` };
  }

  const carriesData = meta.kind === 'write' && (type === MessageType.OP || type === MessageType.IO);
  if (carriesData && body.payload === null) return { code: ClusterErrorCode.PROTOCOL, rule: `${label} has no data` };
  if (!carriesData && body.payload !== null) return { code: ClusterErrorCode.PROTOCOL, rule: `${label} carries ${body.payload.length} bytes of data it does not take` };
  if (carriesData && body.payload!.length === 0) return { code: ClusterErrorCode.PROTOCOL, rule: `${label} of 0 bytes` };
  const answersData = type === MessageType.READ_SNAP || (type === MessageType.IO && meta.kind === 'read');
  if (answersData && (meta.length as number) > Size.PAYLOAD_BYTES_MAX) {
    return { code: ClusterErrorCode.LIMIT, rule: `${label} of ${meta.length as number} bytes exceeds ${Size.PAYLOAD_BYTES_MAX}` };
  }
  if (type === MessageType.PING) return null;

  const diskName = meta.disk as string;
  const disk = ctx.disk(diskName);
  const epoch = meta.epoch as number;
  if (disk === null) {
    return type === MessageType.CONFIGURE ? null : { code: ClusterErrorCode.DISK_NOT_FOUND, rule: `${label} for disk ${diskName}, unknown here` };
  }
  if (epoch < disk.epoch) {
    return { code: ClusterErrorCode.STALE_EPOCH, rule: `${label} for disk ${diskName} at epoch ${epoch}, older than ours ${disk.epoch}`, current: disk.epoch };
  }
  if (epoch > disk.epoch && type !== MessageType.CONFIGURE) {
    return { code: ClusterErrorCode.EPOCH_AHEAD, rule: `${label} for disk ${diskName} at epoch ${epoch}, newer than ours ${disk.epoch}` };
  }
  if (type === MessageType.IO && disk.head === false) return { code: ClusterErrorCode.NOT_HEAD, rule: `${label} for disk ${diskName}, not headed here` };

  if (typeof meta.offset === 'number') {
    const offset = meta.offset;
    const length = carriesData ? body.payload!.length : (meta.length as number);
    if (offset + length > disk.sizeBytes) {
      return { code: ClusterErrorCode.INVALID, rule: `${label} past the end: offset+length ${offset + length} > size ${disk.sizeBytes}` };
    }
  }
  return null;
}
