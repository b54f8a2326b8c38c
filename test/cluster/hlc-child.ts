/**
 * A process that opens the hybrid logical clock on DIR and prints, one a line, `wall MS PID` (its
 * system clock, so the test sees whether faketime took, and its pid, since faketime runs it as a
 * child of its own) then clock values until it is killed.
 *
 *   node test/cluster/hlc-child.ts DIR WINDOW_MS
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileBoundStore, formatHlc, Hlc } from '../../src/cluster/hlc.ts';

const [dir, windowMs] = process.argv.slice(2);
mkdirSync(join(dir!, 'cluster'), { recursive: true });
const hlc = Hlc.open({ store: fileBoundStore(join(dir!, 'cluster', 'hlc')), windowMs: Number(windowMs) });
process.stdout.write(`wall ${Date.now()} ${process.pid}\n`);
const tick = () => {
  let lines = '';
  for (let i = 0; i < 50; i++) lines += `${formatHlc(hlc.now())}\n`;
  // Backpressure: wait for the pipe rather than buffer without end.
  if (process.stdout.write(lines)) setTimeout(tick, 1);
  else process.stdout.once('drain', tick);
};
tick();
