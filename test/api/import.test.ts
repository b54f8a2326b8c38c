/** The import route's pure parts: which blocks of a piece are written. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nonZeroRuns } from '../../src/api/import.ts';

test('nonZeroRuns: 64 KiB blocks that are all zeroes are left out, the others merged into runs', () => {
  const K = 1024;
  const piece = Buffer.alloc(4096 * K);
  assert.deepEqual(nonZeroRuns(piece), []);
  piece[0] = 1; // block 0
  piece[64 * K] = 1; // block 1: merged with block 0
  piece[5 * 64 * K + 100] = 2; // block 5
  piece[4096 * K - 1] = 3; // the last block
  assert.deepEqual(nonZeroRuns(piece), [[0, 128 * K], [5 * 64 * K, 6 * 64 * K], [4096 * K - 64 * K, 4096 * K]]);
  // A piece shorter than a block, and one ending in a partial block.
  assert.deepEqual(nonZeroRuns(Buffer.from([0, 0, 7])), [[0, 3]]);
  const odd = Buffer.alloc(64 * K + 10);
  odd[64 * K + 9] = 1;
  assert.deepEqual(nonZeroRuns(odd), [[64 * K, 64 * K + 10]]);
});
