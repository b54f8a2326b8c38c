/**
 * A simple in-memory model of a store: every disk and snapshot is a full byte array. The engine
 * must agree with it byte for byte. Also a seeded random generator, so a failing sequence can be
 * replayed from the seed printed with the failure.
 */

/** xorshift32: small, seeded, good enough to pick operations. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

export function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo));
}

/** Model of one store. */
export class ModelStore {
  disks = new Map<string, { data: Buffer; snaps: Map<string, Buffer> }>();

  create(name: string, size: number): void {
    this.disks.set(name, { data: Buffer.alloc(size), snaps: new Map() });
  }
  write(name: string, offset: number, data: Buffer): void {
    data.copy(this.disks.get(name)!.data, offset);
  }
  zero(name: string, offset: number, length: number): void {
    this.disks.get(name)!.data.fill(0, offset, offset + length);
  }
  snapshot(name: string, snap: string): void {
    const d = this.disks.get(name)!;
    d.snaps.set(snap, Buffer.from(d.data));
  }
  revert(name: string, snap: string): void {
    const d = this.disks.get(name)!;
    d.data = Buffer.from(d.snaps.get(snap)!);
  }
  clone(name: string, snap: string, newName: string): void {
    const d = this.disks.get(name)!;
    this.disks.set(newName, { data: Buffer.from(d.snaps.get(snap)!), snaps: new Map() });
  }
}
