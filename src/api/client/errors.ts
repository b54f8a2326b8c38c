import { CodedError } from '../../util/coded-error.ts';
import type { ApiErrorCodeValue } from './wire.ts';

/** Stable codes of ClientError. */
export const ClientErrorCode = {
  /** The API URL is not one the client can use. */
  BAD_URL: 'CLIENT_BAD_URL',
  /** No connection to the node could be made. */
  UNREACHABLE: 'CLIENT_UNREACHABLE',
  /** The node did not answer within the time limit. */
  TIMEOUT: 'CLIENT_TIMEOUT',
  /** The node answered with an error reply; `status` and `nodeCode` say which. */
  REFUSED: 'CLIENT_REFUSED',
  /** The reply is not what the API sends: not HTTP/1.1, not JSON, too long, framed wrongly. */
  BAD_REPLY: 'CLIENT_BAD_REPLY',
  /** The connection was lost before the reply was complete. */
  LOST: 'CLIENT_LOST',
  /** The client was closed. */
  CLOSED: 'CLIENT_CLOSED',
} as const;

/** One of the ClientErrorCode values. */
export type ClientErrorCodeValue = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

/** The client's one error class; its message is one line, written for whoever runs the client. */
export class ClientError extends CodedError<ClientErrorCodeValue> {
  /** HTTP status of an error reply (REFUSED), else null. */
  readonly status: number | null;
  /** The node's `error.code` of an error reply (REFUSED), else null. */
  readonly nodeCode: ApiErrorCodeValue | null;
  constructor(code: ClientErrorCodeValue, message: string, options?: { cause?: unknown; status?: number; nodeCode?: ApiErrorCodeValue | null }) {
    super(code, message, options);
    this.status = options?.status ?? null;
    this.nodeCode = options?.nodeCode ?? null;
  }
}

/** The error of a reply that is not a success: the node's `error.message`, else its status and `what` was asked. */
export function replyError(status: number, body: unknown, what: string): ClientError {
  const error = (body as { error?: { message?: unknown; code?: unknown } } | null)?.error;
  const message = typeof error?.message === 'string' ? error.message : `the node answered HTTP ${status} to ${what}`;
  const nodeCode = typeof error?.code === 'string' ? (error.code as ApiErrorCodeValue) : null;
  return new ClientError(ClientErrorCode.REFUSED, message, { status, nodeCode });
}
