/**
 * Processes run as another user: root passes every permission check, so a test of "permission
 * denied" runs its subject as `nobody`.
 */
import assert from 'node:assert/strict';
import { requireTool } from './process.ts';

/** The uid and gid of `nobody` (Debian's). */
export const nobody = { uid: 65534, gid: 65534 } as const;

/**
 * The command line that runs `cmd args` as nobody, through setpriv (util-linux). Needs root; a
 * test without it fails saying so.
 */
export function asNobody(cmd: string, args: readonly string[]): [string, string[]] {
  assert.equal(process.getuid?.(), 0, 'this test runs a process as the user nobody and needs root');
  const setpriv = requireTool('setpriv', 'util-linux');
  return [setpriv, [`--reuid=${nobody.uid}`, `--regid=${nobody.gid}`, '--clear-groups', cmd, ...args]];
}
