/**
 * The one base of every subsystem's error class: a stable `code` from the subsystem's own table,
 * a sentence-case message without a final period, and `cause` chained. Subclasses only fix the
 * code type and the name, so `err instanceof CodedError` tells "the world did something wrong"
 * (a typed error with a code) from a bug (anything else, which the node logs and crashes on).
 */
export class CodedError<Code extends string = string> extends Error {
  /** One of the subsystem's stable codes, e.g. ENGINE_NOT_FOUND. */
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    // The subclass's own name (EngineError, NbdError, …) without each repeating the line.
    this.name = new.target.name;
  }
}

/** The values of a `{ NAME: 'CODE' } as const` table, as a type. */
export type CodeOf<T extends Record<string, string>> = T[keyof T];
