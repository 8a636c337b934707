//! On-media layout of the transaction layer, inside the pmem-core data area, and the encoding of
//! its records. Everything here is plain byte arithmetic over slices, so it runs under Miri.
//!
//! ```text
//! pool offset            size                 content
//! 4096                   4096                 Superblock (below)
//! lanes_offset = 8192    lane_count*lane_size lanes
//! root_offset            root_size (4 KiB-aligned area) the root object
//! heap_offset            heap_size            heap (log extents; the allocator's chunks)
//! pool_size - 4096       4096                 pmem-core backup header
//! ```
//!
//! Superblock (4096 bytes at pool offset 4096):
//!
//! | offset | size | field          |                                                    |
//! |-------:|-----:|----------------|----------------------------------------------------|
//! |      0 |    8 | `magic`        | `b"PTMTXN5\0"` (format 5; formats 3 and 4 read; 1 and 2 refused) |
//! |      8 |    4 | `lane_count`   | 1..=1024                                           |
//! |     12 |    4 | `_pad`         | 0                                                  |
//! |     16 |    8 | `lane_size`    | bytes per lane, multiple of 4096, >= 8192          |
//! |     24 |    8 | `lanes_offset` | 8192                                               |
//! |     32 |    8 | `root_offset`  | 4096-aligned                                       |
//! |     40 |    8 | `root_size`    | `size_of` of the root type                         |
//! |     48 |    8 | `heap_offset`  | 4096-aligned                                       |
//! |     56 |    8 | `heap_size`    | heap bytes at creation, multiple of 4096           |
//! |     64 |    8 | `table_entries`| chunk table capacity, in 64 KiB chunks             |
//! |     72 |   16 | `routing_secret` | formats 4 and 5: 128 random bits drawn at creation (two u64); format 3: ignored, read as 0 |
//! |     88 |   32 | `_reserved`    | 0                                                  |
//! |    120 |    8 | `meta_hash`    | xxh3-64 of bytes 0..120                            |
//! |    128 |    8 | `generation`   | incremented at every open (mutable; lock words)    |
//! |    136 |    8 | `clean`        | 1 after a clean close, 0 while open (mutable)      |
//! |   1024 | 3072 | schema record  | the root type's schema (below)                     |
//!
//! Schema record (at superblock offset 1024; all zero in pools made before schemas were
//! recorded):
//!
//! | offset | size | field            |                                                  |
//! |-------:|-----:|------------------|--------------------------------------------------|
//! |   1024 |    8 | `fingerprint`    | `TypeSchema::fingerprint` of the root; 0: none recorded (the rest is then ignored) |
//! |   1032 |    4 | `text_len`       | bytes of the encoding at 1048; 0: too long to keep (fingerprint only) |
//! |   1036 |    4 | `format`         | 1                                                |
//! |   1040 |    8 | `check`          | xxh3-64 of bytes 1024..1040 and the text         |
//! |   1048 | `text_len` (≤ 3048) | `text` | `TypeSchema::encode` of the root type, UTF-8 |
//!
//! Lane (`lane_size` bytes at `lanes_offset + i * lane_size`), format 5 (packed):
//!
//! | offset | size | field                                                           |
//! |-------:|-----:|-----------------------------------------------------------------|
//! |      0 |    8 | `completed`: every transaction of this lane with seq <= it is complete |
//! |      8 |  ... | log area, to `lane_size - 64`: records 8-byte aligned (the first shares the line of `completed`) |
//! | `lane_size - 64` | 64 | commit record: `seq`, `n_entries`, `data_hash`, 4 reserved words, `record_hash` |
//!
//! Formats 3 and 4 (still read and written in their own layout):
//!
//! | offset | size | field                                                           |
//! |-------:|-----:|-----------------------------------------------------------------|
//! |      0 |    8 | `completed`                                                     |
//! |     64 |   64 | commit record                                                   |
//! |    128 |  ... | log area, to the lane's end: records 64-byte aligned            |
//!
//! Log record (`total = align_up(32 + data_len, 8)` in format 5, `align_up(32 + data_len, 64)`
//! in formats 3 and 4: [`Geometry::rec_total`]):
//!
//! | offset | size | field                                                             |
//! |-------:|-----:|-------------------------------------------------------------------|
//! |      0 |    8 | `seq`                                                             |
//! |      8 |    8 | `kind_len`: kind in bits 56..64 (1 undo, 2 jump, 3 new), length in 0..56 |
//! |     16 |    8 | `target`: undo: pool offset of the range; jump: extent offset     |
//! |     24 |    8 | `hash`: xxh3-64 of the data, seeded with seq, kind_len, target and the pool's log key (below) |
//! |     32 |  len | undo: the old bytes of the range; jump: nothing (len = extent size) |

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::engine::align_up;

/// Superblock magic (format 5: format 4 with packed lane logs, see [`Geometry::packed_log`]).
pub(crate) const SB_MAGIC: [u8; 8] = *b"PTMTXN5\0";
/// Superblock magic of format 4 (format 3 and the pool's routing secret at offset 72), still
/// read and written in place: its lanes keep the 64-byte-aligned log layout.
const SB_MAGIC_V4: [u8; 8] = *b"PTMTXN4\0";
/// Superblock magic of format 3 (64 KiB heap chunks, slabs of 1, 2 or 4 chunks; the chunk
/// table capacity is stored, so the heap can grow), still read: the same layout as format 4
/// with no routing secret (bytes 72..88 zero).
const SB_MAGIC_V3: [u8; 8] = *b"PTMTXN3\0";
/// The superblock format this build writes (it reads this one and formats 3 and 4).
pub const SB_FORMAT: u32 = 5;
/// Superblock offset of the routing secret (format 4; 16 bytes).
const SB_ROUTING_SECRET: usize = 72;

/// The pool's routing secret (superblock bytes 72..88 as two little-endian words) from a
/// superblock that [`Geometry::decode`] accepted: `[0, 0]` for a format 3 pool (made before
/// the secret existed) and for a format 4 or 5 pool whose field was zeroed.
pub(crate) fn routing_secret(b: &[u8]) -> [u64; 2] {
    let magic = b.get(0..8);
    if (magic != Some(&SB_MAGIC[..]) && magic != Some(&SB_MAGIC_V4[..])) || b.len() < SB_ROUTING_SECRET + 16 {
        return [0, 0];
    }
    [get(b, SB_ROUTING_SECRET), get(b, SB_ROUTING_SECRET + 8)]
}

/// A fresh routing secret for a new pool: 128 bits from std's `RandomState` (keyed from the
/// operating system's randomness), never all zero (which means "no secret").
pub(crate) fn fresh_routing_secret() -> [u64; 2] {
    use std::hash::{BuildHasher, RandomState};
    let word = |i: u64| RandomState::new().hash_one((i, std::time::SystemTime::now()));
    let s = [word(0), word(1)];
    if s == [0, 0] {
        [1, 0]
    } else {
        s
    }
}

/// Superblock magics of the formats this build refuses: format 1 (`PTMTXN1`, a chunk table
/// as large as the heap at creation needed) and format 2 (`PTMTXN2`, a stored table capacity),
/// both with 256 KiB chunks, which this build's heap cannot read.
const SB_MAGIC_OLD: [([u8; 8], u32); 2] = [(*b"PTMTXN1\0", 1), (*b"PTMTXN2\0", 2)];

/// The format of a superblock this build does not read (1 or 2: 256 KiB heap chunks), from its
/// magic; `None` for anything else (format 3, or not a ptm superblock, which
/// [`Geometry::decode`] reports).
pub(crate) fn old_format(b: &[u8]) -> Option<u32> {
    SB_MAGIC_OLD
        .iter()
        .find(|(magic, _)| b.get(0..8) == Some(&magic[..]))
        .map(|&(_, format)| format)
}
/// Bytes of the superblock hashed by `meta_hash`.
pub(crate) const SB_HASHED: usize = 120;
pub(crate) const SB_GENERATION: u64 = 128;
pub(crate) const SB_CLEAN: u64 = 136;
pub(crate) const SB_SIZE: u64 = 4096;

/// Superblock offset of the schema record.
pub(crate) const SB_SCHEMA: u64 = 1024;
/// Bytes of the schema record before its text.
const SCHEMA_HEADER: usize = 24;
/// Longest schema encoding kept in the superblock; a longer one is recorded as its fingerprint.
pub const SCHEMA_MAX_TEXT: usize = (SB_SIZE as usize) - (SB_SCHEMA as usize) - SCHEMA_HEADER;
const SCHEMA_FORMAT: u32 = 1;

/// The root type's schema as a pool records it (superblock offset 1024, see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSchema {
    /// Nothing recorded: a pool made before schemas were recorded, or by `Pool::create_any`
    /// (the first `Pool::<R>::open` records `R`'s).
    NotRecorded,
    /// Only the fingerprint: the encoding was longer than [`SCHEMA_MAX_TEXT`].
    Fingerprint(u64),
    /// The full description.
    Described(pmem_core::schema::TypeSchema),
}

impl RootSchema {
    /// The recorded fingerprint, if any.
    pub fn fingerprint(&self) -> Option<u64> {
        match self {
            RootSchema::NotRecorded => None,
            RootSchema::Fingerprint(f) => Some(*f),
            RootSchema::Described(s) => Some(s.fingerprint()),
        }
    }
}

/// The schema record for `schema`: the bytes from superblock offset 1024 (the fingerprint at
/// 0..8, the rest from 8).
pub(crate) fn encode_schema(schema: &pmem_core::schema::TypeSchema) -> Vec<u8> {
    let text = schema.encode();
    let fingerprint = pmem_core::schema::fingerprint_of(&text);
    let text = if text.len() <= SCHEMA_MAX_TEXT {
        text
    } else {
        String::new()
    };
    let mut b = vec![0u8; SCHEMA_HEADER + text.len()];
    put(&mut b, 0, fingerprint);
    b[8..12].copy_from_slice(&(text.len() as u32).to_le_bytes());
    b[12..16].copy_from_slice(&SCHEMA_FORMAT.to_le_bytes());
    b[SCHEMA_HEADER..].copy_from_slice(text.as_bytes());
    let check = schema_check(&b[..16], text.as_bytes());
    put(&mut b, 16, check);
    b
}

fn schema_check(head: &[u8], text: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(head);
    h.update(text);
    h.digest()
}

/// Decodes the schema record `b` (the superblock from offset 1024 to its end).
pub(crate) fn decode_schema(b: &[u8]) -> Result<RootSchema, &'static str> {
    if b.len() < SCHEMA_HEADER {
        return Err("schema record truncated");
    }
    let fingerprint = get(b, 0);
    if fingerprint == 0 {
        return Ok(RootSchema::NotRecorded);
    }
    let len = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    let format = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    if format != SCHEMA_FORMAT {
        return Err("unknown schema record format");
    }
    if len > SCHEMA_MAX_TEXT || SCHEMA_HEADER + len > b.len() {
        return Err("schema record length is impossible");
    }
    let text = &b[SCHEMA_HEADER..SCHEMA_HEADER + len];
    if schema_check(&b[..16], text) != get(b, 16) {
        return Err("schema record checksum mismatch");
    }
    if len == 0 {
        return Ok(RootSchema::Fingerprint(fingerprint));
    }
    let text = std::str::from_utf8(text).map_err(|_| "schema record is not UTF-8")?;
    if pmem_core::schema::fingerprint_of(text) != fingerprint {
        return Err("schema record fingerprint does not match its text");
    }
    pmem_core::schema::TypeSchema::decode(text)
        .map(RootSchema::Described)
        .map_err(|_| "schema record text is not a schema")
}

/// Reads the root schema recorded in the pool `region` (for tools such as `ptm info`; needs no
/// open `Pool`).
///
/// # Errors
///
/// [`Error::CorruptMetadata`](crate::Error::CorruptMetadata) for a damaged record,
/// [`Error::Core`](crate::Error::Core) for read errors.
pub fn read_root_schema(region: &pmem_core::Region) -> crate::Result<RootSchema> {
    let mut b = vec![0u8; SB_SIZE as usize - SB_SCHEMA as usize];
    region.read_at(region.data_range().start + SB_SCHEMA, &mut b)?;
    decode_schema(&b).map_err(|what| crate::Error::CorruptMetadata {
        path: region.path().to_owned(),
        what,
    })
}

/// Offset of the commit record within a lane of a format 3 or 4 pool (format 5: the lane's last
/// 64 bytes, [`Geometry::lane_commit`]).
pub const LANE_COMMIT: u64 = 64;
/// Offset of the log area within a lane of a format 3 or 4 pool (format 5: 8, right after the
/// `completed` word, [`Geometry::lane_log`]).
pub const LANE_LOG: u64 = 128;
/// Offset of the log area within a lane of a format 5 pool: the first record shares the lane's
/// first line with `completed`, so the flush that makes the record durable also carries the
/// lane's own pending completion mark (design §8.1).
pub const LANE_LOG_PACKED: u64 = 8;
/// Bytes of a log-record header.
pub const REC_HEADER: u64 = 32;
/// Alignment (and minimum size) of a log record in a format 3 or 4 pool; in every format, the
/// room a log area keeps free at its end for a jump record.
pub const REC_ALIGN: u64 = 64;
/// Alignment of a log record in a format 5 pool (packed records, [`Geometry::rec_total`]).
pub const REC_ALIGN_PACKED: u64 = 8;
/// Record kind: an undo entry (old bytes of a range).
pub const KIND_UNDO: u8 = 1;
/// Record kind: a jump to the next log extent in the heap.
pub const KIND_JUMP: u8 = 2;
/// A range of freshly allocated memory: no old bytes (nothing to restore), but its new contents
/// are part of the commit's data hash.
pub const KIND_NEW: u8 = 3;
const LEN_MASK: u64 = (1 << 56) - 1;

/// Geometry of a pool's transaction layer, as stored in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Number of lanes (concurrent transactions).
    pub lane_count: u32,
    /// Bytes per lane.
    pub lane_size: u64,
    /// Pool offset of lane 0.
    pub lanes_offset: u64,
    /// Pool offset of the root object.
    pub root_offset: u64,
    /// Size of the root object.
    pub root_size: u64,
    /// Pool offset of the heap.
    pub heap_offset: u64,
    /// Bytes in the heap: to the end of the data area (which grows with the pool).
    pub heap_size: u64,
    /// Entries of the chunk table (its capacity in chunks: the heap can grow until it has that
    /// many chunks without moving any of them).
    pub table_entries: u64,
    /// Format 5 lanes (every pool this build creates): log records packed at 8-byte alignment
    /// from lane offset 8, the commit record in the lane's last 64 bytes. `false` for format 3
    /// and 4 pools: 64-byte-aligned records from lane offset 128, the commit record at 64.
    pub packed_log: bool,
}

fn put(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn get(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Geometry {
    /// Whether `[off, off + len)` may be logged: inside the root and heap.
    #[inline]
    pub(crate) fn loggable(&self, off: u64, len: u64) -> bool {
        let end = self.heap_offset + self.heap_size;
        off >= self.root_offset && off.checked_add(len).is_some_and(|e| e <= end)
    }

    /// Lays out a pool whose pmem-core data area is `[data_start, data_end)`.
    pub(crate) fn plan(
        data_start: u64,
        data_end: u64,
        lane_count: u32,
        lane_size: u64,
        root_size: u64,
    ) -> Option<Geometry> {
        let lanes_offset = data_start + SB_SIZE;
        let root_offset = lanes_offset.checked_add(u64::from(lane_count).checked_mul(lane_size)?)?;
        let heap_offset = root_offset.checked_add(root_size.max(1))?.checked_add(4095)? & !4095;
        let heap_end = data_end & !4095;
        if heap_offset > heap_end {
            return None;
        }
        let heap_size = heap_end - heap_offset;
        Some(Geometry {
            lane_count,
            lane_size,
            lanes_offset,
            root_offset,
            root_size,
            heap_offset,
            heap_size,
            table_entries: crate::engine::heap::HeapLayout::new(heap_offset, heap_size).table_entries(),
            packed_log: true,
        })
    }

    /// This geometry with a chunk table of room for a heap of up to `max_heap` bytes (never
    /// less than the heap needs now; at most 1/16 of the heap at creation, so small pools do
    /// not spend their space on it).
    pub(crate) fn with_room_to_grow(mut self, max_heap: u64) -> Geometry {
        let want = max_heap / crate::engine::heap::CHUNK + 1;
        let cap = (self.heap_size / 16 / 8).max(self.table_entries);
        self.table_entries = want.clamp(self.table_entries, cap);
        self
    }

    /// Where the chunk table and the chunks are, for the heap as it is now.
    pub fn heap_layout(&self) -> crate::engine::heap::HeapLayout {
        crate::engine::heap::HeapLayout::with_table(self.heap_offset, self.heap_size, self.table_entries)
    }

    /// Encodes the immutable part of the superblock (bytes 0..128), with the pool's routing
    /// `secret`.
    pub(crate) fn encode(&self, secret: [u64; 2]) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..8].copy_from_slice(if self.packed_log { &SB_MAGIC } else { &SB_MAGIC_V4 });
        b[8..12].copy_from_slice(&self.lane_count.to_le_bytes());
        put(&mut b, 16, self.lane_size);
        put(&mut b, 24, self.lanes_offset);
        put(&mut b, 32, self.root_offset);
        put(&mut b, 40, self.root_size);
        put(&mut b, 48, self.heap_offset);
        put(&mut b, 56, self.heap_size);
        put(&mut b, 64, self.table_entries);
        put(&mut b, SB_ROUTING_SECRET, secret[0]);
        put(&mut b, SB_ROUTING_SECRET + 8, secret[1]);
        let h = xxh3_64(&b[..SB_HASHED]);
        put(&mut b, SB_HASHED, h);
        b
    }

    /// Decodes and validates a superblock against the data area `[data_start, data_end)`.
    /// Returns what is wrong as a static description. The heap extends to the end of the data
    /// area (which is larger than at creation if the pool grew).
    pub(crate) fn decode(b: &[u8], data_start: u64, data_end: u64) -> Result<Geometry, &'static str> {
        if b.len() < 128 {
            return Err("superblock truncated");
        }
        if old_format(b).is_some() {
            return Err("superblock of an older format (256 KiB heap chunks)");
        }
        if b[0..8] != SB_MAGIC && b[0..8] != SB_MAGIC_V4 && b[0..8] != SB_MAGIC_V3 {
            return Err("bad superblock magic (not a ptm transaction pool)");
        }
        if xxh3_64(&b[..SB_HASHED]) != get(b, SB_HASHED) {
            return Err("superblock checksum mismatch");
        }
        let g = Geometry {
            lane_count: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            lane_size: get(b, 16),
            lanes_offset: get(b, 24),
            root_offset: get(b, 32),
            root_size: get(b, 40),
            heap_offset: get(b, 48),
            heap_size: get(b, 56),
            table_entries: get(b, 64),
            packed_log: b[0..8] == SB_MAGIC,
        };
        let lanes_end = u64::from(g.lane_count)
            .checked_mul(g.lane_size)
            .and_then(|n| n.checked_add(g.lanes_offset));
        let heap_end = g.heap_offset.checked_add(g.heap_size);
        let ok = (1..=MAX_LANES).contains(&g.lane_count)
            && g.lane_size >= MIN_LANE_SIZE
            && g.lane_size.is_multiple_of(4096)
            && g.lanes_offset == data_start + SB_SIZE
            && lanes_end == Some(g.root_offset)
            && g.root_offset.is_multiple_of(4096)
            && g.root_offset
                .checked_add(g.root_size.max(1))
                .is_some_and(|e| align_up(e, 4096) == g.heap_offset)
            && g.heap_size.is_multiple_of(4096)
            && heap_end.is_some_and(|e| e <= data_end);
        if !ok {
            return Err("superblock geometry is impossible");
        }
        let mut g = g;
        let created = crate::engine::heap::HeapLayout::new(g.heap_offset, g.heap_size).table_entries();
        if g.table_entries < created
            || g.table_entries > (1 << 48) / crate::engine::heap::CHUNK
            || align_up(g.table_entries * 8, 4096) > g.heap_size
        {
            return Err("superblock chunk table capacity is impossible");
        }
        g.heap_size = (data_end & !4095) - g.heap_offset;
        Ok(g)
    }

    /// Pool offset of lane `i` (its `completed` word).
    pub fn lane(&self, i: usize) -> u64 {
        self.lanes_offset + i as u64 * self.lane_size
    }

    /// Pool offset of lane `i`'s commit record (64 bytes).
    #[inline]
    pub fn lane_commit(&self, i: usize) -> u64 {
        if self.packed_log {
            self.lane(i) + self.lane_size - 64
        } else {
            self.lane(i) + LANE_COMMIT
        }
    }

    /// Pool offsets `[start, end)` of lane `i`'s log area.
    #[inline]
    pub fn lane_log(&self, i: usize) -> (u64, u64) {
        let lane = self.lane(i);
        if self.packed_log {
            (lane + LANE_LOG_PACKED, lane + self.lane_size - 64)
        } else {
            (lane + LANE_LOG, lane + self.lane_size)
        }
    }

    /// Bytes a log record with `data_len` bytes of data takes in this pool's logs: the 32-byte
    /// header and the data, rounded up to 8 bytes (format 5) or 64 (formats 3 and 4). A jump
    /// or new-memory record has no data: `rec_total(0)`.
    #[inline]
    pub fn rec_total(&self, data_len: u64) -> u64 {
        let align = if self.packed_log {
            REC_ALIGN_PACKED
        } else {
            REC_ALIGN
        };
        align_up(REC_HEADER + data_len, align)
    }
}

/// Most lanes a pool may have.
pub const MAX_LANES: u32 = 1024;
/// Smallest lane.
pub const MIN_LANE_SIZE: u64 = 8192;

/// A decoded log-record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecHeader {
    pub(crate) seq: u64,
    pub(crate) kind: u8,
    pub(crate) len: u64,
    pub(crate) target: u64,
    pub(crate) hash: u64,
}

fn rec_seed(key: u64, seq: u64, kind_len: u64, target: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ kind_len.rotate_left(17)
        ^ target.rotate_left(41)
        ^ 0x5054_4D4C_4F47
        ^ key
}

/// The key of a pool's log record hashes (§8.1): derived from the pool's secret (superblock
/// offset 72, format 4), so that bytes a user stored, which end up in the log as undo data and
/// in freed heap chunks that later hold log extents, can never pass for a record: forging one
/// needs the secret. `0` (records hashed unkeyed, as in format 3) for a pool without a secret.
pub fn log_key(secret: [u64; 2]) -> u64 {
    if secret == [0, 0] {
        return 0;
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&secret[0].to_le_bytes());
    b[8..].copy_from_slice(&secret[1].to_le_bytes());
    // A different function of the secret than the routing seeds (`s0 ^ fmix64(offset ^ s1)`).
    xxh3_64_with_seed(&b, 0x6C6F_676B_6579).max(1)
}

/// [`log_key`] of the pool whose superblock bytes are `sb` (for tools that craft or check log
/// records in a pool file).
pub fn superblock_log_key(sb: &[u8]) -> u64 {
    log_key(routing_secret(sb))
}

/// Encodes a record header for `data` (undo: the old bytes; jump: empty with `len` = extent size),
/// its hash keyed with the pool's [`log_key`].
#[inline(always)]
pub fn encode_rec(key: u64, seq: u64, kind: u8, len: u64, target: u64, data: &[u8]) -> [u8; 32] {
    let kind_len = (u64::from(kind) << 56) | (len & LEN_MASK);
    let hash = xxh3_64_with_seed(data, rec_seed(key, seq, kind_len, target));
    let mut h = [0u8; 32];
    put(&mut h, 0, seq);
    put(&mut h, 8, kind_len);
    put(&mut h, 16, target);
    put(&mut h, 24, hash);
    h
}

/// Decodes a record header (no hash check: that needs the data).
pub(crate) fn decode_rec(h: &[u8]) -> RecHeader {
    let kind_len = get(h, 8);
    RecHeader {
        seq: get(h, 0),
        kind: (kind_len >> 56) as u8,
        len: kind_len & LEN_MASK,
        target: get(h, 16),
        hash: get(h, 24),
    }
}

/// Whether `data` matches the record's hash.
pub(crate) fn rec_hash_ok(key: u64, r: &RecHeader, data: &[u8]) -> bool {
    let kind_len = (u64::from(r.kind) << 56) | (r.len & LEN_MASK);
    xxh3_64_with_seed(data, rec_seed(key, r.seq, kind_len, r.target)) == r.hash
}

/// The `record_hash` stored at byte 56 of a commit line whose first 56 bytes are `b[..56]`
/// (for tools and fuzzing that rewrite commit lines).
pub fn commit_hash(b: &[u8]) -> u64 {
    xxh3_64(&b[..56]) ^ 0x434F_4D4D_4954
}

/// A decoded commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitRecord {
    pub(crate) seq: u64,
    pub(crate) n_entries: u64,
    pub(crate) data_hash: u64,
}

impl CommitRecord {
    /// The 64 bytes stored in the lane's commit line.
    pub(crate) fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        put(&mut b, 0, self.seq);
        put(&mut b, 8, self.n_entries);
        put(&mut b, 16, self.data_hash);
        let h = commit_hash(&b);
        put(&mut b, 56, h);
        b
    }

    /// Decodes the commit line; `None` if its hash does not verify (torn or never written).
    pub(crate) fn decode(b: &[u8]) -> Option<CommitRecord> {
        if commit_hash(b) != get(b, 56) || get(b, 0) == 0 {
            return None;
        }
        Some(CommitRecord {
            seq: get(b, 0),
            n_entries: get(b, 8),
            data_hash: get(b, 16),
        })
    }
}

/// Hash of the new contents of a transaction's logged ranges, in log order: xxh3-64 (seed 0)
/// of the concatenation of `offset (u64 LE), len (u64 LE), bytes` per range. Inputs up to
/// [`HASH_INLINE`] bytes are gathered and hashed in one call (a few small ranges, the
/// common commit: xxh3's streaming state costs more than the hashing then); longer ones go
/// through the streaming hasher, which gives the same value for the same bytes.
pub(crate) struct DataHasher<'b> {
    /// The gathered input: its first `len` bytes (a buffer the caller keeps across hashes).
    buf: &'b mut [u8; HASH_INLINE],
    len: usize,
    stream: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

/// Bytes a [`DataHasher`] gathers before switching to the streaming hasher.
const HASH_INLINE: usize = 512;

/// The gathering buffer of a [`DataHasher`], [`HASH_INLINE`] bytes: a lane keeps one
/// for its commits, so a commit neither allocates nor checks a vector's capacity per range.
#[derive(Debug)]
pub(crate) struct HashBuf(Box<[u8; HASH_INLINE]>);

impl Default for HashBuf {
    fn default() -> Self {
        HashBuf(Box::new([0; HASH_INLINE]))
    }
}

impl<'b> DataHasher<'b> {
    /// A hasher gathering into `buf` (its old contents ignored), so a commit reuses one
    /// allocation.
    pub(crate) fn new(buf: &'b mut HashBuf) -> Self {
        DataHasher {
            buf: &mut buf.0,
            len: 0,
            stream: None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(s) = &mut self.stream {
            s.update(data);
        } else if self.len + data.len() <= HASH_INLINE {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        } else {
            let mut s = Box::new(xxhash_rust::xxh3::Xxh3::new());
            s.update(&self.buf[..self.len]);
            s.update(data);
            self.stream = Some(s);
        }
    }

    #[inline]
    pub(crate) fn range(&mut self, offset: u64, bytes: &[u8]) {
        let at = self.len;
        let n = bytes.len();
        if self.stream.is_none() && n <= HASH_INLINE - 16 && at <= HASH_INLINE - 16 - n {
            // The common commit: a few small ranges gathered with fixed-size copies (a word-sized
            // range is most of them), no call into `memcpy`.
            let b = &mut *self.buf;
            if let Ok(word) = <&[u8; 8]>::try_from(bytes) {
                // One 24-byte piece, assembled in registers.
                let mut piece = [0u8; 24];
                piece[..8].copy_from_slice(&offset.to_le_bytes());
                piece[8..16].copy_from_slice(&8u64.to_le_bytes());
                piece[16..].copy_from_slice(word);
                b[at..at + 24].copy_from_slice(&piece);
            } else {
                b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
                b[at + 8..at + 16].copy_from_slice(&(n as u64).to_le_bytes());
                b[at + 16..at + 16 + n].copy_from_slice(bytes);
            }
            self.len = at + 16 + n;
            return;
        }
        self.push(&offset.to_le_bytes());
        self.push(&(n as u64).to_le_bytes());
        self.push(bytes);
    }

    pub(crate) fn finish(&self) -> u64 {
        match &self.stream {
            Some(s) => s.digest(),
            None => xxh3_64(&self.buf[..self.len]),
        }
    }
}

/// What recovery concludes about a lane's last transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing logged beyond `completed`.
    Clean,
    /// The transaction is complete (committed); only `completed` needs updating.
    Complete,
    /// The transaction did not commit: roll its entries back, newest first.
    RollBack,
}

/// The recovery decision for one lane (see docs/design.md, "Recovery").
///
/// - `first_seq`: seq of the first valid log record (None if the log is empty or torn at once);
/// - `found`: number of consecutive valid undo entries with that seq;
/// - `hash_now`: computes the data hash over those entries' ranges as they are now.
pub(crate) fn verdict(
    completed: u64,
    first_seq: Option<u64>,
    found: u64,
    commit: Option<CommitRecord>,
    hash_now: impl FnOnce() -> u64,
) -> Verdict {
    let Some(s) = first_seq else { return Verdict::Clean };
    if s <= completed {
        return Verdict::Clean;
    }
    match commit {
        Some(c) if c.seq == s => {
            if found < c.n_entries {
                // A later transaction of this lane overwrote part of the log: it only starts
                // after this one completed.
                Verdict::Complete
            } else if hash_now() == c.data_hash {
                Verdict::Complete
            } else {
                Verdict::RollBack
            }
        }
        _ => Verdict::RollBack,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn superblocks_of_formats_1_and_2_are_refused_by_name() {
        let g = Geometry::plan(4096, 8 << 20, 4, 8192, 64).unwrap();
        // Grown: the heap reaches the new end of the data area, the table stays.
        let grown = Geometry::decode(&g.encode([0, 0]), 4096, 64 << 20).unwrap();
        assert_eq!(grown.table_entries, g.table_entries);
        assert_eq!(grown.heap_size, (64 << 20) - g.heap_offset);
        assert_eq!(grown.heap_layout().chunks, g.heap_layout().chunks);
        // With room to grow.
        let roomy = g.with_room_to_grow(1 << 30);
        assert!(roomy.table_entries > g.table_entries);
        let d = Geometry::decode(&roomy.encode([0, 0]), 4096, 8 << 20).unwrap();
        assert_eq!(d, roomy);
        assert!(d.heap_layout().chunks > g.heap_layout().chunks);
        // A capacity beyond the heap is refused.
        let mut huge = roomy;
        huge.table_entries = 1 << 30;
        assert!(Geometry::decode(&huge.encode([0, 0]), 4096, 8 << 20).is_err());
        // Superblocks of the older formats (256 KiB chunks), checksum intact: named, never read.
        for (magic, format) in [(*b"PTMTXN1\0", 1), (*b"PTMTXN2\0", 2)] {
            let mut b = g.encode([0, 0]);
            b[0..8].copy_from_slice(&magic);
            let h = xxh3_64(&b[..SB_HASHED]);
            put(&mut b, SB_HASHED, h);
            assert_eq!(old_format(&b), Some(format));
            assert!(Geometry::decode(&b, 4096, 8 << 20).is_err());
        }
        assert_eq!(old_format(&g.encode([0, 0])), None);
    }

    use super::*;

    /// The gathered one-call hash equals the streaming hash of the same ranges (the on-media
    /// `data_hash` did not change), below, across and far beyond the inline buffer.
    #[test]
    fn data_hash_matches_the_streaming_hash() {
        for sizes in [
            &[][..],
            &[8][..],
            &[8; 8][..],
            &[3, 500, 9][..],
            &[64; 40][..],
            &[4096, 1][..],
            &[500, 8, 8][..],
            &[8, 480, 8][..],
            // The buffer gathered to exactly its end, and to 7 bytes before it: the next range
            // starts the streaming hasher with its offset.
            &[496, 8][..],
            &[489, 8][..],
        ] {
            let mut fresh = HashBuf::default();
            let mut fast = DataHasher::new(&mut fresh);
            // A reused buffer, left full of an earlier commit's bytes.
            let mut old = HashBuf(Box::new([0xA5; HASH_INLINE]));
            let mut reused = DataHasher::new(&mut old);
            let mut slow = xxhash_rust::xxh3::Xxh3::new();
            for (i, &n) in sizes.iter().enumerate() {
                let bytes: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
                let off = 4096 * i as u64 + 8;
                fast.range(off, &bytes);
                reused.range(off, &bytes);
                slow.update(&off.to_le_bytes());
                slow.update(&(n as u64).to_le_bytes());
                slow.update(&bytes);
            }
            assert_eq!(fast.finish(), slow.digest(), "{sizes:?}");
            assert_eq!(reused.finish(), slow.digest(), "{sizes:?}, reused buffer");
            drop(reused);
            let again = DataHasher::new(&mut old);
            assert_eq!(
                again.finish(),
                xxhash_rust::xxh3::xxh3_64(&[]),
                "a reused buffer starts empty"
            );
        }
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let g = Geometry::plan(4096, 64 << 20, 8, 65536, 100).unwrap();
        let secret = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
        let b = g.encode(secret);
        assert_eq!(Geometry::decode(&b, 4096, 64 << 20), Ok(g));
        assert_eq!(routing_secret(&b), secret);
        // Format 4 (its magic, checksum intact): read with the old lane layout and the secret;
        // and a geometry of that layout encodes as format 4.
        let old = Geometry {
            packed_log: false,
            ..g
        };
        let mut v4 = b;
        v4[0..8].copy_from_slice(&SB_MAGIC_V4);
        let h = xxh3_64(&v4[..SB_HASHED]);
        put(&mut v4, SB_HASHED, h);
        assert_eq!(Geometry::decode(&v4, 4096, 64 << 20), Ok(old));
        assert_eq!(routing_secret(&v4), secret);
        assert_eq!(old.encode(secret), v4);
        // Format 3 (its magic, checksum intact): read, and its secret bytes are never used.
        let mut v3 = b;
        v3[0..8].copy_from_slice(&SB_MAGIC_V3);
        let h = xxh3_64(&v3[..SB_HASHED]);
        put(&mut v3, SB_HASHED, h);
        assert_eq!(Geometry::decode(&v3, 4096, 64 << 20), Ok(old));
        assert_eq!(routing_secret(&v3), [0, 0]);
        // The secret is covered by the checksum like the rest of the immutable part.
        for i in 0..SB_HASHED + 8 {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(Geometry::decode(&d, 4096, 64 << 20).is_err(), "byte {i}");
        }
        assert!(Geometry::decode(&b, 4096, 32 << 20).is_err() || g.heap_offset + g.heap_size <= 32 << 20);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the clock and the OS's randomness")]
    fn routing_secrets_are_fresh() {
        // Every pool draws its own: two draws differ, and neither is "no secret".
        let (a, b) = (fresh_routing_secret(), fresh_routing_secret());
        assert_ne!(a, b);
        assert_ne!(a, [0, 0]);
    }

    #[test]
    fn routing_secrets_are_read_only_from_whole_fields() {
        let a = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
        // Read from a superblock long enough to hold the field (it ends at byte 88), else none.
        let g = Geometry::plan(4096, 64 << 20, 8, 65536, 100).unwrap();
        let sb = g.encode(a);
        assert_eq!(routing_secret(&sb[..SB_ROUTING_SECRET + 16]), a);
        for short in [SB_ROUTING_SECRET + 15, SB_ROUTING_SECRET + 8, 60, 8] {
            assert_eq!(routing_secret(&sb[..short]), [0, 0], "{short} bytes");
        }
    }

    #[test]
    fn schema_records_round_trip_and_detect_damage() {
        use pmem_core::schema::{schema_of, TypeSchema};
        let schema = schema_of::<[u64; 3]>();
        let b = encode_schema(&schema);
        assert_eq!(decode_schema(&b), Ok(RootSchema::Described(schema.clone())));
        assert_eq!(decode_schema(&[0u8; 64]), Ok(RootSchema::NotRecorded));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x04;
            let r = decode_schema(&d);
            // Flipping a fingerprint bit to leave it 0 is "not recorded"; everything else is
            // caught.
            assert!(
                r.is_err() || (i < 8 && r == Ok(RootSchema::NotRecorded)),
                "byte {i}: {r:?}"
            );
        }
        // Too long to keep: the fingerprint alone.
        let long = TypeSchema::generic("Long", 8, (0..400).map(|_| ("T", schema_of::<u64>())).collect());
        let b = encode_schema(&long);
        assert_eq!(b.len(), SCHEMA_HEADER);
        assert_eq!(decode_schema(&b), Ok(RootSchema::Fingerprint(long.fingerprint())));
    }

    /// `decode_schema` takes any slice (pools pass the 3072 bytes from superblock offset 1024,
    /// exactly a header and the longest text): a slice too short for the header, a record
    /// whose text runs past the slice's end, and a length beyond the limit in a longer slice
    /// are each refused by name, never indexed past the end nor read.
    #[test]
    fn schema_records_are_checked_against_the_slice_and_the_limit() {
        use pmem_core::schema::{fingerprint_of, schema_of};
        let b = encode_schema(&schema_of::<[u64; 3]>());
        for n in 0..SCHEMA_HEADER {
            assert_eq!(
                decode_schema(&b[..n]),
                Err("schema record truncated"),
                "{n} bytes"
            );
        }
        for n in SCHEMA_HEADER..b.len() {
            assert_eq!(
                decode_schema(&b[..n]),
                Err("schema record length is impossible"),
                "{n} bytes"
            );
        }
        // A text one byte longer than the limit, check and fingerprint right, in a slice with
        // room for it: refused by its length.
        let text = "a".repeat(SCHEMA_MAX_TEXT + 1);
        let mut long = vec![0u8; SB_SIZE as usize];
        put(&mut long, 0, fingerprint_of(&text));
        long[8..12].copy_from_slice(&(text.len() as u32).to_le_bytes());
        long[12..16].copy_from_slice(&SCHEMA_FORMAT.to_le_bytes());
        long[SCHEMA_HEADER..SCHEMA_HEADER + text.len()].copy_from_slice(text.as_bytes());
        let check = schema_check(&long[..16], text.as_bytes());
        put(&mut long, 16, check);
        assert_eq!(decode_schema(&long), Err("schema record length is impossible"));
    }

    /// The chunk table's two upper bounds at their edges: at most 2^48 bytes of chunks
    /// (`2^32` entries), and entries that fit in the heap (a table filling it exactly is not
    /// refused here). A heap that large needs no file: `decode` takes the data area's end.
    #[test]
    fn chunk_table_bounds_are_inclusive() {
        let end = (1u64 << 35) + (1 << 30);
        let g = Geometry::plan(4096, end, 4, 65536, 100).unwrap();
        let with = |table_entries| Geometry { table_entries, ..g }.encode([1, 2]);
        let max = (1u64 << 48) / crate::engine::heap::CHUNK;
        assert_eq!(max, 1 << 32);
        assert!(max * 8 <= g.heap_size);
        assert!(Geometry::decode(&with(max), 4096, end).is_ok());
        assert!(Geometry::decode(&with(max + 1), 4096, end).is_err());
        let g = Geometry::plan(4096, 64 << 20, 4, 65536, 100).unwrap();
        let with = |table_entries| Geometry { table_entries, ..g }.encode([1, 2]);
        assert!(Geometry::decode(&with(g.heap_size / 8), 4096, 64 << 20).is_ok());
        assert!(Geometry::decode(&with(g.heap_size / 8 + 1), 4096, 64 << 20).is_err());
    }

    #[test]
    fn plan_refuses_pools_too_small() {
        assert!(Geometry::plan(4096, 4096 * 20, 64, 65536, 8).is_none());
    }

    #[test]
    fn records_round_trip_and_detect_tears() {
        let data = [7u8; 40];
        let key = log_key([3, 4]);
        let h = encode_rec(key, 9, KIND_UNDO, 40, 12345, &data);
        let r = decode_rec(&h);
        assert_eq!((r.seq, r.kind, r.len, r.target), (9, KIND_UNDO, 40, 12345));
        assert!(rec_hash_ok(key, &r, &data));
        let mut torn = data;
        torn[39] = 0;
        assert!(!rec_hash_ok(key, &r, &torn));
        // A record made without the pool's key (or with another pool's) does not verify.
        assert!(!rec_hash_ok(0, &r, &data));
        assert!(!rec_hash_ok(log_key([3, 5]), &r, &data));
        assert_eq!(log_key([0, 0]), 0);
        assert_ne!(log_key([3, 4]), log_key([4, 3]));
        let mut g = Geometry::plan(4096, 64 << 20, 4, 65536, 64).expect("a geometry");
        assert!(g.packed_log, "new pools pack their logs");
        assert_eq!(
            (g.rec_total(0), g.rec_total(8), g.rec_total(32), g.rec_total(33)),
            (32, 40, 64, 72)
        );
        assert_eq!(g.lane_log(1), (g.lane(1) + 8, g.lane(1) + 65536 - 64));
        assert_eq!(g.lane_commit(1), g.lane(1) + 65536 - 64);
        g.packed_log = false;
        assert_eq!(
            (g.rec_total(0), g.rec_total(8), g.rec_total(32), g.rec_total(33)),
            (64, 64, 64, 128)
        );
        assert_eq!(g.lane_log(1), (g.lane(1) + 128, g.lane(2)));
        assert_eq!(g.lane_commit(1), g.lane(1) + 64);
    }

    #[test]
    fn commit_record_round_trips_and_rejects_zero_and_tears() {
        let c = CommitRecord {
            seq: 3,
            n_entries: 2,
            data_hash: 99,
        };
        let b = c.encode();
        assert_eq!(CommitRecord::decode(&b), Some(c));
        let mut t = b;
        t[17] ^= 1;
        assert_eq!(CommitRecord::decode(&t), None);
        assert_eq!(CommitRecord::decode(&[0u8; 64]), None);
    }

    #[test]
    fn verdict_table() {
        let c = |seq, n| {
            Some(CommitRecord {
                seq,
                n_entries: n,
                data_hash: 42,
            })
        };
        assert_eq!(verdict(5, None, 0, None, || 0), Verdict::Clean);
        assert_eq!(verdict(5, Some(5), 1, None, || 0), Verdict::Clean);
        assert_eq!(verdict(5, Some(6), 2, None, || 0), Verdict::RollBack);
        assert_eq!(verdict(5, Some(6), 2, c(5, 2), || 42), Verdict::RollBack);
        assert_eq!(verdict(5, Some(6), 2, c(6, 2), || 42), Verdict::Complete);
        assert_eq!(verdict(5, Some(6), 2, c(6, 2), || 41), Verdict::RollBack);
        assert_eq!(verdict(5, Some(6), 1, c(6, 2), || 41), Verdict::Complete);
    }
}
