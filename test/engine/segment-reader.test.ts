/** The scrub's segment reader: the same bytes, read directly or through the page cache (whichever the file system takes). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openSegmentReader } from '../../src/engine/log/segment-reader.ts';
import { nodeLogFiles } from '../../src/engine/log/files.ts';
import { SharedSlots } from '../../src/flow/index.ts';

test('segment reader: the file as written (still in the page cache), to its end, on a disk file system and on tmpfs; a missing file is ENOENT', async () => {
  for (const dir of [os.tmpdir(), '/dev/shm']) {
    if (!fs.existsSync(dir)) continue;
    const root = fs.mkdtempSync(path.join(dir, 'tessera-segread-'));
    try {
      const file = path.join(root, 'x.seg');
      const bytes = Buffer.alloc(3 * 4096 + 100);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 255;
      fs.writeFileSync(file, bytes); // still in the page cache: a direct read must see it all the same
      const r = openSegmentReader(nodeLogFiles, file);
      try {
        assert.equal(r.size(), bytes.length);
        const buf = new SharedSlots(8192, 1).view(0, 8192); // aligned, as direct reads need
        assert.equal(await r.read(buf, 0), 8192);
        assert.ok(buf.equals(bytes.subarray(0, 8192)));
        assert.equal(await r.read(buf, 8192), 4096 + 100, 'short at the end of the file');
        assert.ok(buf.subarray(0, 4196).equals(bytes.subarray(8192)));
      } finally {
        r.close();
      }
      assert.throws(() => openSegmentReader(nodeLogFiles, path.join(root, 'gone.seg')), { code: 'ENOENT' });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
});
