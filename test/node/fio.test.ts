/** fio's nbd engine against a real node: verified random writes at queue depth 16. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeTempDir, MiB, requireTool, run, useNode, testSeed } from '../helpers/index.ts';

const node = useNode();
const dir = makeTempDir();

interface FioJob {
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number };
}

async function fio(args: string[]): Promise<FioJob> {
  // fio leaves state files in its working directory: keep them out of the checkout.
  const r = await run(requireTool('fio', 'fio'), [...args, '--verify_state_save=0', '--output-format=json'], { cwd: dir });
  const json = r.stdout.indexOf('{');
  assert.equal(r.code, 0, `fio ${args.join(' ')} exited ${r.code}\n${r.stdout.slice(0, json >= 0 ? json : undefined)}${r.stderr}`);
  return (JSON.parse(r.stdout.slice(json)) as { jobs: FioJob[] }).jobs[0]!;
}

test('fio random writes at iodepth 16 verify with crc32c, in the same run and after a restart', async (t) => {
  const seed = testSeed(t);
  await node.cliOk(['disk', 'create', 'fio', '--size', '256M']);
  // Mixed block sizes, every block of the disk written once (fio's random map), each with a
  // crc32c header that fio checks on the way back.
  const job = (uri: string) => [
    '--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bssplit=4k/50:16k/30:64k/20',
    '--iodepth=16', `--size=${256 * MiB}`, '--verify=crc32c', '--verify_fatal=1', `--randseed=${seed}`,
  ];
  const w = await fio([...job(node.nbdUri('fio')), '--do_verify=1']);
  assert.equal(w.error, 0);
  assert.equal(w.write.io_bytes, 256 * MiB, 'fio wrote the whole disk');
  assert.equal(w.read.io_bytes, 256 * MiB, 'fio read the whole disk back to verify it');
  await node.restart();
  const v = await fio([...job(node.unixUri('fio')), '--verify_only']);
  assert.equal(v.error, 0);
  assert.equal(v.read.io_bytes, 256 * MiB, 'fio verified the whole disk after the restart');
});
