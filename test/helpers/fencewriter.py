#!/usr/bin/env python3
"""A writer for the fencing test (test/cluster/fencing.test.ts), driven by libnbd (python3-libnbd).

Every 4 KiB block B written with pattern SEED holds shake_128(pack('<QQ', SEED, B)) (B counted
from the start of the disk), so a block read back names the pattern that wrote it.

fill URI SEED OFFSET LENGTH
        writes the pattern over the range, flushes, exits 0.
loop URI SEED OFFSET LENGTH DOOM_SEED DOOM_OFFSET DOOM_LENGTH
        rewrites the pattern over the range again and again, a few writes in flight, and prints
        "looping" once a first pass is written and flushed. On a line "doom" on stdin it issues no
        more of them and sends, all at once, writes of DOOM_SEED over the doom range (they queue
        while the node is stopped), prints "doomed N", waits for every command in flight to
        complete or fail (at most 300 s), and prints one JSON line:
        {"loopOk", "loopFailed", "doomOk", "doomFailed", "errors": [first few messages]}.
"""
import hashlib
import json
import select
import struct
import sys
import time

import nbd

BLOCK = 4096
WRITE = 256 * 1024
DEPTH = 8


def pattern(seed, offset, length):
    assert offset % BLOCK == 0 and length % BLOCK == 0
    first = offset // BLOCK
    return b''.join(hashlib.shake_128(struct.pack('<QQ', seed, b)).digest(BLOCK) for b in range(first, first + length // BLOCK))


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def cmd_fill(uri, seed, offset, length):
    h = connect(uri)
    for at in range(offset, offset + length, WRITE):
        h.pwrite(pattern(seed, at, min(WRITE, offset + length - at)), at)
    h.flush()
    h.shutdown()


def cmd_loop(uri, seed, offset, length, doom_seed, doom_offset, doom_length):
    h = connect(uri)
    inflight = {}  # cookie -> (kind, buffer)
    counts = {'loopOk': 0, 'loopFailed': 0, 'doomOk': 0, 'doomFailed': 0}
    errors = []
    chunks = [(at, pattern(seed, at, min(WRITE, offset + length - at))) for at in range(offset, offset + length, WRITE)]
    nxt = 0
    passes = 0
    flush_cookie = None
    doomed = False
    dead = None

    def reap():
        nonlocal flush_cookie, passes
        for cookie in list(inflight):
            try:
                if not h.aio_command_completed(cookie):
                    continue
                kind, _ = inflight.pop(cookie)
                if kind != 'flush':
                    counts[kind + 'Ok'] += 1
            except nbd.Error as e:
                kind, _ = inflight.pop(cookie)
                if kind != 'flush':
                    counts[kind + 'Failed'] += 1
                if len(errors) < 5:
                    errors.append(f'{kind}: {e}')
            if cookie == flush_cookie:
                flush_cookie = None
                if passes == 1:
                    print('looping', flush=True)

    deadline = None
    while True:
        if not doomed:
            if select.select([sys.stdin], [], [], 0)[0] and sys.stdin.readline().strip() == 'doom':
                doomed = True
                n = 0
                for at in range(doom_offset, doom_offset + doom_length, WRITE):
                    buf = nbd.Buffer.from_bytearray(bytearray(pattern(doom_seed, at, min(WRITE, doom_offset + doom_length - at))))
                    inflight[h.aio_pwrite(buf, at)] = ('doom', buf)
                    n += 1
                print(f'doomed {n}', flush=True)
                deadline = time.monotonic() + 300
            else:
                while sum(1 for k, _ in inflight.values() if k == 'loop') < DEPTH and flush_cookie is None:
                    at, data = chunks[nxt]
                    buf = nbd.Buffer.from_bytearray(bytearray(data))
                    inflight[h.aio_pwrite(buf, at)] = ('loop', buf)
                    nxt += 1
                    if nxt == len(chunks):
                        nxt = 0
                        passes += 1
                        if passes == 1:
                            flush_cookie = h.aio_flush()
                            inflight[flush_cookie] = ('flush', None)
                        break
        if doomed and (not inflight or time.monotonic() > deadline):
            break
        try:
            h.poll(100)
        except nbd.Error as e:
            # The connection is gone: whatever was in flight failed.
            dead = str(e)
            for kind, _ in inflight.values():
                if kind != 'flush':
                    counts[kind + 'Failed'] += 1
            inflight.clear()
            if len(errors) < 5:
                errors.append(f'connection: {e}')
            if not doomed:
                raise
            break
        reap()
    counts['pending'] = len(inflight)
    counts['errors'] = errors
    counts['connectionLost'] = dead
    print(json.dumps(counts), flush=True)


def main():
    mode = sys.argv[1]
    if mode == 'fill':
        cmd_fill(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif mode == 'loop':
        cmd_loop(sys.argv[2], *(int(x) for x in sys.argv[3:9]))
    else:
        raise SystemExit(f'unknown mode {mode}')


if __name__ == '__main__':
    main()
