import { CodedError } from '../util/coded-error.ts';

/** Stable codes of ObserveError. */
export const ObserveErrorCode = {
  /** A log level or log format that is not one of the known names. */
  INVALID: 'OBSERVE_INVALID',
} as const;

/** One of the ObserveErrorCode values. */
export type ObserveErrorCodeValue = (typeof ObserveErrorCode)[keyof typeof ObserveErrorCode];

/** The observability room's one error class: a logging or metrics setting it cannot take. */
export class ObserveError extends CodedError<ObserveErrorCodeValue> {}
