/** What a directory tree holds, down to the bytes and times: tests compare it to show nothing was written. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Every entry under `dir` (and `dir` itself, as `.`) → `file SIZE MTIME SHA256` or `dir MTIME`,
 * leaving out the relative paths `skip` names. Times in ns, so a write within the same
 * millisecond shows too.
 */
export function treeState(dir: string, skip: (path: string) => boolean = () => false): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (rel: string): void => {
    if (skip(rel)) return;
    const p = rel === '.' ? dir : join(dir, rel);
    const st = lstatSync(p, { bigint: true });
    if (st.isDirectory()) {
      out[rel] = `dir ${st.mtimeNs}`;
      for (const name of readdirSync(p).sort()) visit(rel === '.' ? name : join(rel, name));
    } else {
      out[rel] = `file ${st.size} ${st.mtimeNs} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  visit('.');
  return out;
}
