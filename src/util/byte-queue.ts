import assert from 'node:assert/strict';

/**
 * Bytes received and not yet parsed, kept as the list of chunks the socket delivered. Parsers
 * take exactly the bytes of one message: a view when the message sits inside one chunk, a single
 * copy when it spans several, or a copy into a buffer of their own (takeInto). Nothing is
 * concatenated beyond the message taken. A chunk its owner will reuse is pushed, parsed, and the
 * rest kept by retain().
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
    assert.ok(n <= this.#length, 'take past the end of the queue');
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[this.#head];
    if (n <= first.length - this.#offset) {
      const view = first.subarray(this.#offset, this.#offset + n);
      this.#advance(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.takeInto(out, 0, n);
    return out;
  }

  /** Copies up to `n` of the next bytes into `dst` at `at`; returns how many it copied. */
  takeInto(dst: Buffer, at: number, n: number): number {
    let filled = 0;
    while (filled < n && this.#length > 0) {
      const chunk = this.#chunks[this.#head];
      const count = Math.min(n - filled, chunk.length - this.#offset);
      chunk.copy(dst, at + filled, this.#offset, this.#offset + count);
      filled += count;
      this.#advance(count);
    }
    return filled;
  }

  /**
   * Copies the unread bytes into a buffer of the queue's own, so that none of them is a view of
   * a pushed chunk any more: after this, the chunks pushed so far may be reused by their owner.
   */
  retain(): void {
    if (this.#length === 0) return;
    const own = Buffer.allocUnsafe(this.#length);
    this.takeInto(own, 0, own.length);
    this.push(own);
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
