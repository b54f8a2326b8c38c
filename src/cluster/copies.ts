/**
 * The disks a node holds a copy of as a cluster member, kept in `DIR/cluster/copies` (docs/
 * cluster.md, "How a node runs it"): at its next start, a copy whose disk was deleted, or placed
 * elsewhere, while the node was down is found there and deleted; a disk of the store the cluster
 * never made (one the node held before it joined) is never in it, so never touched.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** The names, written whole at each change (a copy is made or deleted at human or failure speed). */
export class CopyRegistry {
  readonly #path: string | null;
  readonly #names: Set<string>;

  private constructor(path: string | null, names: Iterable<string>) {
    this.#path = path;
    this.#names = new Set(names);
  }

  /**
   * The registry at `path` (null: in memory only, for tests). A file that cannot be read as one
   * (written atomically, so never torn) starts an empty registry, `onDamage` told why: copies
   * it named are then kept, as before there was a registry.
   */
  static open(path: string | null, onDamage: (why: string) => void = () => {}): CopyRegistry {
    if (path === null) return new CopyRegistry(null, []);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new CopyRegistry(path, []);
      throw err;
    }
    try {
      const v = JSON.parse(text) as { copies?: unknown };
      if (!Array.isArray(v.copies) || !v.copies.every((x) => typeof x === 'string')) throw new Error('no list of names under "copies"');
      return new CopyRegistry(path, v.copies as string[]);
    } catch (err) {
      onDamage(`${path} is not a list of copies (${(err as Error).message}): starting an empty one`);
      return new CopyRegistry(path, []);
    }
  }

  names(): string[] {
    return [...this.#names];
  }

  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** Notes a copy, durably, before it is made (a copy noted and never made is dropped at the next look). */
  add(name: string): void {
    if (this.#names.has(name)) return;
    this.#names.add(name);
    this.#save();
  }

  /** Forgets a copy once it is deleted. */
  remove(name: string): void {
    if (!this.#names.delete(name)) return;
    this.#save();
  }

  #save(): void {
    const path = this.#path;
    if (path === null) return;
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ copies: [...this.#names].sort() })}\n`);
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }
}
