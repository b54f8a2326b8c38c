import assert from 'node:assert/strict';

/**
 * Bytes received and not yet parsed, kept as the list of chunks the socket delivered. Parsers
 * take exactly the bytes of one message: a view when the message sits inside one chunk, a single
 * copy when it spans several. Nothing is concatenated beyond the message taken.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  /** Index of the first chunk still holding unread bytes. */
  #head = 0;
  /** Read position inside the head chunk. */
  #offset = 0;
  #length = 0;

  /** Unread bytes. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Takes the next `n` bytes (n <= length): a view if they lie in one chunk, else one copy. */
  take(n: number): Buffer {
    return this.takeWith(n, Buffer.allocUnsafe).bytes;
  }

  /**
   * take(), copying (when the bytes span chunks) into `alloc(n)`, which may return a larger
   * buffer; `allocated` is that buffer, or null if the bytes are a view of a received chunk.
   */
  takeWith(n: number, alloc: (n: number) => Buffer): { bytes: Buffer; allocated: Buffer | null } {
    assert.ok(n <= this.#length, 'take past the end of the queue');
    if (n === 0) return { bytes: Buffer.alloc(0), allocated: null };
    const first = this.#chunks[this.#head];
    const inFirst = first.length - this.#offset;
    if (n <= inFirst) {
      const view = first.subarray(this.#offset, this.#offset + n);
      this.#advance(n);
      return { bytes: view, allocated: null };
    }
    const allocated = alloc(n);
    assert.ok(allocated.length >= n, 'alloc returned a short buffer');
    const out = allocated.length === n ? allocated : allocated.subarray(0, n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[this.#head];
      const count = Math.min(n - filled, chunk.length - this.#offset);
      chunk.copy(out, filled, this.#offset, this.#offset + count);
      filled += count;
      this.#advance(count);
    }
    return { bytes: out, allocated };
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.#length > 0) {
      const chunk = this.#chunks[this.#head];
      const count = Math.min(n - dropped, chunk.length - this.#offset);
      this.#advance(count);
      dropped += count;
    }
    return dropped;
  }

  /** Removes and returns all unread bytes as chunks (views, no copies). */
  drain(): Buffer[] {
    const rest: Buffer[] = [];
    while (this.#length > 0) {
      const chunk = this.#chunks[this.#head];
      rest.push(chunk.subarray(this.#offset));
      this.#advance(chunk.length - this.#offset);
    }
    return rest;
  }

  #advance(n: number): void {
    this.#offset += n;
    this.#length -= n;
    const chunk = this.#chunks[this.#head];
    if (this.#offset < chunk.length) return;
    this.#head++;
    this.#offset = 0;
    // Compact now and then so the array does not grow without bound; cheap because rare.
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= 64) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}
