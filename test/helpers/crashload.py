#!/usr/bin/env python3
"""Crash-consistency load for an NBD export, driven by libnbd (python3-libnbd).

write:  keeps up to DEPTH non-overlapping writes in flight (some with FUA) and a FLUSH every few
        completions, until the connection dies (the node was killed) or a bound is reached. It
        tracks, per 4 KiB block, the sequence of writes and which of them are durable: a FUA write
        once it completed, any write that completed before a FLUSH was issued once that FLUSH
        completed. Prints "flushed N" after each completed FLUSH. Saves the model to STATE.
init:   records the current content of every block (by hash) as the baseline, for a disk that
        does not start as zeroes.
verify: reads every block and checks it holds the last durable write or a later one (never an
        older one, never torn bytes), then records what it read as the new baseline in STATE.
snapshot: on a disk of zeroes, keeps writes in flight as `write` does (no FLUSHes) and, midway,
        runs a command that takes a snapshot. Afterwards the snapshot must hold, per block, the
        last write completed before the command started or a write issued before it returned,
        never a write issued later; and it must be one cut in time: if it holds a write W, it
        holds every write that completed before W was issued (or a later one on that block).
        The disk must hold exactly the last write of every block.

Every block written by write W at block B holds a 24-byte header (magic, W, B) and bytes derived
from (seed, W, B), so a block identifies its own write and any corruption is detected.
"""
import hashlib
import json
import os
import random
import struct
import sys
import time

import nbd

BLOCK = 4096
MAGIC = b'TESSCRSH'


def block_bytes(seed, write_id, block):
    header = struct.pack('<8sQQ', MAGIC, write_id, block)
    body = hashlib.shake_128(struct.pack('<QQQ', seed, write_id, block)).digest(BLOCK - len(header))
    return header + body


def load_state(path, seed, blocks):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {'seed': seed, 'blocks': blocks, 'nextId': 1, 'base': [0] * blocks, 'history': {}}


def save_state(path, state):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(state, f)
    os.replace(tmp, path)


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def cmd_write(uri, state_path, seed, blocks, depth, max_ops, max_seconds):
    state = load_state(state_path, seed, blocks)
    seed = state['seed']
    blocks = state['blocks']
    rng = random.Random(seed * 1000003 + state['nextId'])
    h = connect(uri)
    if h.get_size() < blocks * BLOCK:
        raise SystemExit(f'export is {h.get_size()} bytes, need {blocks * BLOCK}')
    # history[b]: list of [write_id, durable] in the order the writes reached block b.
    history = {}
    busy = set()            # blocks with a write in flight
    inflight = {}           # cookie -> (write_id, first_block, count, fua, buffer)
    pending = []            # completed, not yet durable: (write_id, first_block, count)
    flush_cookie = None
    flush_covers = []
    flushes = 0
    ops = 0
    deadline = time.monotonic() + max_seconds
    lost = None

    def mark_durable(write_id, first, count):
        for b in range(first, first + count):
            for entry in history[b]:
                if entry[0] == write_id:
                    entry[1] = True

    try:
        while ops < max_ops and time.monotonic() < deadline:
            while len(inflight) < depth and ops < max_ops:
                count = rng.randint(1, 16)
                first = rng.randrange(0, blocks - count + 1)
                if any(b in busy for b in range(first, first + count)):
                    break
                write_id = state['nextId']
                state['nextId'] += 1
                data = b''.join(block_bytes(seed, write_id, b) for b in range(first, first + count))
                fua = rng.random() < 0.1
                buf = nbd.Buffer.from_bytearray(data)
                cookie = h.aio_pwrite(buf, first * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
                inflight[cookie] = (write_id, first, count, fua, buf)
                busy.update(range(first, first + count))
                ops += 1
            h.poll(-1)
            for cookie in list(inflight):
                if not h.aio_command_completed(cookie):
                    continue
                write_id, first, count, fua, _ = inflight.pop(cookie)
                for b in range(first, first + count):
                    history.setdefault(b, []).append([write_id, fua])
                    busy.discard(b)
                if not fua:
                    pending.append((write_id, first, count))
            if flush_cookie is not None and h.aio_command_completed(flush_cookie):
                for w in flush_covers:
                    mark_durable(*w)
                flush_cookie = None
                flushes += 1
                print(f'flushed {flushes}', flush=True)
            if flush_cookie is None and len(pending) >= 32:
                flush_covers, pending = pending, []
                flush_cookie = h.aio_flush()
        # Bound reached without a crash: wait for everything and make it durable.
        while inflight or flush_cookie is not None:
            h.poll(-1)
            for cookie in list(inflight):
                if h.aio_command_completed(cookie):
                    write_id, first, count, fua, _ = inflight.pop(cookie)
                    for b in range(first, first + count):
                        history.setdefault(b, []).append([write_id, fua])
                    if not fua:
                        pending.append((write_id, first, count))
            if flush_cookie is not None and h.aio_command_completed(flush_cookie):
                for w in flush_covers:
                    mark_durable(*w)
                flush_cookie = None
        h.flush()
        for w in pending:
            mark_durable(*w)
        pending = []
        h.shutdown()
    except nbd.Error as err:
        lost = str(err)
    # Writes still in flight may or may not have landed: each is the last write of its blocks.
    for write_id, first, count, _, _ in inflight.values():
        for b in range(first, first + count):
            history.setdefault(b, []).append([write_id, False])
    state['history'] = {str(b): entries for b, entries in history.items()}
    save_state(state_path, state)
    durable = sum(1 for entries in history.values() for e in entries if e[1])
    print(json.dumps({'ops': ops, 'flushes': flushes, 'inFlightAtEnd': len(inflight),
                      'durableBlockWrites': durable, 'connectionLost': lost}), flush=True)


def cmd_init(uri, state_path, seed, blocks):
    h = connect(uri)
    initial = []
    chunk_blocks = 256
    for start in range(0, blocks, chunk_blocks):
        n = min(chunk_blocks, blocks - start)
        data = h.pread(n * BLOCK, start * BLOCK)
        initial.extend(hashlib.sha1(data[i * BLOCK:(i + 1) * BLOCK]).hexdigest() for i in range(n))
    h.shutdown()
    state = {'seed': seed, 'blocks': blocks, 'nextId': 1, 'base': [-1] * blocks, 'history': {}, 'initial': initial}
    save_state(state_path, state)


def cmd_verify(uri, state_path):
    with open(state_path) as f:
        state = json.load(f)
    seed = state['seed']
    blocks = state['blocks']
    base = state['base']
    history = {int(b): entries for b, entries in state['history'].items()}
    initial = state.get('initial')
    h = connect(uri)
    chunk_blocks = 256
    bad = []
    counts = {'blocks': blocks, 'asDurable': 0, 'laterThanDurable': 0, 'unchanged': 0}
    zero = bytes(BLOCK)
    for start in range(0, blocks, chunk_blocks):
        n = min(chunk_blocks, blocks - start)
        data = h.pread(n * BLOCK, start * BLOCK)
        for i in range(n):
            b = start + i
            got = data[i * BLOCK:(i + 1) * BLOCK]
            entries = history.get(b, [])
            last_durable = max((k for k, e in enumerate(entries) if e[1]), default=-1)
            allowed = [e[0] for e in entries[last_durable:]] if last_durable >= 0 else [base[b]] + [e[0] for e in entries]
            if initial is not None and hashlib.sha1(got).hexdigest() == initial[b]:
                got_id = -1     # the content the disk had when `init` ran
            elif got == zero:
                got_id = 0
            elif got[:8] == MAGIC:
                got_id = struct.unpack('<Q', got[8:16])[0]
            else:
                got_id = None
            ok = got_id in allowed and (got_id <= 0 or got == block_bytes(seed, got_id, b))
            if not ok:
                if len(bad) < 20:
                    bad.append({'block': b, 'offset': b * BLOCK, 'readWrite': got_id, 'allowed': allowed[:8],
                                'lastDurable': entries[last_durable][0] if last_durable >= 0 else base[b],
                                'headerHex': got[:24].hex()})
                continue
            if not entries:
                counts['unchanged'] += 1
            elif last_durable >= 0 and got_id == entries[last_durable][0]:
                counts['asDurable'] += 1
            else:
                counts['laterThanDurable'] += 1
            base[b] = got_id
    h.shutdown()
    if bad:
        print(json.dumps({'ok': False, 'mismatches': bad, 'counts': counts}), flush=True)
        sys.exit(1)
    state['history'] = {}
    save_state(state_path, state)
    print(json.dumps({'ok': True, 'counts': counts}), flush=True)


def cmd_snapshot(head_uri, snap_uri, seed, blocks, command):
    import subprocess
    rng = random.Random(seed)
    h = connect(head_uri)
    # history[b]: [write_id, completed before the command started, issued before it returned,
    #              event number at issue, event number at completion]
    history = {}
    events = [0]
    busy = set()
    inflight = {}
    completed = 0
    proc = None
    phase = 'before'        # before -> during -> after
    after_completions = 0
    next_id = 1

    def complete(cookie):
        write_id, first, count, _ = inflight.pop(cookie)
        events[0] += 1
        for b in range(first, first + count):
            busy.discard(b)
            for e in history[b]:
                if e[0] == write_id:
                    e[1] = phase == 'before'
                    e[4] = events[0]

    while phase != 'after' or after_completions < 400:
        while len(inflight) < 16:
            count = rng.randint(1, 16)
            first = rng.randrange(0, blocks - count + 1)
            if any(b in busy for b in range(first, first + count)):
                break
            write_id = next_id
            next_id += 1
            data = b''.join(block_bytes(seed, write_id, b) for b in range(first, first + count))
            buf = nbd.Buffer.from_bytearray(data)
            cookie = h.aio_pwrite(buf, first * BLOCK)
            inflight[cookie] = (write_id, first, count, buf)
            busy.update(range(first, first + count))
            events[0] += 1
            for b in range(first, first + count):
                history.setdefault(b, []).append([write_id, False, phase != 'after', events[0], None])
        h.poll(-1)
        for cookie in list(inflight):
            if h.aio_command_completed(cookie):
                complete(cookie)
                completed += 1
                if phase == 'after':
                    after_completions += 1
        if phase == 'before' and completed >= 400:
            # Everything completed so far is marked; later completions are not.
            phase = 'during'
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        elif phase == 'during' and proc.poll() is not None:
            if proc.returncode != 0:
                raise SystemExit(f'snapshot command failed: {proc.stderr.read().decode()}')
            phase = 'after'
    while inflight:
        h.poll(-1)
        for cookie in list(inflight):
            if h.aio_command_completed(cookie):
                complete(cookie)
    bad = []
    counts = {'writes': next_id - 1, 'snapshotAsBefore': 0, 'snapshotRacing': 0}
    # The head: exactly the last write of every block.
    for b, entries in history.items():
        got = h.pread(BLOCK, b * BLOCK)
        if got != block_bytes(seed, entries[-1][0], b) and len(bad) < 20:
            bad.append({'export': 'head', 'block': b, 'expected': entries[-1][0], 'headerHex': got[:24].hex()})
    h.shutdown()
    s = connect(snap_uri)
    zero = bytes(BLOCK)
    observed = []
    for b in range(blocks):
        got = s.pread(BLOCK, b * BLOCK)
        got_id = 0 if got == zero else struct.unpack('<Q', got[8:16])[0] if got[:8] == MAGIC else None
        if got_id not in (0, None) and got != block_bytes(seed, got_id, b):
            got_id = None
        observed.append(got_id)
    issued_at = {e[0]: e[3] for entries in history.values() for e in entries}
    cut = max((issued_at.get(w, 0) for w in observed if w), default=0)
    for b in range(blocks):
        got_id = observed[b]
        entries = history.get(b, [])
        last_before = max((k for k, e in enumerate(entries) if e[1]), default=-1)
        # Writes that completed before the newest write the snapshot holds was issued.
        last_causal = max((k for k, e in enumerate(entries) if e[4] < cut), default=-1)
        lowest = max(last_before, last_causal)
        allowed = ([entries[lowest][0]] if lowest >= 0 else [0]) + [e[0] for e in entries[lowest + 1:] if e[2]]
        if got_id not in allowed:
            if len(bad) < 20:
                bad.append({'export': 'snapshot', 'block': b, 'read': got_id, 'allowed': allowed[:8],
                            'lastBeforeStart': entries[last_before][0] if last_before >= 0 else 0,
                            'lastBeforeCut': entries[last_causal][0] if last_causal >= 0 else 0})
        elif got_id == (entries[last_before][0] if last_before >= 0 else 0):
            counts['snapshotAsBefore'] += 1
        else:
            counts['snapshotRacing'] += 1
    s.shutdown()
    print(json.dumps({'ok': not bad, 'mismatches': bad, 'counts': counts}), flush=True)
    if bad:
        sys.exit(1)


def main():
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == 'write':
        seed = int(args[3]) if len(args) > 3 else 1
        blocks = int(args[4]) if len(args) > 4 else 4096
        depth = int(args[5]) if len(args) > 5 else 16
        max_ops = int(args[6]) if len(args) > 6 else 200000
        max_seconds = float(args[7]) if len(args) > 7 else 120
        cmd_write(args[1], args[2], seed, blocks, depth, max_ops, max_seconds)
    elif len(args) == 5 and args[0] == 'init':
        cmd_init(args[1], args[2], int(args[3]), int(args[4]))
    elif len(args) == 3 and args[0] == 'verify':
        cmd_verify(args[1], args[2])
    elif len(args) == 6 and args[0] == 'snapshot':
        cmd_snapshot(args[1], args[2], int(args[3]), int(args[4]), json.loads(args[5]))
    else:
        raise SystemExit('usage: crashload.py write URI STATE [SEED BLOCKS DEPTH MAX_OPS MAX_SECONDS] | init URI STATE SEED BLOCKS | verify URI STATE | snapshot HEAD_URI SNAP_URI SEED BLOCKS COMMAND_JSON')


if __name__ == '__main__':
    main()
