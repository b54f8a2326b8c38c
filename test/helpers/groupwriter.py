#!/usr/bin/env python3
"""A writer for the group snapshot test (test/cluster/group-snapshots.test.ts), driven by libnbd
(python3-libnbd): one write at a time, each sent only once the one before was acknowledged, so
every write depends on all the writes before it, whichever disk they went to.

URI_A URI_B COUNT
        writes K = 1..COUNT in order: odd K to disk A, even K to disk B, each at block
        (K - 1) // 2 of its disk (4 KiB), every 8 bytes of the block K as a little-endian u64.
        Prints "wrote N" every 100 writes and "done N" at the end, then exits 0.

A snapshot of both disks at one cut holds the writes 1..K for some K and none after: a write
found in it with one missing before it is a write the cut took after a later one.
"""
import struct
import sys

import nbd

BLOCK = 4096


def main():
    uri_a, uri_b, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    disks = []
    for uri in (uri_a, uri_b):
        h = nbd.NBD()
        h.connect_uri(uri)
        disks.append(h)
    for k in range(1, count + 1):
        h = disks[(k - 1) % 2]
        h.pwrite(struct.pack('<Q', k) * (BLOCK // 8), ((k - 1) // 2) * BLOCK)
        if k % 100 == 0:
            print(f'wrote {k}', flush=True)
    for h in disks:
        h.flush()
        h.shutdown()
    print(f'done {count}', flush=True)


if __name__ == '__main__':
    main()
