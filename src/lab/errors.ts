import { CodedError } from '../util/coded-error.ts';

/** Stable codes of LabError. */
export const LabErrorCode = {
  /** The topology or a link's value is wrong (unknown host, bad delay, duplicate name...). */
  INVALID: 'LAB_INVALID',
  /** The lab needs root (network namespaces, TUN devices). */
  NOT_ROOT: 'LAB_NOT_ROOT',
  /** The forwarding stage (build/tessera-wire) is not built. */
  NOT_BUILT: 'LAB_NOT_BUILT',
  /** `lab up` found a lab already up in its state directory. */
  ALREADY_UP: 'LAB_ALREADY_UP',
  /** No lab is up in the state directory. */
  NOT_UP: 'LAB_NOT_UP',
  /** No such host or link in the running lab. */
  NOT_FOUND: 'LAB_NOT_FOUND',
  /** A system command (`ip`) or a forwarding stage failed. */
  SYSTEM: 'LAB_SYSTEM',
} as const;

/** One of the LabErrorCode values. */
export type LabErrorCodeValue = (typeof LabErrorCode)[keyof typeof LabErrorCode];

/** The lab's one error class; its message is the one line the user sees. */
export class LabError extends CodedError<LabErrorCodeValue> {}
