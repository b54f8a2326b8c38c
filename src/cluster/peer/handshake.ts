/**
 * The handshake, as two pure state machines fed the frames of the other side (docs/cluster.md,
 * "Handshake"):
 *
 *   client → HELLO {versions: [min, max], node, cluster, nonce}        request id 1
 *   server ← HELLO response {version, node, nonce, proof(server)}      or an error response, closed
 *   client → AUTH {proof(client)}                                      request id 2
 *   server ← AUTH response (empty body)                                or an error response, closed
 *
 * A proof is HMAC-SHA256, keyed by the cluster secret, of `proofInput`: both nonces, both node
 * ids, the cluster id and the chosen version, with the prover's role first so that neither side
 * can replay the other's proof. Each side decides only after checking the other's proof, and
 * nothing but these frames is accepted before the end.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import { decodeBody, encodeBody, encodeErrorFrame, encodeFrame, errorFromBody } from './codec.ts';
import type { Frame } from './parser.ts';
import { Flag, MessageType, Size } from './spec.ts';

/** What proves a node belongs to a cluster. */
export interface PeerIdentity {
  /** This node's id. */
  node: string;
  /** The cluster id. */
  cluster: string;
  /** The cluster secret (the 32 bytes of `P/cluster`'s `secret`). */
  secret: Buffer;
  /** Versions this end speaks, `[min, max]`. */
  versions: [number, number];
}

/** What both proofs are computed over. */
export interface Transcript {
  clientNonce: Buffer;
  serverNonce: Buffer;
  clientNode: string;
  serverNode: string;
  cluster: string;
  version: number;
}

/** Request ids of the two handshake requests. */
export const HELLO_ID = 1n;
/** See HELLO_ID. */
export const AUTH_ID = 2n;

/**
 * The bytes a proof signs: ASCII `TSPR proof server` or `TSPR proof client`, a zero byte, then
 * the client nonce, the server nonce, the client id, the server id and the cluster id (UTF-8),
 * each after its u16 LE length, then the version as u16 LE.
 */
export function proofInput(role: 'server' | 'client', t: Transcript): Buffer {
  const parts: Buffer[] = [Buffer.from(`TSPR proof ${role}\0`, 'ascii')];
  for (const field of [t.clientNonce, t.serverNonce, Buffer.from(t.clientNode), Buffer.from(t.serverNode), Buffer.from(t.cluster)]) {
    const length = Buffer.allocUnsafe(2);
    length.writeUInt16LE(field.length);
    parts.push(length, field);
  }
  const version = Buffer.allocUnsafe(2);
  version.writeUInt16LE(t.version);
  parts.push(version);
  return Buffer.concat(parts);
}

/** HMAC-SHA256 of proofInput(role, t) under `secret`. */
export function computeProof(secret: Buffer, role: 'server' | 'client', t: Transcript): Buffer {
  return createHmac('sha256', secret).update(proofInput(role, t)).digest();
}

/** The highest version both ranges hold, or null. */
export function chooseVersion(ours: [number, number], theirs: [number, number]): number | null {
  const version = Math.min(ours[1], theirs[1]);
  return version >= Math.max(ours[0], theirs[0]) ? version : null;
}

/** What a handshake step asks of the connection. */
export interface HandshakeStep {
  /** Frames to write, in order. */
  send: Buffer[][];
  /** Set when the handshake succeeded: the version and the other end's node id. */
  done?: { version: number; remoteNode: string };
  /** Set when it failed: the connection closes after writing `send`. */
  fail?: ClusterError;
}

function fail(err: ClusterError, send: Buffer[][] = []): HandshakeStep {
  return { send, fail: err };
}

function isProof(value: unknown, bytes: number): value is Buffer {
  return Buffer.isBuffer(value) && value.length === bytes;
}

function isVersionRange(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && value.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffff) && value[0] <= value[1];
}

const protocol = (message: string) => new ClusterError(ClusterErrorCode.PROTOCOL, message);

/** The server's side: expects HELLO, then AUTH. */
export class ServerHandshake {
  readonly #id: PeerIdentity;
  readonly #nonce: Buffer;
  #state: 'hello' | 'auth' | 'over' = 'hello';
  #transcript: Transcript | null = null;

  /** `nonce` only for tests (golden vectors); normally random. */
  constructor(identity: PeerIdentity, nonce: Buffer = randomBytes(Size.NONCE_BYTES)) {
    this.#id = identity;
    this.#nonce = nonce;
  }

  /** Handles one frame from the client. */
  onFrame(frame: Frame): HandshakeStep {
    const { header } = frame;
    const expected = this.#state === 'hello' ? MessageType.HELLO : MessageType.AUTH;
    if (this.#state === 'over' || header.type !== expected || header.flags !== 0) {
      this.#state = 'over';
      const err = protocol(`Expected ${expected === MessageType.HELLO ? 'HELLO' : 'AUTH'} in the handshake, got type ${header.type} flags ${header.flags}`);
      return fail(err, [encodeErrorFrame(header.type, 0n, err, false)]);
    }
    const reply = (err: ClusterError): HandshakeStep => {
      this.#state = 'over';
      return fail(err, [encodeErrorFrame(header.type, header.requestId, err, true)]);
    };
    const { meta } = decodeBody(header.flags, frame.body);
    if (this.#state === 'hello') {
      if (meta === null || !isVersionRange(meta.versions) || typeof meta.node !== 'string' || typeof meta.cluster !== 'string' || !isProof(meta.nonce, Size.NONCE_BYTES)) {
        return reply(protocol('Malformed HELLO: expected {versions: [min, max], node, cluster, nonce}'));
      }
      if (meta.cluster !== this.#id.cluster) {
        return reply(new ClusterError(ClusterErrorCode.AUTH_FAILED, `Node ${meta.node} is of cluster ${meta.cluster}, not ${this.#id.cluster}`));
      }
      const version = chooseVersion(this.#id.versions, meta.versions);
      if (version === null) {
        const [min, max] = meta.versions;
        return reply(new ClusterError(ClusterErrorCode.NO_COMMON_VERSION, `No common protocol version: ${this.#id.node} speaks ${this.#id.versions.join('..')}, ${meta.node} ${min}..${max}`));
      }
      const t: Transcript = { clientNonce: meta.nonce, serverNonce: this.#nonce, clientNode: meta.node, serverNode: this.#id.node, cluster: this.#id.cluster, version };
      this.#transcript = t;
      this.#state = 'auth';
      const body = { version, node: this.#id.node, nonce: this.#nonce, proof: computeProof(this.#id.secret, 'server', t) };
      return { send: [encodeFrame(MessageType.HELLO, Flag.RESPONSE, header.requestId, encodeBody(body))] };
    }
    const t = this.#transcript!;
    const expectedProof = computeProof(this.#id.secret, 'client', t);
    if (meta === null || !isProof(meta.proof, Size.PROOF_BYTES) || !timingSafeEqual(meta.proof, expectedProof)) {
      return reply(new ClusterError(ClusterErrorCode.AUTH_FAILED, `Node ${t.clientNode} did not prove it holds the cluster secret`));
    }
    this.#state = 'over';
    return { send: [encodeFrame(MessageType.AUTH, Flag.RESPONSE, header.requestId, encodeBody(undefined))], done: { version: t.version, remoteNode: t.clientNode } };
  }
}

/** The client's side: sends HELLO (start), checks the server's proof, sends AUTH. */
export class ClientHandshake {
  readonly #id: PeerIdentity;
  readonly #nonce: Buffer;
  /** The node id the client means to reach, if it knows one. */
  readonly #expectNode: string | null;
  #state: 'hello' | 'auth' | 'over' = 'hello';
  #result: { version: number; remoteNode: string } | null = null;

  /** `nonce` only for tests (golden vectors); normally random. */
  constructor(identity: PeerIdentity, opts: { expectNode?: string; nonce?: Buffer } = {}) {
    this.#id = identity;
    this.#nonce = opts.nonce ?? randomBytes(Size.NONCE_BYTES);
    this.#expectNode = opts.expectNode ?? null;
  }

  /** The HELLO frame, the first the client writes. */
  start(): Buffer[] {
    const body = { versions: this.#id.versions, node: this.#id.node, cluster: this.#id.cluster, nonce: this.#nonce };
    return encodeFrame(MessageType.HELLO, 0, HELLO_ID, encodeBody(body));
  }

  /** Handles one frame from the server. */
  onFrame(frame: Frame): HandshakeStep {
    const { header } = frame;
    const expected = this.#state === 'hello' ? MessageType.HELLO : MessageType.AUTH;
    const expectedId = this.#state === 'hello' ? HELLO_ID : AUTH_ID;
    const body = decodeBody(header.flags, frame.body);
    if ((header.flags & Flag.ERROR) !== 0) {
      this.#state = 'over';
      return fail(errorFromBody(body));
    }
    if (this.#state === 'over' || header.type !== expected || header.flags !== Flag.RESPONSE || header.requestId !== expectedId) {
      this.#state = 'over';
      const err = protocol(`Expected the ${expected === MessageType.HELLO ? 'HELLO' : 'AUTH'} response in the handshake, got type ${header.type} flags ${header.flags}`);
      return fail(err, [encodeErrorFrame(header.type, 0n, err, false)]);
    }
    if (this.#state === 'auth') {
      this.#state = 'over';
      return { send: [], done: this.#result! };
    }
    const meta = body.meta;
    const refuse = (err: ClusterError): HandshakeStep => {
      this.#state = 'over';
      return fail(err, [encodeErrorFrame(MessageType.HELLO, 0n, err, false)]);
    };
    if (meta === null || typeof meta.version !== 'number' || typeof meta.node !== 'string' || !isProof(meta.nonce, Size.NONCE_BYTES) || !isProof(meta.proof, Size.PROOF_BYTES)) {
      return refuse(protocol('Malformed HELLO response: expected {version, node, nonce, proof}'));
    }
    const [min, max] = this.#id.versions;
    if (!Number.isInteger(meta.version) || meta.version < min || meta.version > max) {
      return refuse(protocol(`Server chose protocol version ${meta.version}, outside ${min}..${max}`));
    }
    const t: Transcript = { clientNonce: this.#nonce, serverNonce: meta.nonce, clientNode: this.#id.node, serverNode: meta.node, cluster: this.#id.cluster, version: meta.version };
    if (!timingSafeEqual(meta.proof, computeProof(this.#id.secret, 'server', t))) {
      return refuse(new ClusterError(ClusterErrorCode.AUTH_FAILED, `Node ${meta.node} did not prove it holds the cluster secret`));
    }
    if (this.#expectNode !== null && meta.node !== this.#expectNode) {
      return refuse(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `Reached node ${meta.node} where ${this.#expectNode} was expected`));
    }
    this.#result = { version: meta.version, remoteNode: meta.node };
    this.#state = 'auth';
    return { send: [encodeFrame(MessageType.AUTH, 0, AUTH_ID, encodeBody({ proof: computeProof(this.#id.secret, 'client', t) }))] };
  }
}
