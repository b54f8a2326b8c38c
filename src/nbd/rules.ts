/**
 * The rules a transmission request must keep, each with a stable id: validateRequest
 * (transmission.ts) names the one a request broke, and the id and a message saying what was
 * wrong travel in the structured error reply and the log, as nbdkit's validate_request does. The
 * ids are stable (clients and log readers may match them); the messages are for people.
 */
import { Command, Errno } from './protocol.ts';

/** Stable ids of the request rules, in the order validateRequest checks them. */
export const RequestRule = {
  /** The command type is not one the protocol defines. */
  UNKNOWN_COMMAND: 'unknown-command',
  /** The command is defined but this export did not offer it (NBD_CMD_CACHE, RESIZE; TRIM or WRITE_ZEROES unadvertised). */
  COMMAND_NOT_NEGOTIATED: 'command-not-negotiated',
  /** A write, trim or write-zeroes on a read-only export. */
  READ_ONLY: 'read-only',
  /** NBD_CMD_BLOCK_STATUS on a connection that did not negotiate structured replies. */
  STRUCTURED_REPLIES_NOT_NEGOTIATED: 'structured-replies-not-negotiated',
  /** NBD_CMD_BLOCK_STATUS on a connection with no metadata context selected. */
  NO_META_CONTEXT: 'no-meta-context',
  /** A command flag this command does not take (or no command takes, or not offered: DF). */
  FLAG_NOT_VALID: 'flag-not-valid',
  /** NBD_CMD_FLAG_FUA on an export that did not advertise it. */
  FUA_NOT_NEGOTIATED: 'fua-not-negotiated',
  /** NBD_CMD_FLAG_FAST_ZERO on an export that did not advertise it. */
  FAST_ZERO_NOT_NEGOTIATED: 'fast-zero-not-negotiated',
  /** NBD_CMD_FLUSH with a nonzero offset or length. */
  FLUSH_WITH_RANGE: 'flush-with-range',
  /** Length 0 on a command other than flush. */
  ZERO_LENGTH: 'zero-length',
  /** A read or write longer than the maximum payload (NbdLimits.requestBytesMax). */
  PAYLOAD_TOO_LARGE: 'payload-too-large',
  /** offset + length past the end of the export. */
  PAST_END: 'past-end',
} as const;

/** One of the RequestRule ids. */
export type RequestRuleId = (typeof RequestRule)[keyof typeof RequestRule];

/** Why a request is refused: the rule it broke, the NBD error to reply with, and what was wrong. */
export interface Rejection {
  rule: RequestRuleId;
  /** NBD error number of the reply (Errno). */
  errno: number;
  /** Sentence-case, no final period; names the command and the values that broke the rule. */
  message: string;
}

const commandNames = new Map<number, string>(Object.entries(Command).map(([name, value]) => [value, `NBD_CMD_${name}`]));
const errnoNames = new Map<number, string>(Object.entries(Errno).map(([name, value]) => [value, name]));

/** NBD_CMD_READ and friends; an unknown type as `command N`. */
export function commandName(type: number): string {
  return commandNames.get(type) ?? `command ${type}`;
}

/** EINVAL and friends; an unknown number as `error N`. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `error ${errno}`;
}

/** The text of a rejection as the error chunk and the log carry it: `rule: message`. */
export function describeRejection(rejection: Rejection): string {
  return `${rejection.rule}: ${rejection.message}`;
}
