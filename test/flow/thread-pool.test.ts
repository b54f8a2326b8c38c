/**
 * The thread pool on its own, with a thread module of trivial tasks (echo-thread.ts): tasks wait
 * for the first message, a long task holds up nothing queued behind it, failures come back as the
 * caller's errors, and a pool that failed or closed fails every task.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ThreadPool, tasksPerWorker, type TaskFailure } from '../../src/flow/thread-pool.ts';
import type { EchoRequest } from './echo-thread.ts';

const module = new URL('./echo-thread.ts', import.meta.url);

/** The error class of the pool's caller in these tests. */
class EchoError extends Error {
  readonly code: string;
  constructor(f: TaskFailure) {
    super(f.message);
    this.code = f.code;
  }
}

function pool(init: number | Promise<number>, threads = 2, busyMin?: number): ThreadPool<EchoRequest, number> {
  return new ThreadPool<EchoRequest, number>({ module, threads, init, errorOf: (f) => new EchoError(f), name: 'Echo', busyMin });
}

test('thread pool: tasks wait for the first message, then run with it; moved buffers arrive whole', async () => {
  let give!: (n: number) => void;
  const p = pool(new Promise((resolve) => (give = resolve)));
  try {
    let settled = false;
    const early = p.run<number>({ op: 'add', value: 1 }).finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(settled, false, 'a task waits for the first message');
    give(41);
    assert.equal(await early, 42);
    const data = new Uint8Array(1000).fill(3);
    assert.equal(await p.run<number>({ op: 'sum', data }, [data]), 3000);
    assert.equal(data.byteLength, 0, 'the buffer was moved to the thread, not copied');
    assert.equal(p.stats().max, p.size * tasksPerWorker, 'each thread holds the task it runs and the next');
  } finally {
    await p.close(new Error('closed'));
  }
});

test('thread pool: while one thread runs a long task, the other takes every short one queued behind it', async () => {
  // Both threads stay in use (busyMin): this is about the queue, not the adaptive limit.
  const p = pool(0, 2, 2);
  try {
    let longDone = false;
    let shortBeforeLong = 0;
    // Over queueBehindBytesMax of input: no task is queued behind it on its thread.
    const pad = new Uint8Array(8 << 20);
    const long = p.run({ op: 'spin', ms: 500, pad }, [pad]).then(() => (longDone = true));
    const shorts = Array.from({ length: 40 }, (_, i) =>
      p.run<number>({ op: 'add', value: i }).then((v) => {
        assert.equal(v, i);
        if (!longDone) shortBeforeLong++;
      }),
    );
    await Promise.all([long, ...shorts]);
    assert.equal(shortBeforeLong, 40, 'every short task finished before the long one');
  } finally {
    await p.close(new Error('closed'));
  }
});

test("thread pool: a task's failure is the caller's error with the thread's code; one without a code gets codeOfUncoded", async () => {
  const p = pool(0, 1);
  try {
    await assert.rejects(p.run({ op: 'fail', code: 'TEST_BROKEN' }), (err: unknown) => err instanceof EchoError && err.code === 'TEST_BROKEN' && /on purpose/.test(err.message));
    await assert.rejects(p.run({ op: 'fail' }), (err: unknown) => err instanceof EchoError && err.code === 'TEST_UNCODED');
    assert.equal(await p.run<number>({ op: 'add', value: 5 }), 5, 'the thread goes on after a failed task');
  } finally {
    await p.close(new Error('closed'));
  }
});

test('thread pool: a first message that never comes, a thread that exits and a closed pool fail every task', async () => {
  let refuse!: (err: Error) => void;
  const never = pool(new Promise((_, reject) => (refuse = reject)), 1);
  const queued = never.run({ op: 'add', value: 1 });
  refuse(new Error('wrong password'));
  await assert.rejects(queued, /wrong password/);
  await assert.rejects(never.run({ op: 'add', value: 1 }), /wrong password/);
  await never.close(new Error('closed'));

  const dying = pool(0, 1);
  await assert.rejects(dying.run({ op: 'exit', code: 3 }), /Echo thread exited with code 3/);
  await assert.rejects(dying.run({ op: 'add', value: 1 }), /Echo thread exited with code 3/);
  await dying.close(new Error('closed'));

  const p = pool(0, 1);
  assert.equal(await p.run<number>({ op: 'add', value: 2 }), 2);
  await p.close(new Error('the pool is closed'));
  await assert.rejects(p.run({ op: 'add', value: 1 }), /the pool is closed/);
});
