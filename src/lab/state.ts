/**
 * The state of a running lab, one JSON file in its state directory: every namespace and stage
 * `lab up` made, recorded before it is made, so that `lab down` (even after a failed `up`)
 * removes exactly those, and nothing else.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { LabError, LabErrorCode } from './errors.ts';
import type { LinkParams } from './units.ts';

/** The state directory when neither --state nor $TESSERA_LAB_DIR names one. */
export const defaultStateDir = '/run/tessera-lab';
/** The state file's name in its directory. */
export const stateFileName = 'lab.json';
/** Every namespace a lab makes is named `tlab-ID-HOST`: nothing else is ever touched. */
export const netnsPrefix = 'tlab-';

/** A host of a running lab. */
export interface HostState {
  name: string;
  address: string;
  /** Its network namespace (`ip netns`). */
  netns: string;
}

/** A link of a running lab. */
export interface LinkState {
  name: string;
  endpoints: [string, string];
  params: LinkParams;
  /** Its stage's pid once started, else null. */
  pid: number | null;
  /** The seed of its random draws, when the topology gave one. */
  seed?: number;
  /** The stage's control socket and log. */
  control: string;
  log: string;
}

/** What `lab.json` holds. */
export interface LabState {
  version: 1;
  /** A few random hex digits in every namespace's name, so that two labs never share one. */
  id: string;
  createdMs: number;
  /** Whether `lab up` made the state directory (then `lab down` removes it). */
  madeDir: boolean;
  /** false until `lab up` finished: a lab half up is taken down whole. */
  up: boolean;
  hosts: HostState[];
  links: LinkState[];
}

/** The state file of the lab in `dir`. */
export function statePath(dir: string): string {
  return join(dir, stateFileName);
}

/**
 * Creates the state file (and its directory), failing if one is there: the file is the lab's
 * lock, so two `lab up` in one directory cannot both go on.
 */
export function createState(dir: string, state: LabState): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new LabError(LabErrorCode.SYSTEM, `cannot make the state directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  let fd;
  try {
    fd = openSync(statePath(dir), 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new LabError(LabErrorCode.ALREADY_UP, `a lab is already up in ${dir}: run \`tessera lab down\` first, or give another --state DIR`);
    }
    throw new LabError(LabErrorCode.SYSTEM, `cannot write ${statePath(dir)}: ${(err as Error).message}`, { cause: err });
  }
  try {
    writeSync(fd, JSON.stringify(state, null, 2) + '\n');
  } finally {
    closeSync(fd);
  }
}

/** Replaces the state file whole (a crash leaves the old or the new one, never half of one). */
export function saveState(dir: string, state: LabState): void {
  const tmp = `${statePath(dir)}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, JSON.stringify(state, null, 2) + '\n');
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, statePath(dir));
}

/** The lab's state, or null when no lab is up in `dir`. */
export function loadState(dir: string): LabState | null {
  let text;
  try {
    text = readFileSync(statePath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new LabError(LabErrorCode.SYSTEM, `cannot read ${statePath(dir)}: ${(err as Error).message}`, { cause: err });
  }
  let state: LabState;
  try {
    state = JSON.parse(text) as LabState;
  } catch (err) {
    throw new LabError(LabErrorCode.SYSTEM, `${statePath(dir)} is damaged: ${(err as Error).message}`, { cause: err });
  }
  if (state.version !== 1 || !Array.isArray(state.hosts) || !Array.isArray(state.links)) {
    throw new LabError(LabErrorCode.SYSTEM, `${statePath(dir)} is not a lab state this version of Tessera knows`);
  }
  return state;
}

/** The lab's state, or LabError NOT_UP. */
export function requireState(dir: string): LabState {
  const state = loadState(dir);
  if (state === null) throw new LabError(LabErrorCode.NOT_UP, `no lab is up in ${dir} (\`tessera lab up TOPOLOGY.json\` starts one)`);
  return state;
}
