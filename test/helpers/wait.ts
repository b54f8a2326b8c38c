/** Waits until `predicate` holds (it may be async), polling every `pollMs`; fails after `ms`. */
export async function until(predicate: () => boolean | Promise<boolean>, ms = 2000, what = 'condition', pollMs = 5): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
