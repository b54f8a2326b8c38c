/**
 * The handshake (docs/transfer.md, "Handshake"), as the peer protocol's:
 *
 *   sender   → HELLO {versions: [min, max], nonce, auth}
 *   receiver ← HELLO_OK {version, nonce, auth, proof?}       or an error frame, closed
 *   sender   → AUTH {proof}                                  only when both have a secret
 *   receiver ← AUTH_OK {}                                     or an error frame, closed
 *
 * A proof is HMAC-SHA256, keyed by the shared secret, of `proofInput`: the prover's role, both
 * nonces and the version, so neither side can replay the other's. The sender checks the
 * receiver's proof before it proves itself. A secret on one side only fails on both.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { encodeBody } from './codec.ts';
import { unexpected, type Channel } from './channel.ts';
import { TransferError, TransferErrorCode } from './errors.ts';
import { FrameType, Limit, Size, Version } from './spec.ts';

/**
 * The bytes a proof signs: ASCII `TSXF proof server` or `TSXF proof client`, a zero byte, the
 * sender's nonce, the receiver's nonce, then the version as u16 LE.
 */
export function proofInput(role: 'server' | 'client', clientNonce: Buffer, serverNonce: Buffer, version: number): Buffer {
  const v = Buffer.allocUnsafe(2);
  v.writeUInt16LE(version);
  return Buffer.concat([Buffer.from(`TSXF proof ${role}\0`, 'ascii'), clientNonce, serverNonce, v]);
}

/** HMAC-SHA256 of proofInput under `secret`. */
export function computeProof(secret: Buffer, role: 'server' | 'client', clientNonce: Buffer, serverNonce: Buffer, version: number): Buffer {
  return createHmac('sha256', secret).update(proofInput(role, clientNonce, serverNonce, version)).digest();
}

/** The highest version both ranges hold, or null. */
export function chooseVersion(ours: readonly [number, number], theirs: readonly [number, number]): number | null {
  const version = Math.min(ours[1], theirs[1]);
  return version >= Math.max(ours[0], theirs[0]) ? version : null;
}

function isBytes(value: unknown, bytes: number): value is Buffer {
  return Buffer.isBuffer(value) && value.length === bytes;
}

function isVersionRange(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && value.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffff) && value[0] <= value[1];
}

const protocol = (message: string) => new TransferError(TransferErrorCode.PROTOCOL, message);

/** The sender's side; resolves to the version, rejects with a TransferError (the channel then closed). */
export async function clientHandshake(channel: Channel, secret: Buffer | null, where: string): Promise<number> {
  const nonce = randomBytes(Size.NONCE_BYTES);
  channel.send(FrameType.HELLO, encodeBody({ versions: [Version.MIN, Version.MAX], nonce, auth: secret !== null }));
  const hello = await channel.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'handshake answer');
  const meta = hello.meta;
  if (hello.frame.header.type !== FrameType.HELLO_OK || meta === null) throw fail(channel, unexpected(hello, 'HELLO_OK'));
  if (typeof meta.version !== 'number' || !Number.isInteger(meta.version) || meta.version < Version.MIN || meta.version > Version.MAX) {
    throw fail(channel, protocol(`The receiver chose protocol version ${String(meta.version)}, outside ${Version.MIN}..${Version.MAX}`));
  }
  if (!isBytes(meta.nonce, Size.NONCE_BYTES) || typeof meta.auth !== 'boolean') throw fail(channel, protocol('Malformed HELLO_OK: expected {version, nonce, auth, proof?}'));
  const version = meta.version;
  if (secret === null) {
    // A receiver with a secret refuses a sender without one in its answer to HELLO already.
    if (meta.auth) throw fail(channel, new TransferError(TransferErrorCode.AUTH_REQUIRED, `The receiver at ${where} requires a secret: give --secret-file`));
    channel.handshakeDone();
    return version;
  }
  if (!meta.auth) {
    throw fail(channel, new TransferError(TransferErrorCode.AUTH_FAILED, `The receiver at ${where} has no secret, but this sender was given one: refusing to send unauthenticated`));
  }
  if (!isBytes(meta.proof, Size.PROOF_BYTES) || !timingSafeEqual(meta.proof, computeProof(secret, 'server', nonce, meta.nonce, version))) {
    throw fail(channel, new TransferError(TransferErrorCode.AUTH_FAILED, `Authentication failed: the receiver at ${where} holds a different secret`));
  }
  channel.send(FrameType.AUTH, encodeBody({ proof: computeProof(secret, 'client', nonce, meta.nonce, version) }));
  const ok = await channel.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'AUTH_OK');
  if (ok.frame.header.type !== FrameType.AUTH_OK) throw fail(channel, unexpected(ok, 'AUTH_OK'));
  channel.handshakeDone();
  return version;
}

/** The receiver's side; resolves to the version, rejects with a TransferError (the channel then closed). */
export async function serverHandshake(channel: Channel, secret: Buffer | null): Promise<number> {
  const hello = await channel.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'HELLO');
  const meta = hello.meta;
  if (hello.frame.header.type !== FrameType.HELLO || meta === null) throw fail(channel, unexpected(hello, 'HELLO'));
  if (!isVersionRange(meta.versions) || !isBytes(meta.nonce, Size.NONCE_BYTES) || typeof meta.auth !== 'boolean') {
    throw fail(channel, protocol('Malformed HELLO: expected {versions: [min, max], nonce, auth}'));
  }
  const version = chooseVersion([Version.MIN, Version.MAX], meta.versions);
  if (version === null) throw fail(channel, protocol(`No common protocol version: the receiver speaks ${Version.MIN}..${Version.MAX}, the sender ${meta.versions.join('..')}`));
  if (secret !== null && !meta.auth) {
    throw fail(channel, new TransferError(TransferErrorCode.AUTH_REQUIRED, 'The receiver requires a secret: give --secret-file'));
  }
  const nonce = randomBytes(Size.NONCE_BYTES);
  if (secret === null) {
    // The sender decides: one with a secret refuses a receiver without one.
    channel.send(FrameType.HELLO_OK, encodeBody({ version, nonce, auth: false }));
    channel.handshakeDone();
    return version;
  }
  channel.send(FrameType.HELLO_OK, encodeBody({ version, nonce, auth: true, proof: computeProof(secret, 'server', meta.nonce, nonce, version) }));
  const auth = await channel.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'AUTH');
  if (auth.frame.header.type !== FrameType.AUTH || auth.meta === null) throw fail(channel, unexpected(auth, 'AUTH'));
  const proof = auth.meta.proof;
  if (!isBytes(proof, Size.PROOF_BYTES) || !timingSafeEqual(proof, computeProof(secret, 'client', meta.nonce, nonce, version))) {
    throw fail(channel, new TransferError(TransferErrorCode.AUTH_FAILED, 'Authentication failed: the sender holds a different secret'));
  }
  channel.send(FrameType.AUTH_OK, encodeBody({}));
  channel.handshakeDone();
  return version;
}

function fail(channel: Channel, err: TransferError): TransferError {
  channel.close(err);
  return err;
}
