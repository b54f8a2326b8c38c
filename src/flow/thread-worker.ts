/**
 * The thread side of a ThreadPool (thread-pool.ts): a thread's module calls serveTasks once.
 * Messages are `{init}` first, then `{seq, req}`; replies `{seq, result}` or
 * `{seq, error: {code, message}}`. Results travel as transferred ArrayBuffers where possible.
 */
import { parentPort } from 'node:worker_threads';
import { transferablesOf, type TaskFailure } from './thread-pool.ts';

/** What a thread does with its messages. */
export interface TaskHandlers<Req, Init> {
  /** Takes the pool's first message (e.g. keys). */
  init(init: Init): void;
  /** Runs one task; what it throws goes back as a TaskFailure. */
  handle(req: Req): unknown;
  /** Code of a failure whose error has none (a bug, or a library's plain Error). */
  codeOfUncoded: string;
}

/** Answers the pool's messages on this thread until it is terminated. */
export function serveTasks<Req, Init>(handlers: TaskHandlers<Req, Init>): void {
  const port = parentPort;
  if (port === null) throw new Error('serveTasks runs on a worker thread');
  port.on('message', (msg: { init: Init } | { seq: number; req: Req }) => {
    if ('init' in msg) {
      handlers.init(msg.init);
      return;
    }
    let result: unknown;
    try {
      result = handlers.handle(msg.req);
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      const error: TaskFailure = { code: typeof e?.code === 'string' ? e.code : handlers.codeOfUncoded, message: typeof e?.message === 'string' ? e.message : String(err) };
      port.postMessage({ seq: msg.seq, error });
      return;
    }
    port.postMessage({ seq: msg.seq, result }, transferablesOf(result));
  });
}
