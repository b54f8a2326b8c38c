/**
 * Paces background work that shares the event loop with foreground requests: the work runs in
 * slices of a few milliseconds, and after each the loop is left to everything else for as long
 * as the share (`duty`) asks. With a share of 1 it still yields after each slice. A share given
 * as a function is asked anew after each slice; when it is 0 the work should stop for now.
 */
const SLICE_MS = 4;

/** Slices background work and rests between slices (the engine's compaction uses it). */
export class Pacer {
  private readonly duty: () => number;
  private sliceStart = performance.now();

  /** `duty`: the share of the loop's time the work may take, 0 to 1, or a function asked after each slice. */
  constructor(duty: number | (() => number)) {
    this.duty = typeof duty === 'number' ? () => duty : duty;
  }

  /**
   * Called between units of work: null while the slice lasts, else a pause to await, which
   * resolves true to go on, or false (at once) when the share is 0.
   */
  pause(): Promise<boolean> | null {
    const ran = performance.now() - this.sliceStart;
    if (ran < SLICE_MS) return null;
    const share = this.duty();
    if (share <= 0) return Promise.resolve(false);
    const rest = ran * (1 / Math.min(1, Math.max(0.01, share)) - 1);
    return new Promise<void>((resolve) => (rest < 1 ? setImmediate(resolve) : setTimeout(resolve, rest))).then(() => {
      this.sliceStart = performance.now();
      return true;
    });
  }
}
