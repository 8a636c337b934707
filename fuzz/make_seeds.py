#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/{header_parse,open_pool,collections_image}/.

header_parse seeds are raw 4096-byte header copies (layout: the table in
pmem-core/src/header.rs): a valid one, one per kind of damage, a truncated one, random bytes.
open_pool seeds are structured inputs decoded by fuzz/src/image.rs: control byte, u16 param,
then (u32 position, u8 xor mask) records. collections_image seeds are decoded by
fuzz/src/collections.rs: a record count, (u8 region, u24 position, u8 xor mask) records, then
(op, arg) pairs. Deterministic; rerun after changing any of these formats.
"""

import os
import random
import struct

HS = 4096
TEMPLATE = 4 * HS
TAG = 0x7466  # the template's pointer tag (image.rs), so xor 0x66/0x74 zeroes it
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def header(pool=TEMPLATE, version=1, header_size=HS, flags=0, tag=TAG, layout=b"fuzz",
           data_offset=HS, data_size=None, backup=None, magic=b"PTMPOOL\0", crc=True):
    data_size = pool - 2 * HS if data_size is None else data_size
    backup = pool - HS if backup is None else backup
    h = bytearray(HS)
    struct.pack_into("<8sII16sQQQQQH6xQ", h, 0, magic, version, header_size, b"ptm-fuzz-uuid-01",
                     pool, data_offset, data_size & (2**64 - 1), backup & (2**64 - 1), flags, tag,
                     1_700_000_000)
    h[88:88 + len(layout)] = layout
    struct.pack_into("<I", h, 4092, crc32c(h[:4092]) if crc else 0xDEADBEEF)
    return bytes(h)


def pool_input(ctl=0, param=0, *records):
    out = bytearray([ctl]) + struct.pack("<H", param)
    for at, mask in records:
        out += struct.pack("<IB", at, mask)
    return bytes(out)


BACKUP = 1 << 31  # record position counted from the backup slot
COPY, FIT, FIX_P, FIX_B = 1 << 3, 1 << 4, 1 << 5, 1 << 6

# collections_image: regions (fuzz/src/collections.rs): handles v m t s q b vs mv big, then the
# blocks of v m s b vs mv, the queue's directory and chunk, the directory and segments of big
# (BIG_BLOCKS), then the B-tree nodes (root first, pre-order), then nested buffers. A map segment:
# a 32-byte header (capacity, depth word, used, len), control bytes, then from a 64-byte
# boundary the (key, value) pairs (design §13.4).
R_V, R_M, R_T, R_S, R_Q, R_B, R_VS, R_MV, R_BIG = range(9)
B_V, B_M, B_S, B_B, B_VS, B_MV, B_QDIR, B_QCHUNK = range(9, 17)
BIG_BLOCKS = 5
B_BIG_DIR, B_BIG_SEG = 17, 18
B_ROOT, B_INNER = 17 + BIG_BLOCKS, 18 + BIG_BLOCKS
B_LEAF = 19 + BIG_BLOCKS  # the first leaf (pre-order: root, first internal node, its first leaf)
SEG_HDR = 32
PAIRS_16 = 64  # where the pairs of a 16-slot segment start: 32 + 16 rounded up to 64
ANYWHERE = 0xF0
WIDE_KIDS = 16 + 63 * 8  # the child array of the root and the internal nodes (wide, design §13.2)
COMMIT, ABORT, REOPEN = 48, 49, 50
READS = [0, 1, 7, 8, 12, 13, 14, 17, 19, 23, 26, 28, 31, 37, 40, 43, 46, 47]
WRITES = [2, 3, 4, 5, 9, 10, 15, 16, 20, 21, 24, 25, 29, 32, 33, 35, 38, 39, 42, 44, 45]
CLEARS = [6, 11, 18, 22, 27, 30, 34, 36, 41]


def coll_input(records, ops):
    out = bytearray([len(records)])
    for region, at, mask in records:
        out += bytes([region]) + struct.pack("<I", at)[:3] + bytes([mask])
    for op in ops:
        out += bytes(op if isinstance(op, tuple) else (op, 5))
    return bytes(out)


def each(ops, arg=5):
    return [(op, arg) for op in ops]


rng = random.Random(20240601)
SEEDS = {
    "header_parse": {
        "valid": header(),
        "valid-1mib": header(pool=1 << 20),
        "bad-magic": header(magic=b"PTMPOOX\0"),
        "bad-checksum": header(crc=False),
        "version-2": header(version=2),
        "version-2-bad-checksum": header(version=2, crc=False),
        "version-0": header(version=0),
        "unknown-flags": header(flags=1),
        "header-size-512": header(header_size=512),
        "pool-size-unaligned": header(pool=TEMPLATE + 1),
        "pool-size-too-small": header(pool=2 * HS),
        "pool-size-too-large": header(pool=1 << 49),
        "data-offset": header(data_offset=0),
        "data-size": header(data_size=TEMPLATE),
        "backup-offset": header(backup=0),
        "pptr-tag-zero": header(tag=0),
        "layout-no-nul": header(layout=b"L" * 64),
        "layout-not-utf8": header(layout=b"\xff\xfe"),
        "truncated-100": header()[:100],
        "empty": b"",
        "random-64": bytes(rng.randrange(256) for _ in range(64)),
    },
    "open_pool": {
        "valid": pool_input(),
        "valid-32k": pool_input(3 | COPY | FIT),
        "valid-64k": pool_input(7 | COPY | FIT, 15),
        "empty-file": pool_input(6, 0),
        "magic-only-100": pool_input(6, 100),
        "primary-only-4096": pool_input(6, HS),
        "no-backup-12k": pool_input(1),
        "longer-by-4096": pool_input(2),
        "longer-by-1": pool_input(5),
        "shorter-by-1": pool_input(4),
        "primary-bad-magic": pool_input(0, 0, (0, 0xFF)),
        "both-bad-magic": pool_input(0, 0, (0, 0xFF), (BACKUP, 0xFF)),
        "primary-bad-checksum": pool_input(0, 0, (100, 1)),
        "both-bad-checksum": pool_input(0, 0, (100, 1), (BACKUP | 100, 1)),
        "backup-bad-checksum": pool_input(0, 0, (BACKUP | 100, 1)),
        "backup-bad-magic": pool_input(0, 0, (BACKUP, 0xFF)),
        "version-2": pool_input(FIX_P, 0, (8, 3)),
        "version-2-stale-checksum": pool_input(0, 0, (8, 3)),
        "unknown-flags": pool_input(FIX_P, 0, (64, 1)),
        "pool-size-bad": pool_input(FIX_P, 0, (33, 0x10)),
        "pptr-tag-zero": pool_input(FIX_P, 0, (72, 0x66), (73, 0x74)),
        "layout-mismatch": pool_input(FIX_P, 0, (88, 1)),
        "layout-not-utf8": pool_input(FIX_P, 0, (88, 0x80)),
        "backup-geometry-bad": pool_input(FIX_B, 0, (BACKUP | 56, 0x10)),
        "grown-backup-moved": pool_input(2 | COPY | FIX_B),
        "random": bytes(rng.randrange(256) for _ in range(48)),
    },
    "collections_image": {
        "reads": coll_input([], each(READS)),
        "writes-commit": coll_input([], each(WRITES) + [COMMIT] + each(READS, 9)),
        "writes-abort-reopen": coll_input([], each(WRITES, 77) + [ABORT, REOPEN] + each(READS, 1)),
        "clears-reopen": coll_input([], each(CLEARS) + [REOPEN] + each(WRITES, 200) + [REOPEN, (47, 0)]),
        "vec-len": coll_input([(R_V, 8, 0x40)], each([1, 3, 2, 4, 6])),
        "vec-buf-ptr": coll_input([(R_V, 1, 0x01)], each([0, 1, 2, 5, 6])),
        "vec-cap": coll_input([(R_V, 17, 0x10)], each([1, 5, 5, 5, 2, 6])),
        "map-ctrl": coll_input([(B_M, SEG_HDR + i, 0x03) for i in range(0, 64, 5)], each([8, 7, 9, 10, 9, 11], 6)),
        "map-depth": coll_input([(R_M, 8, 0x01)], each([7, 8, 9, 11])),
        "map-seg-cap": coll_input([(B_M, 0, 0x01)], each([7, 8, 9, 11])),
        "map-len-used": coll_input([(R_M, 16, 0xFF), (B_M, 16, 0x30), (B_M, 24, 0x07)], [(9, k) for k in range(20)]),
        "big-dir": coll_input([(B_BIG_DIR, 8, 0x40)], each([46, 44, 45, 47], 9)),
        "big-local-depth": coll_input([(B_BIG_SEG, 8, 0x01)], [(44, k) for k in range(30)] + each([46, 47])),
        "big-seg-len": coll_input([(B_BIG_SEG, 24, 0x7F)], [(44, k) for k in range(30)] + [(45, 3), (47, 0)]),
        "big-ctrl": coll_input([(B_BIG_SEG, SEG_HDR + i, 0x03) for i in range(0, 128, 9)],
                               [(44, k) for k in range(20)] + [(45, 1), (46, 2), (47, 0)]),
        "btree-child": coll_input([(B_ROOT, WIDE_KIDS + 1, 0x01)], each([13, 14, 12, 15, 16, 17, 18])),
        "btree-child-cycle": coll_input([(B_INNER, WIDE_KIDS + 1, 0x02)], each([17, 13, 14, 16])),
        "btree-len": coll_input([(B_LEAF, 0, 0x0F)], each([13, 12, 15, 16, 17])),
        "btree-leaf-flag": coll_input([(B_LEAF, 8, 0x01)], each([13, 14, 16, 17, 18])),
        "btree-keys": coll_input([(B_LEAF, 16 + 8 * i, 0x80) for i in range(4)], each([17, 12, 15, 16, 14])),
        "string-bytes": coll_input([(B_S, 5, 0x80), (B_S, 6, 0x40)], each([19, 20, 19])),
        "string-len": coll_input([(R_S, 9, 0x01)], each([19, 20, 21, 22])),
        "queue-head": coll_input([(R_Q, 8, 0x07)], each([23, 24, 25, 26, 27])),
        "queue-len-cap": coll_input([(R_Q, 16, 0x20), (R_Q, 24, 0x01)], each([23, 24, 25, 27])),
        "queue-dir": coll_input([(B_QDIR, 0, 0x40)], each([23, 24, 25, 26, 27])),
        "queue-chunk": coll_input([(B_QCHUNK, 8 * i, 0x11) for i in range(4)], each([23, 24, 26])),
        "box-ptr": coll_input([(R_B, 0, 0x08)], each([28, 29, 30])),
        "vs-len": coll_input([(R_VS, 8, 0x0F)], each([31, 33, 33, 35, 34, 36])),
        "vs-elem-len": coll_input([(B_VS, 8, 0x20), (B_VS, 32, 0x01)], each([31, 35, 33, 36], 0)),
        "mv-ctrl": coll_input([(B_MV, SEG_HDR + i, 0x01) for i in range(16)], each([40, 37, 38, 39, 42, 41], 3)),
        "mv-values": coll_input([(B_MV, PAIRS_16 + 32 * i + 8 + 8, 0x04) for i in range(16)],
                                each([40, 42, 39])),
        "anywhere": coll_input([(ANYWHERE, rng.randrange(1 << 24), 1 << rng.randrange(8)) for _ in range(8)],
                               each(READS + WRITES)),
        "random": bytes(rng.randrange(256) for _ in range(96)),
        # Deque operations on q (op 46, argument 128 + 8 * position + kind) and B-tree ranges
        # walked from both ends (op 13, argument 128 + bounds and next/next_back pattern).
        "deque-ops": coll_input([], [(46, 128 + 8 * p + kind) for p in range(0, 16, 3) for kind in range(8)]
                                + [COMMIT, REOPEN] + [(46, 128 + 8 * p) for p in range(12)] + [(47, 0)]),
        "deque-abort": coll_input([], [(46, 128 + 8 * p + kind) for kind in (0, 2, 4, 6) for p in range(4)]
                                  + [ABORT, (23, 0), (46, 129), (46, 131)]),
        "deque-dir": coll_input([(B_QDIR, 0, 0x40)], [(46, 128 + kind) for kind in range(8)] + [(23, 0)]),
        "deque-head": coll_input([(R_Q, 32, 0x03)], [(46, 128 + 8 * 5 + kind) for kind in range(8)]),
        "btree-rev": coll_input([], [(13, 128 + a) for a in range(0, 128, 5)] + [COMMIT] + each([16, 17], 9)
                                + [(13, 133), (13, 250)]),
        "btree-rev-leaf": coll_input([(B_LEAF, 0, 0x0F)], [(13, 128 + a) for a in range(8)]),
    },
}

# The corpus directories also hold inputs the fuzzers found (named by their hash) and
# committed: write the named seeds over their old versions and leave every other file alone.
for target, seeds in SEEDS.items():
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
