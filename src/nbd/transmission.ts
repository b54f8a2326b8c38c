/**
 * The transmission phase without the socket: what an agreed session is, which requests are
 * acceptable (validateRequest), what each command does to the volume, and how replies are
 * encoded. The connection feeds requests in and writes the replies' buffers out.
 */
import assert from 'node:assert/strict';
import type { Volume } from '../engine/index.ts';
import { throwIfBug } from '../util/bug.ts';
import {
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeOffsetDataHead,
  encodeSimpleReply,
  type BlockDescriptor,
  type RequestHeader,
} from './codec.ts';
import { EXTENTS_PER_REPLY_MAX, queryContext, type SelectedContext } from './contexts.ts';
import { describeError, errnoOf } from './errors.ts';
import { Command, CommandFlag, Errno, ReplyFlag, TransmissionFlag } from './protocol.ts';
import { commandName, describeRejection, RequestRule, type Rejection, type RequestRuleId } from './rules.ts';

/** What the handshake agreed on for one connection. */
export interface Session {
  exportName: string;
  volume: Volume;
  /** Transmission flags sent to the client. */
  transmissionFlags: number;
  /** Structured replies were negotiated. */
  structuredReplies: boolean;
  /** Contexts selected for NBD_CMD_BLOCK_STATUS (empty if none). */
  contexts: SelectedContext[];
  /** Largest read or write payload accepted. */
  requestBytesMax: number;
}

/** Transmission flags of a volume: everything Tessera supports, minus writes if read-only. */
export function transmissionFlagsOf(volume: Volume): number {
  // CAN_MULTI_CONN is truthful: Volume.flush() makes everything acknowledged on any volume of the
  // store durable, and FUA writes are durable before their reply, whichever connection sent them.
  let flags = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.CAN_MULTI_CONN;
  if (volume.readOnly) return flags | TransmissionFlag.READ_ONLY;
  flags |= TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES;
  return flags | TransmissionFlag.SEND_FAST_ZERO;
}

/** Block size constraints to advertise: any alignment works, the engine block is preferred. */
export function blockSizesOf(volume: Volume, requestBytesMax: number): { minimum: number; preferred: number; maximum: number } {
  // The protocol wants a power of two for the preferred size, no larger than the maximum.
  const largestPowerOfTwoAtMost = (n: number): number => 2 ** Math.floor(Math.log2(n));
  const preferred = Math.min(largestPowerOfTwoAtMost(Math.max(512, volume.blockBytes)), largestPowerOfTwoAtMost(requestBytesMax));
  return { minimum: 1, preferred, maximum: requestBytesMax };
}

/** The command flags each command accepts, before negotiation narrows them. */
const flagsAllowed: Record<number, number> = {
  [Command.READ]: CommandFlag.FUA,
  [Command.WRITE]: CommandFlag.FUA,
  [Command.FLUSH]: CommandFlag.FUA,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.FUA | CommandFlag.REQ_ONE,
};

/** Command types the protocol defines (NBD_CMD_DISC included, though it never gets here). */
const knownCommands = new Set<number>(Object.values(Command));

/** A rejection of `header` for `rule`: `summary` says what was wrong, the request's fields follow. */
function reject(rule: RequestRuleId, errno: number, summary: string, header: RequestHeader, extra = ''): Rejection {
  const flags = header.flags === 0 ? '' : ` flags 0x${header.flags.toString(16)}`;
  return { rule, errno, message: `${summary}: ${commandName(header.type)}${flags} offset ${header.offset} length ${header.length}${extra}` };
}

function notNegotiated(header: RequestHeader): Rejection {
  return reject(RequestRule.COMMAND_NOT_NEGOTIATED, Errno.EINVAL, `${commandName(header.type)} not negotiated`, header);
}

/**
 * Decides whether a request is acceptable: null if it is, else the rule it broke, the NBD error
 * to reply with and a message (see rules.ts). The one gate: code past it trusts the request.
 * NBD_CMD_DISC never gets here. `sizeBytes` is the export's current size.
 */
export function validateRequest(header: RequestHeader, session: Session, sizeBytes: number): Rejection | null {
  const { type, flags, offset, length } = header;
  const advertised = session.transmissionFlags;
  const isWrite = type === Command.WRITE || type === Command.TRIM || type === Command.WRITE_ZEROES;

  if (!knownCommands.has(type)) return reject(RequestRule.UNKNOWN_COMMAND, Errno.EINVAL, 'Unknown command', header);
  const allowed = flagsAllowed[type];
  // Known but never offered (CACHE, RESIZE), or not advertised for this export.
  if (allowed === undefined) return notNegotiated(header);
  if (isWrite && (advertised & TransmissionFlag.READ_ONLY) !== 0) return reject(RequestRule.READ_ONLY, Errno.EPERM, 'Write to a read-only export', header);
  if (type === Command.TRIM && (advertised & TransmissionFlag.SEND_TRIM) === 0) return notNegotiated(header);
  if (type === Command.WRITE_ZEROES && (advertised & TransmissionFlag.SEND_WRITE_ZEROES) === 0) return notNegotiated(header);
  if (type === Command.BLOCK_STATUS) {
    if (!session.structuredReplies) return reject(RequestRule.STRUCTURED_REPLIES_NOT_NEGOTIATED, Errno.EINVAL, 'Block status without structured replies negotiated', header);
    if (session.contexts.length === 0) return reject(RequestRule.NO_META_CONTEXT, Errno.EINVAL, 'Block status without a metadata context selected', header);
  }

  if ((flags & ~allowed) !== 0) return reject(RequestRule.FLAG_NOT_VALID, Errno.EINVAL, `Flags 0x${(flags & ~allowed).toString(16)} not valid on ${commandName(type)}`, header);
  if ((flags & CommandFlag.FUA) !== 0 && (advertised & TransmissionFlag.SEND_FUA) === 0) return reject(RequestRule.FUA_NOT_NEGOTIATED, Errno.EINVAL, 'FUA not negotiated', header);
  if ((flags & CommandFlag.FAST_ZERO) !== 0 && (advertised & TransmissionFlag.SEND_FAST_ZERO) === 0) {
    return reject(RequestRule.FAST_ZERO_NOT_NEGOTIATED, Errno.EINVAL, 'FAST_ZERO not negotiated', header);
  }

  if (type === Command.FLUSH) return offset === 0 && length === 0 ? null : reject(RequestRule.FLUSH_WITH_RANGE, Errno.EINVAL, 'Flush with a nonzero offset or length', header);
  if (length === 0) return reject(RequestRule.ZERO_LENGTH, Errno.EINVAL, 'Length 0', header);
  if ((type === Command.READ || type === Command.WRITE) && length > session.requestBytesMax) {
    return reject(RequestRule.PAYLOAD_TOO_LARGE, Errno.EINVAL, `Length exceeds the maximum payload ${session.requestBytesMax}`, header);
  }
  if (offset > sizeBytes || length > sizeBytes - offset) {
    // The protocol asks for ENOSPC on writes past the end, EINVAL for everything else.
    const errno = type === Command.WRITE || type === Command.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
    return reject(RequestRule.PAST_END, errno, 'Offset+length past the end of the export', header, ` size ${sizeBytes}`);
  }
  return null;
}

/** What a request's reply carries, before encoding. */
export type Reply =
  | { kind: 'ok' }
  | { kind: 'error'; errno: number; message: string }
  | { kind: 'data'; offset: number; data: Buffer }
  | { kind: 'status'; chunks: { contextId: number; extents: BlockDescriptor[] }[] };

/**
 * Carries out one request (header validated here first) and describes the reply. A rejection or
 * a failure of the world (a typed error, a system error) becomes an error reply through errnoOf,
 * with its message; a bug (an assertion, any other error) is thrown, for the connection to crash
 * the process with. A read may land in `readInto`, which then backs the reply's data.
 */
export async function execute(header: RequestHeader, payload: Buffer | null, session: Session, readInto?: Buffer): Promise<Reply> {
  const volume = session.volume;
  const { type, flags, offset, length } = header;
  const fua = (flags & CommandFlag.FUA) !== 0;
  try {
    // The size is read per request: it follows resizes (and throws if the disk went away).
    const rejection = validateRequest(header, session, volume.sizeBytes);
    if (rejection !== null) return { kind: 'error', errno: rejection.errno, message: describeRejection(rejection) };
    switch (type) {
      case Command.READ: {
        const data = await volume.read(offset, length, readInto);
        // A simple reply promises exactly `length` bytes; anything else would desync the stream.
        assert.equal(data.length, length, 'the engine read returns the length asked for');
        return { kind: 'data', offset, data };
      }
      case Command.WRITE:
        // The parser yields a write without its payload only when it is over the limit, which
        // validateRequest refused: a write of other bytes than the header announced would land
        // the client's data at the wrong place.
        assert.ok(payload !== null && payload.length === length, 'a valid write has its whole payload');
        await volume.write(offset, payload, { fua });
        return { kind: 'ok' };
      case Command.FLUSH:
        await volume.flush();
        return { kind: 'ok' };
      case Command.TRIM:
        await volume.trim(offset, length, { fua });
        return { kind: 'ok' };
      case Command.WRITE_ZEROES:
        // FAST_ZERO needs nothing: the engine records zeroes as metadata, never writing them out.
        await volume.writeZeroes(offset, length, { fua, mayTrim: (flags & CommandFlag.NO_HOLE) === 0 });
        return { kind: 'ok' };
      case Command.BLOCK_STATUS: {
        const extentsMax = (flags & CommandFlag.REQ_ONE) !== 0 ? 1 : EXTENTS_PER_REPLY_MAX;
        const chunks = [];
        for (const context of session.contexts) {
          chunks.push({ contextId: context.id, extents: await queryContext(volume, context, offset, length, extentsMax) });
        }
        return { kind: 'status', chunks };
      }
      default:
        assert.fail(`validateRequest let command ${type} through`);
    }
  } catch (err) {
    throwIfBug(err);
    return { kind: 'error', errno: errnoOf(err), message: describeError(err) };
  }
}

/**
 * The buffers of a reply, in order, for one corked write: simple replies unless structured
 * replies were negotiated; then reads, errors and block status are structured chunks (other
 * successes stay simple, as the protocol allows).
 */
export function encodeReply(cookie: bigint, reply: Reply, structured: boolean): Buffer[] {
  switch (reply.kind) {
    case 'ok':
      return [encodeSimpleReply(cookie, Errno.OK)];
    case 'error':
      return [structured ? encodeErrorChunk(cookie, ReplyFlag.DONE, reply.errno, reply.message) : encodeSimpleReply(cookie, reply.errno)];
    case 'data':
      if (!structured) return [encodeSimpleReply(cookie, Errno.OK), reply.data];
      return [encodeOffsetDataHead(cookie, ReplyFlag.DONE, reply.offset, reply.data.length), reply.data];
    case 'status':
      return reply.chunks.map((c, i) =>
        encodeBlockStatusChunk(cookie, i === reply.chunks.length - 1 ? ReplyFlag.DONE : 0, c.contextId, c.extents),
      );
  }
}
