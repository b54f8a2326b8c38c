/** The loop's I/O gate against a fake clock: small fast I/O stays on the loop, slow I/O pauses it, pauses double and reset. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoopIoGate } from '../../src/flow/index.ts';

test('I/O gate: only small I/O goes on the loop, a slow one sends I/O to the pool for a pause that doubles while it stays slow', () => {
  let t = 1000;
  const gate = new LoopIoGate({ bytesMax: 4096, slowMs: 2, pauseMinMs: 50, pauseMaxMs: 150, now: () => t });
  assert.equal(gate.allows(4096), true);
  assert.equal(gate.allows(4097), false);
  /** Runs an I/O that takes `ms` of the fake clock. */
  const io = (ms: number) => gate.run(() => ((t += ms), 'done'));
  assert.equal(io(1), 'done');
  assert.equal(gate.allows(1), true, 'a fast I/O changes nothing');
  io(10); // went to the disk: paused for 50 ms after it ended
  assert.equal(gate.allows(1), false);
  t += 49;
  assert.equal(gate.allows(1), false);
  t += 1;
  assert.equal(gate.allows(1), true);
  io(10); // slow again: 100 ms
  t += 99;
  assert.equal(gate.allows(1), false);
  t += 1;
  assert.equal(gate.allows(1), true);
  io(10); // 150: the cap
  t += 149;
  assert.equal(gate.allows(1), false);
  t += 1;
  io(10); // still capped at 150
  t += 149;
  assert.equal(gate.allows(1), false);
  t += 1;
  io(1); // fast: the next pause starts at 50 again
  io(10);
  t += 49;
  assert.equal(gate.allows(1), false);
  t += 1;
  assert.equal(gate.allows(1), true);
});

test('I/O gate: an I/O that throws is timed too and its error goes to the caller', () => {
  let t = 0;
  const gate = new LoopIoGate({ bytesMax: 4096, slowMs: 2, pauseMinMs: 50, pauseMaxMs: 50, now: () => t });
  assert.throws(() => gate.run(() => ((t += 10), assert.fail('EIO'))), /EIO/);
  assert.equal(gate.allows(1), false, 'a slow failure pauses the loop as a slow success does');
});
