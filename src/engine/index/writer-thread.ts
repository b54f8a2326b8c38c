/**
 * The index writer's thread: makes a batch of index changes, planned on the main thread, in one
 * LMDB write transaction of its own (see writer.ts). It opens the same environment as the
 * main thread; LMDB lets one write transaction run at a time, so a main-thread transaction that
 * comes meanwhile waits for this one to commit.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BlockIndex } from './block-index.ts';
import { entryValueBytes, indexKeyBytes } from '../format.ts';
import type { WriterReply, WriterRequest } from './writer.ts';

const index = new BlockIndex(workerData.path as string);
const port = parentPort!;

port.on('message', (m: WriterRequest | 'close') => {
  if (m === 'close') {
    void index.close().finally(() => port.close());
    return;
  }
  let reply: WriterReply;
  try {
    const keys = Buffer.from(m.keys);
    const values = Buffer.from(m.values);
    const puts = new Uint8Array(m.puts);
    index.root.transactionSync(() => {
      let v = 0;
      for (let i = 0; i < puts.length; i++) {
        const key = keys.subarray(i * indexKeyBytes, (i + 1) * indexKeyBytes);
        if (puts[i]) {
          index.blocks.putSync(key, values.subarray(v, v + entryValueBytes));
          v += entryValueBytes;
        } else index.blocks.removeSync(key);
      }
      index.meta.putSync('applied', m.applied);
      index.meta.putSync('seqNext', m.seqNext);
      for (const [seg, bytes] of m.segments) index.segments.putSync(seg, bytes);
      for (const [seg, end] of m.ends) index.segmentEnds!.putSync(seg, end);
    });
    reply = { id: m.id, ok: true };
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    reply = { id: m.id, ok: false, code: e?.code, message: String(e?.message ?? err) };
  }
  port.postMessage(reply);
});
