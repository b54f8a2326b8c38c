/**
 * The thread module of test/flow/thread-pool.test.ts: tasks that add, spin, fail or exit, so
 * the pool's queue, errors and failures can be seen without any real work.
 */
import { serveTasks } from '../../src/flow/index.ts';

/** Requests this thread answers. */
export type EchoRequest =
  | { op: 'add'; value: number }
  | { op: 'spin'; ms: number; pad?: Uint8Array }
  | { op: 'sum'; data: Uint8Array }
  | { op: 'fail'; code?: string }
  | { op: 'exit'; code: number };

/** What the pool sends first: added to every `add`. */
let offset = 0;

serveTasks<EchoRequest, number>({
  init(n) {
    offset = n;
  },
  handle(req) {
    switch (req.op) {
      case 'add':
        return req.value + offset;
      case 'spin': {
        const until = performance.now() + req.ms;
        while (performance.now() < until);
        return null;
      }
      case 'sum':
        return req.data.reduce((a, b) => a + b, 0);
      case 'fail':
        throw Object.assign(new Error('task failed on purpose'), req.code === undefined ? {} : { code: req.code });
      case 'exit':
        process.exit(req.code);
    }
  },
  codeOfUncoded: 'TEST_UNCODED',
});
