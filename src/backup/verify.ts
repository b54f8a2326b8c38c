/**
 * `backup verify` (docs/backup.md, "Verify"): structure always; with readData every pack's hash,
 * header and blobs. Every fault names the restore points it affects.
 */
import { checkArchived } from './archive.ts';
import { ByteBudget } from '../flow/index.ts';
import { layout, packPath } from './format.ts';
import type { WorkerPool } from './pool.ts';
import { mapConcurrent, type Repository } from './repository.ts';
import { scanIndex, scanMap, scanMarks, type MapScan, type ScannedIndex } from './scan.ts';

/** One problem verify found. */
export interface VerifyFault {
  /** What is damaged: `restore point <id>`, `archived record <id>`, `index file <id>`, `pack <id>`, `blob <id>`. */
  subject: string;
  message: string;
  /** Ids of the restore points that cannot be restored whole because of it. */
  restorePoints: string[];
}

/** What verify checked and found. */
export interface VerifyReport {
  restorePoints: number;
  /** Records of restore points archived out of this repository (where each went). */
  archivedRecords: number;
  indexFiles: number;
  packs: number;
  /** Packs read in full (with readData). */
  packsRead: number;
  blobsChecked: number;
  /** Packs no index file lists: left by interrupted backups, removed by prune; not faults. */
  unindexedPacks: number;
  faults: VerifyFault[];
}

/** Options of verify. */
export interface VerifyOptions {
  readData?: boolean;
  /** Packs read at once with readData. Default 4. */
  readsMax?: number;
  /** Bytes of packs held at once with readData. Default 128 MiB. */
  inFlightBytesMax?: number;
  onProgress?: (p: { packsRead: number; packs: number }) => void;
}

/** Checks the repository; never throws for damage it can name, only for failures of storage. */
export async function verify(ctx: { repo: Repository; pool: WorkerPool }, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { repo, pool } = ctx;
  const faults: VerifyFault[] = [];
  /** blob id hex → why it is damaged (from pack checks). */
  const badBlobs = new Map<string, string>();
  /** Faults whose restore points are those using any of their blobs. */
  const blobFaults: { fault: VerifyFault; blobs: string[] }[] = [];

  const { snapshots, damaged: damagedSnapshots } = await repo.readSnapshots();
  for (const d of damagedSnapshots) faults.push({ subject: `restore point ${d.id}`, message: d.error.message, restorePoints: [d.id] });

  // A damaged archived record loses the way to its restore point's archived copy (and stops
  // `backup list`); the restore point it names is the one affected.
  const archived = await checkArchived(repo);
  for (const d of archived.damaged) faults.push({ subject: `archived record ${d.id}`, message: d.error.message, restorePoints: [d.id] });

  const index = await scanIndex(repo);
  const damagedIndexFaults = index.damaged.map((d) => ({ subject: `index file ${d.id}`, message: d.error.message, restorePoints: [] as string[] }));
  faults.push(...damagedIndexFaults);

  const stored = new Map((await repo.backend.list(layout.data)).map((o) => [o.path, o.sizeBytes]));
  // Packs a prune marked stay usable until swept (a backup running at the mark may use them).
  const marks = await scanMarks(repo, index, new Map([...stored].map(([path, size]) => [path.slice(path.lastIndexOf('/') + 1), size])));
  const markedPacks = new Set(marks.flatMap(({ mark }) => mark.packs.map((p) => packPath(p.id.toString('hex')))));
  let unindexed = 0;
  const indexedPaths = new Set<string>();
  for (const [hex, { pack }] of index.packs) {
    const path = packPath(hex);
    indexedPaths.add(path);
    const size = stored.get(path);
    let message: string | null = null;
    if (size === undefined) message = `Pack ${hex} is missing`;
    else if (size !== pack.size) message = `Pack ${hex} is ${size} bytes, the index says ${pack.size}`;
    if (message !== null) {
      const fault = { subject: `pack ${hex}`, message, restorePoints: [] };
      faults.push(fault);
      const blobs = pack.blobs.map((b) => b[5].toString('hex'));
      blobFaults.push({ fault, blobs });
      for (const b of blobs) badBlobs.set(b, message);
    }
  }
  for (const path of stored.keys()) if (!indexedPaths.has(path) && !markedPacks.has(path)) unindexed++;

  let packsRead = 0;
  let blobsChecked = 0;
  if (options.readData) {
    const budget = new ByteBudget(options.inFlightBytesMax ?? 128 << 20);
    const toRead = [...index.packs.values()].filter(({ pack }) => stored.get(packPath(pack.id.toString('hex'))) === pack.size);
    await mapConcurrent(toRead, options.readsMax ?? 4, async ({ pack }) => {
      const hex = pack.id.toString('hex');
      await budget.acquire(pack.size);
      try {
        const check = await pool.checkPack(await repo.backend.get(packPath(hex)), hex);
        const damage = (message: string, blobs: string[]) => {
          const fault = { subject: `pack ${hex}`, message, restorePoints: [] };
          faults.push(fault);
          blobFaults.push({ fault, blobs });
          for (const b of blobs) badBlobs.set(b, message);
        };
        if (!check.hashOk) damage(`Pack ${hex} does not match its name (damaged)`, pack.blobs.map((b) => b[5].toString('hex')));
        if (check.entries === null) {
          damage(check.headerError ?? `Header of pack ${hex} is damaged`, pack.blobs.map((b) => b[5].toString('hex')));
        } else {
          blobsChecked += check.entries.length;
          for (const bad of check.badBlobs) {
            const idHex = check.entries[bad.index].id.toString('hex');
            const fault = { subject: `blob ${idHex}`, message: bad.message, restorePoints: [] };
            faults.push(fault);
            blobFaults.push({ fault, blobs: [idHex] });
            badBlobs.set(idHex, bad.message);
          }
          // The index must say what the header says.
          const fromHeader = new Map<string, string>();
          let offset = 0;
          for (const e of check.entries) {
            fromHeader.set(e.id.toString('hex'), `${e.type}/${e.flags}/${offset}/${e.storedLength}/${e.plainLength}`);
            offset += e.storedLength;
          }
          const wrong = pack.blobs.filter(([type, flags, off, storedLength, plainLength, id]) => fromHeader.get(id.toString('hex')) !== `${type}/${flags}/${off}/${storedLength}/${plainLength}`);
          if (wrong.length > 0) {
            damage(`The index lists ${wrong.length} blobs of pack ${hex} differently from its header`, wrong.map((b) => b[5].toString('hex')));
          }
        }
      } finally {
        budget.release(pack.size);
        packsRead++;
        options.onProgress?.({ packsRead, packs: toRead.length });
      }
    });
  }

  // Which restore points use damaged or unindexed blobs.
  const maps = await mapConcurrent(snapshots, 4, async (e) => ({ id: e.id, scan: await scanMap(repo, pool, index, e.snapshot) }));
  for (const { id, scan } of maps) {
    for (const f of scan.faults) {
      if (badBlobs.has(f.blobIdHex)) continue; // reported with its pack
      if (!index.blobs.has(f.blobIdHex) && !index.marked.has(f.blobIdHex)) continue; // counted as missing below
      faults.push({ subject: `blob ${f.blobIdHex}`, message: f.message, restorePoints: [id] });
    }
    const missing = countMissing(scan, index);
    if (missing > 0) {
      const fault = { subject: `restore point ${id}`, message: `${missing} blobs of restore point ${id} are in no index file`, restorePoints: [id] };
      faults.push(fault);
      for (const f of damagedIndexFaults) f.restorePoints.push(id);
    }
    for (const { fault, blobs } of blobFaults) {
      if (blobs.some((b) => scan.blobs.has(b))) fault.restorePoints.push(id);
    }
  }
  for (const f of faults) f.restorePoints = [...new Set(f.restorePoints)].sort();
  return {
    restorePoints: snapshots.length + damagedSnapshots.length,
    archivedRecords: archived.count,
    indexFiles: index.fileIds.length + index.damaged.length,
    packs: index.packs.size,
    packsRead,
    blobsChecked,
    unindexedPacks: unindexed,
    faults,
  };
}

function countMissing(scan: MapScan, index: ScannedIndex): number {
  let n = 0;
  for (const b of scan.blobs) if (!index.blobs.has(b) && !index.marked.has(b)) n++;
  return n;
}
