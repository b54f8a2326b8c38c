/**
 * An API server whose store has a bug, for api.test.ts: prints `port N`, logs to stderr as the
 * node does, and serves until GET /api/v1/disks (listDisks throws a TypeError) crashes it.
 */
import { createApiServer } from '../../src/api/index.ts';
import type { Store } from '../../src/engine/index.ts';
import { Logger } from '../../src/observe/index.ts';

const store = {
  listDisks(): never {
    throw new TypeError('secret detail of a bug');
  },
} as unknown as Store;
const server = createApiServer({ store, log: Logger.create({ format: 'text', write: (line) => process.stderr.write(line) }) });
const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`port ${port}\n`);
