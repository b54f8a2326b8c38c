import type { Volume } from '../engine/index.ts';
import type { NbdLimits } from './limits.ts';
import type { Logger } from '../observe/index.ts';

/** Where the NBD server gets its exports from. The node daemon implements it over the engine. */
export interface ExportProvider {
  /** Names of all exports, for NBD_OPT_LIST. */
  listExports(): string[];
  /**
   * Opens an export by name; throws EngineError (code ENGINE_NOT_FOUND) if unknown. A name
   * "DISK@SNAP" yields a read-only Volume. The server closes the volume when done with it.
   */
  openExport(name: string): Volume;
  /**
   * Optional: names of the snapshots `changedSince` accepts for this export (for a disk, its
   * snapshots). When present, NBD_OPT_LIST_META_CONTEXT lists one `tessera:changed-since:SNAP`
   * context per snapshot and NBD_OPT_SET_META_CONTEXT selects only known snapshots; when absent,
   * listing offers none and any syntactically valid snapshot name is selected.
   */
  listSnapshots?(exportName: string): string[];
}

/** Options of NbdServer. */
export interface NbdServerOptions {
  provider: ExportProvider;
  /** Overrides of the default limits (see NbdLimits). */
  limits?: Partial<NbdLimits>;
  /**
   * Receives noteworthy events: connections refused or dropped, and every request answered with an
   * error (with its connection id and handle, so a client's error can be found). Default: silent.
   */
  log?: Logger;
}
