/**
 * A bug is a crash, not an EIO: when the engine breaks the Volume contract or throws an untyped
 * error, the server logs the stack, answers nothing, and the process dies (buggy-server.ts).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { cleanup, startPortChild } from '../helpers/index.ts';
import { NbdClient } from './client.ts';

after(cleanup);

async function crashOn(mode: string, request: (client: NbdClient) => Promise<unknown>): Promise<{ code: number | null; stderr: string; outcome: string }> {
  const { port, exited, stderr } = await startPortChild(new URL('./buggy-server.ts', import.meta.url).pathname, [mode]);
  const client = await NbdClient.connect({ host: '127.0.0.1', port }, { exportName: 'disk', metaContexts: ['base:allocation'] });
  const outcome = await request(client).then(
    (r) => `answered ${JSON.stringify(r)}`,
    (err: Error) => `failed: ${err.message}`,
  );
  const code = await exited;
  return { code, stderr: stderr(), outcome };
}

test('invariants: a read the engine answers short crashes the node with the assertion in the log', async () => {
  const r = await crashOn('short-read', (c) => c.request(0, 0, 0, 4096));
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.outcome, /^answered/, 'the client gets no reply');
  assert.match(r.stderr, /ERROR nbd: bug serving NBD_CMD_READ offset 0 length 4096 [^\n]*peer=127\.0\.0\.1:\d+[^\n]*\n\s+AssertionError \[ERR_ASSERTION\]: the engine read returns the length asked for/);
  assert.match(r.stderr, /\n\s+at execute \(/, 'the log has the stack');
});

test('invariants: a block status run out of place crashes the node', async () => {
  const r = await crashOn('misplaced-run', (c) => c.blockStatus(0, 4096));
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.outcome, /^answered/);
  assert.match(r.stderr, /bug serving NBD_CMD_BLOCK_STATUS offset 0 length 4096 [^\n]*\n\s+AssertionError \[ERR_ASSERTION\]: the engine returned a run \[512, \+4096\) where one at 0 was due/);
});

test('invariants: an untyped error from the engine crashes the node instead of becoming EIO', async () => {
  const r = await crashOn('type-error', (c) => c.request(0, 0, 0, 512));
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.outcome, /^answered/);
  assert.match(r.stderr, /bug serving NBD_CMD_READ offset 0 length 512 [^\n]*\n\s+TypeError: Cannot read properties of null/);
});
