/**
 * Structured logs (docs/observability.md, "Logs"): one JSON object per line with `time`, `level`,
 * `component`, `msg` and the fields bound to the logger (disk, request id, connection), or the
 * same as one readable line for a terminal. A level that is off costs one comparison, so hot
 * paths may log at debug without paying for it. The log is the node's record of events: once it
 * has a clock (setClock), each record carries a value of the node's hybrid logical clock, `hlc`.
 */
import { ObserveError, ObserveErrorCode } from './errors.ts';

/** The levels, least severe first. */
export const logLevels = ['debug', 'info', 'warn', 'error'] as const;
/** One of logLevels. */
export type LogLevel = (typeof logLevels)[number];
/** The formats a logger writes: `json` (one object per line) or `text` (for people at a terminal). */
export const logFormats = ['json', 'text'] as const;
/** One of logFormats. */
export type LogFormat = (typeof logFormats)[number];
/** Fields of a log record besides time, level and message. */
export type LogFields = Record<string, unknown>;

/** Severity rank of each level: a record is written when its rank is at least the logger's. */
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** Rank above every level: nothing is written. */
const silentRank = 100;

/** Where the records of one logger and all its children go. */
interface Output {
  min: number;
  format: LogFormat;
  write: (line: string) => void;
  now: () => Date;
  /** A new value of the node's clock for each record written, as its decimal string; null: none. */
  hlc: (() => string) | null;
}

/** Options of Logger.create. */
export interface LoggerOptions {
  /** Least severe level written. Default `info`. */
  level?: LogLevel;
  /** Default `json`. */
  format?: LogFormat;
  /** Receives each record as one line, newline included. */
  write: (line: string) => void;
  /** Clock of the `time` field. Default: the system clock. */
  now?: () => Date;
  /** The `hlc` field's clock (as setClock takes it). Default: none, and records carry no `hlc`. */
  hlc?: () => string;
}

/** Checks a level name from a user (`--log-level`). */
export function parseLogLevel(text: string): LogLevel {
  if ((logLevels as readonly string[]).includes(text)) return text as LogLevel;
  throw new ObserveError(ObserveErrorCode.INVALID, `Unknown log level '${text}': expected one of ${logLevels.join(', ')}`);
}

/** Checks a format name from a user (`--log-format`). */
export function parseLogFormat(text: string): LogFormat {
  if ((logFormats as readonly string[]).includes(text)) return text as LogFormat;
  throw new ObserveError(ObserveErrorCode.INVALID, `Unknown log format '${text}': expected one of ${logFormats.join(', ')}`);
}

/**
 * A logger with bound fields. `child()` adds fields (a component, a disk, a request id) without
 * copying the output; every child writes where its root does, at the root's level.
 */
export class Logger {
  readonly #out: Output;
  readonly #bound: LogFields;

  private constructor(out: Output, bound: LogFields) {
    this.#out = out;
    this.#bound = bound;
  }

  /** A root logger writing to `opts.write`. */
  static create(opts: LoggerOptions): Logger {
    return new Logger({ min: rank[opts.level ?? 'info'], format: opts.format ?? 'json', write: opts.write, now: opts.now ?? (() => new Date()), hlc: opts.hlc ?? null }, {});
  }

  /** A logger that writes nothing (the default of components given none). */
  static silent(): Logger {
    return new Logger({ min: silentRank, format: 'json', write: () => {}, now: () => new Date(), hlc: null }, {});
  }

  /**
   * From now on every record written through this logger's root, and so through all its
   * children, carries `hlc`: a new value of `hlc()` (the node's hybrid logical clock, formatted
   * as formatHlc does), read as the record is written. A node sets it once its clock is open.
   */
  setClock(hlc: (() => string) | null): void {
    this.#out.hlc = hlc;
  }

  /** A logger whose records carry `fields` too (later fields win over earlier ones of the same name). */
  child(fields: LogFields): Logger {
    return new Logger(this.#out, { ...this.#bound, ...fields });
  }

  /** Whether records of `level` are written: guard the building of costly fields with it. */
  enabled(level: LogLevel): boolean {
    return rank[level] >= this.#out.min;
  }

  debug(msg: string, fields?: LogFields): void {
    if (rank.debug >= this.#out.min) this.#write('debug', msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    if (rank.info >= this.#out.min) this.#write('info', msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    if (rank.warn >= this.#out.min) this.#write('warn', msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    if (rank.error >= this.#out.min) this.#write('error', msg, fields);
  }

  #write(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    const out = this.#out;
    const record: LogFields = { time: out.now().toISOString(), level, component: this.#bound.component ?? 'tessera', msg };
    if (out.hlc !== null) record.hlc = out.hlc();
    for (const [k, v] of Object.entries(this.#bound)) if (k !== 'component') record[k] = plain(v);
    if (fields !== undefined) for (const [k, v] of Object.entries(fields)) if (v !== undefined) record[k] = plain(v);
    out.write(out.format === 'json' ? jsonLine(record) : textLine(record));
  }
}

/** A value as it goes into a record: errors become their code, message and stack. */
function plain(v: unknown): unknown {
  if (v instanceof Error) {
    const code = (v as { code?: unknown }).code;
    return { name: v.name, ...(typeof code === 'string' ? { code } : {}), message: v.message, stack: v.stack };
  }
  if (typeof v === 'bigint') return v.toString();
  return v;
}

function jsonLine(record: LogFields): string {
  try {
    return JSON.stringify(record) + '\n';
  } catch {
    // A field that does not serialise (a cycle) must not lose the record.
    return JSON.stringify({ time: record.time, level: record.level, component: record.component, msg: record.msg, hlc: record.hlc, logError: 'fields not serialisable' }) + '\n';
  }
}

/** `TIME LEVEL component: msg key=value …`, an error's stack on the lines below. */
function textLine(record: LogFields): string {
  const { time, level, component, msg, ...rest } = record;
  let line = `${time as string} ${(level as string).toUpperCase().padEnd(5)} ${component as string}: ${msg as string}`;
  let stack = '';
  for (const [k, v] of Object.entries(rest)) {
    if (v !== null && typeof v === 'object' && 'stack' in v && 'message' in v) {
      line += ` ${k}=${quote(String((v as { message: unknown }).message))}`;
      if (typeof v.stack === 'string') stack += '\n    ' + v.stack.split('\n').join('\n    ');
      continue;
    }
    line += ` ${k}=${typeof v === 'string' ? quote(v) : JSON.stringify(v)}`;
  }
  return line + stack + '\n';
}

/** A string as is when it needs no quotes, else JSON-quoted. */
function quote(s: string): string {
  return /^[\w.:/@+-]+$/.test(s) ? s : JSON.stringify(s);
}
