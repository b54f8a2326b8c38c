/**
 * The fixed newstyle handshake as a synchronous state machine: it takes parsed client messages,
 * sends replies through `send`, and says when to go on, close, or enter transmission.
 */
import type { Volume } from '../engine/index.ts';
import {
  decodeExportNameData,
  decodeInfoRequestData,
  decodeMetaContextRequestData,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionAck,
  encodeOptionError,
  encodeRepMetaContext,
  encodeRepServer,
} from './codec.ts';
import { allContexts, resolveQuery, SELECTED_CONTEXTS_MAX, type ContextSpec, type SelectedContext } from './contexts.ts';
import { throwIfBug } from '../util/bug.ts';
import { describeError, NbdError, NbdErrorCode, optionReplyErrorOf } from './errors.ts';
import type { NbdLimits } from './limits.ts';
import type { HandshakeEvent } from './parser.ts';
import { ClientFlag, HandshakeFlag, Info, Option, OptionReply } from './protocol.ts';
import { blockSizesOf, transmissionFlagsOf, type Session } from './transmission.ts';
import type { ExportProvider } from './types.ts';

/** Handshake flags this server sends. */
export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;

/** Most options one connection may send; more is treated as abuse and closes the connection. */
export const OPTIONS_PER_CONNECTION_MAX = 1024;

/** What the connection should do after a handshake message. */
export type HandshakeOutcome =
  | { kind: 'continue' }
  /** End the connection: gracefully (flush replies, then FIN) or at once; error null if normal. */
  | { kind: 'close'; error: NbdError | null; graceful: boolean }
  | { kind: 'transmission'; session: Session };

const CONTINUE: HandshakeOutcome = { kind: 'continue' };

/** One connection's handshake. */
export class Handshake {
  readonly #provider: ExportProvider;
  readonly #limits: NbdLimits;
  readonly #send: (buf: Buffer) => void;
  #noZeroes = false;
  #structured = false;
  /** Export the selected contexts belong to; they apply only if the client goes to this one. */
  #metaExport: string | null = null;
  #contexts: SelectedContext[] = [];
  #options = 0;

  constructor(opts: { provider: ExportProvider; limits: NbdLimits; send: (buf: Buffer) => void }) {
    this.#provider = opts.provider;
    this.#limits = opts.limits;
    this.#send = opts.send;
  }

  handle(event: HandshakeEvent): HandshakeOutcome {
    switch (event.kind) {
      case 'flags':
        return this.#clientFlags(event.clientFlags);
      case 'oversize':
        if (event.option !== Option.EXPORT_NAME) {
          const message = `Option data of ${event.length} bytes exceed the limit of ${this.#limits.optionBytesMax}`;
          this.#send(encodeOptionError(event.option, OptionReply.ERR_TOO_BIG, message));
        }
        return { kind: 'close', error: new NbdError(NbdErrorCode.LIMIT, `Option ${event.option} with ${event.length} bytes of data is too large`), graceful: true };
      case 'option':
        if (++this.#options > OPTIONS_PER_CONNECTION_MAX) {
          return { kind: 'close', error: new NbdError(NbdErrorCode.LIMIT, `More than ${OPTIONS_PER_CONNECTION_MAX} options`), graceful: false };
        }
        return this.#option(event.option, event.data);
    }
  }

  #clientFlags(flags: number): HandshakeOutcome {
    const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
    if ((flags & ~known) !== 0) return { kind: 'close', error: new NbdError(NbdErrorCode.PROTOCOL, `Unknown client flags 0x${flags.toString(16)}`), graceful: false };
    if ((flags & ClientFlag.FIXED_NEWSTYLE) === 0) return { kind: 'close', error: new NbdError(NbdErrorCode.PROTOCOL, 'Client does not speak fixed newstyle'), graceful: false };
    this.#noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
    return CONTINUE;
  }

  #option(option: number, data: Buffer): HandshakeOutcome {
    switch (option) {
      case Option.EXPORT_NAME:
        return this.#exportName(data);
      case Option.ABORT:
        this.#send(encodeOptionAck(option));
        return { kind: 'close', error: null, graceful: true };
      case Option.LIST:
        return this.#list(data);
      case Option.INFO:
      case Option.GO:
        return this.#infoOrGo(option, data);
      case Option.STRUCTURED_REPLY:
        if (data.length !== 0) return this.#error(option, OptionReply.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        if (this.#structured) return this.#error(option, OptionReply.ERR_INVALID, 'Structured replies are already negotiated');
        this.#structured = true;
        this.#send(encodeOptionAck(option));
        return CONTINUE;
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT:
        return this.#metaContext(option, data);
      case Option.STARTTLS:
        return this.#error(option, OptionReply.ERR_UNSUP, 'TLS is not supported');
      default:
        return this.#error(option, OptionReply.ERR_UNSUP, `Option ${option} is not supported`);
    }
  }

  #error(option: number, replyType: number, message: string): HandshakeOutcome {
    this.#send(encodeOptionError(option, replyType, message));
    return CONTINUE;
  }

  #exportName(data: Buffer): HandshakeOutcome {
    // NBD_OPT_EXPORT_NAME cannot be answered with an error: every failure closes the connection.
    const name = decodeExportNameData(data);
    if (name === null) return { kind: 'close', error: new NbdError(NbdErrorCode.PROTOCOL, 'Malformed NBD_OPT_EXPORT_NAME'), graceful: false };
    let volume: Volume;
    try {
      volume = this.#provider.openExport(name);
    } catch (err) {
      throwIfBug(err);
      const error = new NbdError(NbdErrorCode.PROTOCOL, `Export ${JSON.stringify(name)} cannot be opened: ${describeError(err)}`, { cause: err });
      return { kind: 'close', error, graceful: false };
    }
    const session = this.#session(name, volume);
    this.#guarded(volume, () => this.#send(encodeExportNameReply(volume.sizeBytes, session.transmissionFlags, this.#noZeroes)));
    return { kind: 'transmission', session };
  }

  #list(data: Buffer): HandshakeOutcome {
    if (data.length !== 0) return this.#error(Option.LIST, OptionReply.ERR_INVALID, 'NBD_OPT_LIST takes no data');
    let names: string[];
    try {
      names = this.#provider.listExports();
    } catch (err) {
      throwIfBug(err);
      return this.#error(Option.LIST, optionReplyErrorOf(err), describeError(err));
    }
    for (const name of names) this.#send(encodeRepServer(Option.LIST, name));
    this.#send(encodeOptionAck(Option.LIST));
    return CONTINUE;
  }

  #infoOrGo(option: number, data: Buffer): HandshakeOutcome {
    const request = decodeInfoRequestData(data);
    if (request === null) return this.#error(option, OptionReply.ERR_INVALID, 'Malformed NBD_OPT_INFO or NBD_OPT_GO');
    let volume: Volume;
    try {
      volume = this.#provider.openExport(request.name);
    } catch (err) {
      throwIfBug(err);
      return this.#error(option, optionReplyErrorOf(err), `Export ${JSON.stringify(request.name)}: ${describeError(err)}`);
    }
    const session = this.#session(request.name, volume);
    this.#guarded(volume, () => {
      this.#send(encodeInfoExport(option, volume.sizeBytes, session.transmissionFlags));
      if (request.infoTypes.includes(Info.NAME)) this.#send(encodeInfoString(option, Info.NAME, request.name));
      // Block sizes go out unrequested too: minimum 1 constrains nothing, and clients learn the
      // preferred size and the maximum request size.
      const sizes = blockSizesOf(volume, this.#limits.requestBytesMax);
      this.#send(encodeInfoBlockSize(option, sizes.minimum, sizes.preferred, sizes.maximum));
      this.#send(encodeOptionAck(option));
    });
    if (option === Option.GO) return { kind: 'transmission', session };
    volume.close();
    return CONTINUE;
  }

  #metaContext(option: number, data: Buffer): HandshakeOutcome {
    const isSet = option === Option.SET_META_CONTEXT;
    if (isSet && !this.#structured) {
      return this.#error(option, OptionReply.ERR_INVALID, 'NBD_OPT_SET_META_CONTEXT needs structured replies first');
    }
    const request = decodeMetaContextRequestData(data);
    if (request === null) return this.#error(option, OptionReply.ERR_INVALID, 'Malformed meta context request');
    let snapshots: string[] | null;
    try {
      this.#provider.openExport(request.name).close(); // Only to learn that it exists.
      snapshots = this.#provider.listSnapshots ? this.#provider.listSnapshots(request.name) : null;
    } catch (err) {
      throwIfBug(err);
      return this.#error(option, optionReplyErrorOf(err), `Export ${JSON.stringify(request.name)}: ${describeError(err)}`);
    }
    let found: ContextSpec[] = [];
    if (request.queries.length === 0) {
      found = isSet ? [] : allContexts(snapshots);
    } else {
      for (const query of request.queries) {
        const matched = resolveQuery(query, snapshots, isSet ? 'set' : 'list');
        if (matched === null) return this.#error(option, OptionReply.ERR_INVALID, `Query ${JSON.stringify(query)} has no namespace`);
        for (const spec of matched) if (!found.some((f) => f.name === spec.name)) found.push(spec);
      }
    }
    if (!isSet) {
      for (const spec of found) this.#send(encodeRepMetaContext(option, 0, spec.name));
      this.#send(encodeOptionAck(option));
      return CONTINUE;
    }
    if (found.length > SELECTED_CONTEXTS_MAX) {
      return this.#error(option, OptionReply.ERR_TOO_BIG, `More than ${SELECTED_CONTEXTS_MAX} meta contexts selected`);
    }
    this.#metaExport = request.name;
    this.#contexts = found.map((spec, i) => ({ ...spec, id: i + 1 }));
    for (const context of this.#contexts) this.#send(encodeRepMetaContext(option, context.id, context.name));
    this.#send(encodeOptionAck(option));
    return CONTINUE;
  }

  #session(exportName: string, volume: Volume): Session {
    return {
      exportName,
      volume,
      transmissionFlags: transmissionFlagsOf(volume),
      structuredReplies: this.#structured,
      contexts: this.#structured && this.#metaExport === exportName ? this.#contexts : [],
      requestBytesMax: this.#limits.requestBytesMax,
    };
  }

  /** Runs `fn`, closing `volume` if it throws, so that a failed reply does not leak the volume. */
  #guarded(volume: Volume, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      volume.close();
      throw err;
    }
  }
}
