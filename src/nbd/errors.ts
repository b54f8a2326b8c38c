import assert from 'node:assert/strict';
import { isBug } from '../util/bug.ts';
import { CodedError } from '../util/coded-error.ts';
import { EngineError, EngineErrorCode } from '../engine/index.ts';
import { Errno, OptionReply } from './protocol.ts';

/** Stable codes of NbdError. */
export const NbdErrorCode = {
  /** The client broke the protocol: bad magic, unknown client flags, malformed stream. */
  PROTOCOL: 'NBD_ERR_PROTOCOL',
  /** A limit was exceeded: option size, connections, options per connection. */
  LIMIT: 'NBD_ERR_LIMIT',
  /** The client did not finish the handshake in time. */
  TIMEOUT: 'NBD_ERR_TIMEOUT',
  /** A listen address is taken, or a path to listen on is not a stale socket. */
  ADDRESS_IN_USE: 'NBD_ERR_ADDRESS_IN_USE',
  /** The server is closed or closing. */
  CLOSED: 'NBD_ERR_CLOSED',
  /** A bad argument to the server's API, such as a limit that is not a positive integer. */
  INVALID_ARGUMENT: 'NBD_ERR_INVALID_ARGUMENT',
  /** Client: the server cannot be reached (refused, no such socket, no answer). */
  UNREACHABLE: 'NBD_ERR_UNREACHABLE',
  /** Client: the server has no export of the name asked. */
  NOT_FOUND: 'NBD_ERR_NOT_FOUND',
  /** Client: the server refused an export or failed a request with an error reply. */
  REFUSED: 'NBD_ERR_REFUSED',
  /** Client: the connection to the server went away, or broke, mid-way. */
  LOST: 'NBD_ERR_LOST',
} as const;

/** One of the NbdErrorCode values. */
export type NbdErrorCodeValue = (typeof NbdErrorCode)[keyof typeof NbdErrorCode];

/** The NBD server's one error class: what a client or the caller did wrong, with a stable code. */
export class NbdError extends CodedError<NbdErrorCodeValue> {}

/**
 * The NBD error number to reply with when a command fails with `err`, a failure of the world
 * (see util/bug.ts: bugs never get here, they crash the process): the one place that decides it.
 * EngineErrors map by code; every other typed error (a hydrating volume's repository failing)
 * and a system error that reached us unwrapped (a drive's EIO) are EIO.
 */
export function errnoOf(err: unknown): number {
  assert.ok(!isBug(err), 'errnoOf is given failures of the world, not bugs');
  if (!(err instanceof EngineError)) return Errno.EIO;
  switch (err.code) {
    case EngineErrorCode.READ_ONLY:
      return Errno.EPERM;
    case EngineErrorCode.OUT_OF_RANGE:
    case EngineErrorCode.INVALID:
      return Errno.EINVAL;
    case EngineErrorCode.NO_SPACE:
      return Errno.ENOSPC;
    case EngineErrorCode.CLOSED:
      // The store closes when the node shuts down; ESHUTDOWN tells the client to disconnect.
      return Errno.ESHUTDOWN;
    case EngineErrorCode.IO:
      // A read the drive failed, or any write or flush while the drive is failing.
      return Errno.EIO;
    case EngineErrorCode.CORRUPT:
      return Errno.EIO;
    default:
      return Errno.EIO;
  }
}

/** The option reply error to send when opening or listing an export fails with `err`, a failure of the world. */
export function optionReplyErrorOf(err: unknown): number {
  assert.ok(!isBug(err), 'optionReplyErrorOf is given failures of the world, not bugs');
  if (!(err instanceof EngineError)) return OptionReply.ERR_POLICY;
  switch (err.code) {
    case EngineErrorCode.NOT_FOUND:
    case EngineErrorCode.INVALID:
      return OptionReply.ERR_UNKNOWN;
    case EngineErrorCode.CLOSED:
      return OptionReply.ERR_SHUTDOWN;
    default:
      return OptionReply.ERR_POLICY;
  }
}

/** A short, single-line description of `err` for logs and for messages sent to clients. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
}
