import { CodedError } from '../util/coded-error.ts';

/** Stable codes of CliError. */
export const CliErrorCode = {
  /** The command line is wrong: unknown command or option, missing argument, bad SIZE. */
  USAGE: 'CLI_USAGE',
  /** The command could not be carried out (the node's own failures are the client's ClientError). */
  FAILED: 'CLI_FAILED',
  /** The command ran and found damaged data (`tessera scrub`). */
  DAMAGED: 'CLI_DAMAGED',
} as const;

/** One of the CliErrorCode values. */
export type CliErrorCodeValue = (typeof CliErrorCode)[keyof typeof CliErrorCode];

/** The CLI's one error class; its message is the one line the user sees. */
export class CliError extends CodedError<CliErrorCodeValue> {
  /** Process exit status: 2 for usage errors, 3 for damage found, 1 for everything else. */
  get exitCode(): number {
    return this.code === CliErrorCode.USAGE ? 2 : this.code === CliErrorCode.DAMAGED ? 3 : 1;
  }
}

/** Shorthand for a usage error. */
export function usageError(message: string): CliError {
  return new CliError(CliErrorCode.USAGE, message);
}
