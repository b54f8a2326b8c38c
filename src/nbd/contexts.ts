/**
 * Metadata contexts: which names exist, how queries of NBD_OPT_LIST/SET_META_CONTEXT match them,
 * and what NBD_CMD_BLOCK_STATUS answers for each.
 *
 * - `base:allocation`: holes (NBD_STATE_HOLE) and zeroes (NBD_STATE_ZERO) from Volume.blockStatus.
 * - `tessera:changed-since:SNAP`: bit 0 set where the export changed since snapshot SNAP of its
 *   disk (Volume.changedSince).
 * - `qemu:dirty-bitmap:SNAP`: the same answer under the name qemu's tools look for, so that
 *   `x-dirty-bitmap=qemu:dirty-bitmap:SNAP` gives incremental backups against a snapshot.
 */
import assert from 'node:assert/strict';
import type { Volume } from '../engine/index.ts';
import type { BlockDescriptor } from './codec.ts';
import { AllocationState, ChangeState, MetaContext } from './protocol.ts';

/** A metadata context a query resolved to. */
export interface ContextSpec {
  /** Full name as sent to the client. */
  name: string;
  /** Snapshot for changed-since contexts; null for base:allocation. */
  snapshot: string | null;
}

/** A context selected on a connection, with the id its block status chunks carry. */
export interface SelectedContext extends ContextSpec {
  id: number;
}

/** Most contexts one NBD_OPT_SET_META_CONTEXT may select: each costs an engine query per request. */
export const SELECTED_CONTEXTS_MAX = 64;

/** Most descriptors in one block status chunk; the client asks again for the rest. */
export const EXTENTS_PER_REPLY_MAX = 4096;

const ALLOCATION: ContextSpec = { name: MetaContext.BASE_ALLOCATION, snapshot: null };

function changedSince(prefix: string, snapshot: string): ContextSpec {
  return { name: prefix + snapshot, snapshot };
}

/**
 * The contexts one query selects, or null if the query is not syntactically valid (no namespace).
 * `snapshots` are the export's known snapshots, or null when the provider cannot list them.
 * Listing expands namespaces into every context; setting selects namespaces only for `base:`,
 * because a client selecting all changed-since contexts at once almost surely did not mean to.
 */
export function resolveQuery(query: string, snapshots: readonly string[] | null, mode: 'list' | 'set'): ContextSpec[] | null {
  const colon = query.indexOf(':');
  if (colon <= 0) return null;
  if (query === MetaContext.BASE_NAMESPACE || query === MetaContext.BASE_ALLOCATION) return [ALLOCATION];
  for (const [namespace, prefix] of [
    [MetaContext.TESSERA_NAMESPACE, MetaContext.TESSERA_CHANGED_SINCE],
    [MetaContext.QEMU_NAMESPACE, MetaContext.QEMU_DIRTY_BITMAP],
  ] as const) {
    if (query === namespace || query === prefix) {
      return mode === 'list' && snapshots ? snapshots.map((snapshot) => changedSince(prefix, snapshot)) : [];
    }
    if (query.startsWith(prefix)) {
      const snapshot = query.slice(prefix.length);
      if (snapshots !== null && !snapshots.includes(snapshot)) return [];
      return [changedSince(prefix, snapshot)];
    }
  }
  return [];
}

/** Every context an export offers (the answer to a listing without queries). */
export function allContexts(snapshots: readonly string[] | null): ContextSpec[] {
  const all = [ALLOCATION];
  for (const snapshot of snapshots ?? []) all.push(changedSince(MetaContext.TESSERA_CHANGED_SINCE, snapshot));
  for (const snapshot of snapshots ?? []) all.push(changedSince(MetaContext.QEMU_DIRTY_BITMAP, snapshot));
  return all;
}

/**
 * Block status of [offset, offset+length) in one context: descriptors in order from `offset`,
 * adjacent runs of equal state merged, at most `extentsMax` of them (so possibly covering less
 * than asked, as the protocol allows). Asserts that the engine's answer keeps its contract.
 */
export async function queryContext(
  volume: Volume,
  context: ContextSpec,
  offset: number,
  length: number,
  extentsMax: number,
): Promise<BlockDescriptor[]> {
  assert.ok(length > 0 && extentsMax > 0);
  const runs =
    context.snapshot === null
      ? (await volume.blockStatus(offset, length)).map((e) => ({
          offset: e.offset,
          length: e.length,
          flags: (e.hole ? AllocationState.HOLE : 0) | (e.zero ? AllocationState.ZERO : 0),
        }))
      : (await volume.changedSince(context.snapshot, offset, length)).map((e) => ({
          offset: e.offset,
          length: e.length,
          flags: e.changed ? ChangeState.CHANGED : 0,
        }));
  const out: BlockDescriptor[] = [];
  let at = offset;
  for (const run of runs) {
    // A run out of place would tell the client wrong things about its data (a backup skipping
    // what it took for a hole): the engine's contract, asserted.
    assert.ok(run.offset === at && run.length > 0 && at + run.length <= offset + length, `the engine returned a run [${run.offset}, +${run.length}) where one at ${at} was due`);
    at += run.length;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === run.flags) {
      last.length += run.length;
      continue;
    }
    // Only now is it known that the previous descriptor is complete: stop when full.
    if (out.length === extentsMax) break;
    out.push({ length: run.length, flags: run.flags });
  }
  assert.ok(out.length > 0, 'the engine returned runs for a range of nonzero length');
  return out;
}
