/**
 * Paces background work that shares the event loop with foreground requests: the work runs in
 * slices of a few milliseconds, and after each the loop is left to everything else for as long
 * as the share (`duty`) asks. With a share of 1 it still yields after each slice.
 */
const SLICE_MS = 4;

export class Pacer {
  private readonly duty: number;
  private sliceStart = performance.now();

  constructor(duty: number) {
    this.duty = Math.min(1, Math.max(0.01, duty));
  }

  /** Called between units of work: null while the slice lasts, else a pause to await. */
  pause(): Promise<void> | null {
    const ran = performance.now() - this.sliceStart;
    if (ran < SLICE_MS) return null;
    const rest = ran * (1 / this.duty - 1);
    return new Promise<void>((resolve) => (rest < 1 ? setImmediate(resolve) : setTimeout(resolve, rest))).then(() => {
      this.sliceStart = performance.now();
    });
  }
}
