#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/{header_parse,open_pool}/.

header_parse seeds are raw 4096-byte header copies (layout: the table in
pmem-core/src/header.rs): a valid one, one per kind of damage, a truncated one, random bytes.
open_pool seeds are structured inputs decoded by fuzz/src/image.rs: control byte, u16 param,
then (u32 position, u8 xor mask) records. Deterministic; rerun after changing either format.
"""

import os
import random
import shutil
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
}

for target, seeds in SEEDS.items():
    d = os.path.join(ROOT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
