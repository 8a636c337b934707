//! The journal's on-media format: two header slots and a sequence of checksummed records.
//!
//! All integers little-endian.
//!
//! **File layout.** Bytes `[0, 4096)` hold two 64-byte header slots, slot 0 at offset 0 and slot
//! 1 at offset 2048 (different sectors). The active slot is the valid one with the higher epoch;
//! a reset writes the other one. Records start at offset 4096 ([`RECORDS_OFFSET`]) and follow each
//! other with no gap. The file past the last record holds zeros or stale records of an older
//! epoch.
//!
//! **Header slot** (64 bytes):
//!
//! | offset | size | field            | meaning                                                  |
//! |-------:|-----:|------------------|----------------------------------------------------------|
//! |      0 |    8 | `magic`          | `b"PTMJRNL\0"`                                           |
//! |      8 |    4 | `version`        | [`JOURNAL_VERSION`]                                      |
//! |     12 |    4 | `slot_size`      | 64                                                       |
//! |     16 |   16 | `pool_uuid`      | the UUID of the pool this journal belongs to             |
//! |     32 |    8 | `epoch`          | ≥ 1; bumped by every reset; records carry it             |
//! |     40 |    8 | `start_seq`      | sequence number of the first record of this epoch        |
//! |     48 |    8 | `records_offset` | 4096                                                     |
//! |     56 |    4 | `reserved`       | zero                                                     |
//! |     60 |    4 | `checksum`       | CRC32C of bytes 0..60                                    |
//!
//! **Record** (40-byte header, then the payload):
//!
//! | offset | size | field          | meaning                                                      |
//! |-------:|-----:|----------------|--------------------------------------------------------------|
//! |      0 |    4 | `magic`        | `0x4A52_5450` (`b"PTRJ"`)                                    |
//! |      4 |    4 | `payload_len`  | bytes after the header, a multiple of 8                      |
//! |      8 |    8 | `epoch`        | the header's epoch when written                              |
//! |     16 |    8 | `seq`          | `start_seq` + the record's index in the epoch                |
//! |     24 |    8 | `durable_seq`  | every record with a lower or equal `seq` was durable (synced) when this one was made; 0: none |
//! |     32 |    4 | `n_ranges`     | ranges in the payload                                        |
//! |     36 |    4 | `checksum`     | CRC32C of header bytes 0..36, then the payload               |
//!
//! The payload is `n_ranges` ranges, each `offset: u64`, `len: u64` (pool byte offsets, a
//! multiple of 8) followed by `len` bytes: the pool's contents of `[offset, offset + len)`.
//!
//! **Validity.** Replay reads records from offset 4096 while each has the magic, the header's
//! epoch, the next sequence number, a payload inside the file, ranges inside the pool's data
//! area, and a matching checksum. The first record that fails ends the valid prefix. If a later
//! record of the same epoch is valid and its `durable_seq` covers the failed one's sequence
//! number, the failed record had been synced: that is corruption in the middle of the journal,
//! not a torn tail, and opening fails with a named error.

/// Journal header magic.
pub const JOURNAL_MAGIC: [u8; 8] = *b"PTMJRNL\0";
/// The journal format version this build reads and writes.
pub const JOURNAL_VERSION: u32 = 1;
/// Bytes per header slot.
pub const SLOT_SIZE: usize = 64;
/// File offsets of the two header slots.
pub const SLOT_OFFSETS: [u64; 2] = [0, 2048];
/// File offset of the first record.
pub const RECORDS_OFFSET: u64 = 4096;
/// Record magic (`b"PTRJ"` little-endian).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PTRJ");
/// Bytes in a record header.
pub const RECORD_HEADER: usize = 40;
/// Bytes in a range header inside a record's payload.
pub const RANGE_HEADER: usize = 16;
/// Largest payload a record may carry (1 GiB): a bigger length is a damaged header.
pub const MAX_PAYLOAD: u64 = 1 << 30;

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One journal header slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    /// The pool this journal belongs to.
    pub pool_uuid: [u8; 16],
    /// Current epoch (records of other epochs are stale).
    pub epoch: u64,
    /// Sequence number of the epoch's first record.
    pub start_seq: u64,
}

/// Why a header slot was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotProblem {
    /// All bytes zero: never written.
    Empty,
    /// No journal magic.
    BadMagic,
    /// Another format version.
    Version(u32),
    /// Checksum does not match.
    Checksum,
    /// A field is impossible.
    BadField(&'static str),
}

impl JournalHeader {
    /// Encodes the slot.
    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        b[0..8].copy_from_slice(&JOURNAL_MAGIC);
        b[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.pool_uuid);
        b[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        b[40..48].copy_from_slice(&self.start_seq.to_le_bytes());
        b[48..56].copy_from_slice(&RECORDS_OFFSET.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates one slot.
    ///
    /// # Errors
    ///
    /// What is wrong with the slot.
    pub fn decode(b: &[u8; SLOT_SIZE]) -> Result<Self, SlotProblem> {
        if b.iter().all(|&x| x == 0) {
            return Err(SlotProblem::Empty);
        }
        if b[0..8] != JOURNAL_MAGIC {
            return Err(SlotProblem::BadMagic);
        }
        let version = get_u32(b, 8);
        if version != JOURNAL_VERSION {
            return Err(SlotProblem::Version(version));
        }
        if crc32c::crc32c(&b[..60]) != get_u32(b, 60) {
            return Err(SlotProblem::Checksum);
        }
        if get_u32(b, 12) as usize != SLOT_SIZE {
            return Err(SlotProblem::BadField("slot_size"));
        }
        if get_u64(b, 48) != RECORDS_OFFSET {
            return Err(SlotProblem::BadField("records_offset"));
        }
        let epoch = get_u64(b, 32);
        if epoch == 0 {
            return Err(SlotProblem::BadField("epoch"));
        }
        Ok(JournalHeader {
            pool_uuid: b[16..32].try_into().expect("16 bytes"),
            epoch,
            start_seq: get_u64(b, 40),
        })
    }

    /// The slot a header of this epoch is written to (alternating, so a torn write leaves the
    /// other slot intact).
    pub fn slot_index(&self) -> usize {
        (self.epoch % 2) as usize
    }
}

/// Picks the active header from the two slots: the valid one with the higher epoch.
///
/// # Errors
///
/// Both slots' problems when neither is valid.
pub fn pick_header(slots: [&[u8; SLOT_SIZE]; 2]) -> Result<JournalHeader, [SlotProblem; 2]> {
    match (JournalHeader::decode(slots[0]), JournalHeader::decode(slots[1])) {
        (Ok(a), Ok(b)) => Ok(if b.epoch > a.epoch { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err([a, b]),
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes.
    pub payload_len: u64,
    /// Epoch.
    pub epoch: u64,
    /// Sequence number.
    pub seq: u64,
    /// Highest sequence number known durable when the record was made.
    pub durable_seq: u64,
    /// Ranges in the payload.
    pub n_ranges: u32,
    /// Stored checksum.
    pub checksum: u32,
}

impl RecordHeader {
    /// Decodes a record header (no checksum verification), or `None` without the magic or with
    /// an impossible payload length.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < RECORD_HEADER || get_u32(b, 0) != RECORD_MAGIC {
            return None;
        }
        let payload_len = u64::from(get_u32(b, 4));
        if !payload_len.is_multiple_of(8) || payload_len > MAX_PAYLOAD {
            return None;
        }
        Some(RecordHeader {
            payload_len,
            epoch: get_u64(b, 8),
            seq: get_u64(b, 16),
            durable_seq: get_u64(b, 24),
            n_ranges: get_u32(b, 32),
            checksum: get_u32(b, 36),
        })
    }

    /// Whether `record` (header and payload, exactly `RECORD_HEADER + payload_len` bytes) carries
    /// a matching checksum.
    pub fn checksum_ok(&self, record: &[u8]) -> bool {
        record.len() as u64 == RECORD_HEADER as u64 + self.payload_len
            && record_checksum(record) == self.checksum
    }
}

/// The checksum of an encoded record: CRC32C of header bytes 0..36, then the payload.
pub fn record_checksum(record: &[u8]) -> u32 {
    let c = crc32c::crc32c(&record[..36]);
    crc32c::crc32c_append(c, &record[RECORD_HEADER..])
}

/// Starts a record in `buf` (appends a header with a zero length and checksum); returns the
/// record's start index for [`finish_record`].
pub fn begin_record(buf: &mut Vec<u8>, epoch: u64, seq: u64, durable_seq: u64) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&durable_seq.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    start
}

/// Appends a range header for `len` bytes at `offset`; the caller appends the bytes (a multiple
/// of 8).
pub fn push_range_header(buf: &mut Vec<u8>, offset: u64, len: u64) {
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
}

/// Completes the record started at `start`: fills in its payload length, range count and
/// checksum.
pub fn finish_record(buf: &mut [u8], start: usize, n_ranges: u32) {
    let payload = (buf.len() - start - RECORD_HEADER) as u32;
    buf[start + 4..start + 8].copy_from_slice(&payload.to_le_bytes());
    buf[start + 32..start + 36].copy_from_slice(&n_ranges.to_le_bytes());
    let crc = record_checksum(&buf[start..]);
    buf[start + 36..start + 40].copy_from_slice(&crc.to_le_bytes());
}

/// One range of a record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRef<'a> {
    /// Pool byte offset.
    pub offset: u64,
    /// The bytes to place there.
    pub bytes: &'a [u8],
}

/// Splits a checksum-verified payload into its ranges, each checked to lie inside
/// `[data_start, data_end)`; `None` if the payload does not parse or a range leaves the area.
pub fn parse_ranges(
    payload: &[u8],
    n_ranges: u32,
    data_start: u64,
    data_end: u64,
) -> Option<Vec<RangeRef<'_>>> {
    let mut out = Vec::with_capacity(n_ranges.min(4096) as usize);
    let mut at = 0usize;
    for _ in 0..n_ranges {
        if payload.len() - at < RANGE_HEADER {
            return None;
        }
        let offset = get_u64(payload, at);
        let len = get_u64(payload, at + 8);
        at += RANGE_HEADER;
        if !len.is_multiple_of(8) || len > (payload.len() - at) as u64 {
            return None;
        }
        let end = offset.checked_add(len)?;
        if offset < data_start || end > data_end {
            return None;
        }
        out.push(RangeRef {
            offset,
            bytes: &payload[at..at + len as usize],
        });
        at += len as usize;
    }
    (at == payload.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = JournalHeader {
            pool_uuid: [7; 16],
            epoch: 3,
            start_seq: 99,
        };
        let b = h.encode();
        assert_eq!(JournalHeader::decode(&b), Ok(h));
        for i in 0..SLOT_SIZE {
            let mut d = b;
            d[i] ^= 0x40;
            assert!(JournalHeader::decode(&d).is_err(), "byte {i}");
        }
        assert_eq!(JournalHeader::decode(&[0; SLOT_SIZE]), Err(SlotProblem::Empty));
    }

    #[test]
    fn newer_valid_slot_wins() {
        let a = JournalHeader {
            pool_uuid: [1; 16],
            epoch: 4,
            start_seq: 10,
        }
        .encode();
        let b = JournalHeader {
            pool_uuid: [1; 16],
            epoch: 5,
            start_seq: 20,
        }
        .encode();
        assert_eq!(pick_header([&a, &b]).unwrap().epoch, 5);
        let mut torn = b;
        torn[40] ^= 1;
        assert_eq!(pick_header([&a, &torn]).unwrap().epoch, 4);
    }

    #[test]
    fn record_round_trips() {
        let mut buf = vec![0xAA; 3];
        let start = begin_record(&mut buf, 2, 17, 16);
        push_range_header(&mut buf, 4096, 8);
        buf.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        push_range_header(&mut buf, 8192, 16);
        buf.extend_from_slice(&[9; 16]);
        finish_record(&mut buf, start, 2);
        let rec = &buf[start..];
        let h = RecordHeader::decode(rec).unwrap();
        assert_eq!((h.epoch, h.seq, h.durable_seq, h.n_ranges), (2, 17, 16, 2));
        assert!(h.checksum_ok(rec));
        let ranges = parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, 4096, 1 << 20).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].offset, 8192);
        assert_eq!(ranges[1].bytes, &[9; 16]);
        // A range outside the data area does not parse.
        assert!(parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, 4096, 8192).is_none());
        // Any flipped bit breaks the checksum or the header.
        for i in 0..rec.len() {
            let mut d = rec.to_vec();
            d[i] ^= 1;
            let ok = RecordHeader::decode(&d).is_some_and(|h2| h2.checksum_ok(&d) && h2 == h);
            assert!(!ok, "byte {i}");
        }
    }

    #[test]
    fn record_header_limits() {
        // A header alone (an empty payload) decodes; one byte short does not.
        let mut buf = Vec::new();
        let start = begin_record(&mut buf, 1, 1, 0);
        finish_record(&mut buf, start, 0);
        assert_eq!(buf.len(), RECORD_HEADER);
        let h = RecordHeader::decode(&buf).unwrap();
        assert_eq!((h.payload_len, h.n_ranges), (0, 0));
        assert!(h.checksum_ok(&buf));
        assert!(RecordHeader::decode(&buf[..RECORD_HEADER - 1]).is_none());
        // Payload lengths: a multiple of 8, at most MAX_PAYLOAD.
        for (len, ok) in [
            (MAX_PAYLOAD, true),
            (MAX_PAYLOAD - 8, true),
            (MAX_PAYLOAD + 8, false),
            (12, false),
        ] {
            let mut b = buf.clone();
            b[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            assert_eq!(RecordHeader::decode(&b).is_some(), ok, "payload_len {len}");
        }
    }

    #[test]
    fn ranges_parse_to_the_payload_end_and_no_further() {
        // An empty range is a range; ranges touching both ends of the data area are inside it.
        let mut p = Vec::new();
        push_range_header(&mut p, 4096, 0);
        push_range_header(&mut p, 4096, 8);
        p.extend_from_slice(&[1; 8]);
        push_range_header(&mut p, 8184, 8);
        p.extend_from_slice(&[2; 8]);
        let r = parse_ranges(&p, 3, 4096, 8192).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].offset, r[0].bytes.len()), (4096, 0));
        assert_eq!((r[2].offset, r[2].bytes), (8184, &[2u8; 8][..]));
        // An empty range last: its header is the payload's last 16 bytes.
        let mut q = Vec::new();
        push_range_header(&mut q, 4096, 8);
        q.extend_from_slice(&[3; 8]);
        push_range_header(&mut q, 4104, 0);
        assert_eq!(parse_ranges(&q, 2, 4096, 8192).unwrap().len(), 2);
        // Fewer ranges than the payload holds, more, a range past the payload, trailing bytes.
        assert!(parse_ranges(&p, 2, 4096, 8192).is_none());
        assert!(parse_ranges(&p, 4, 4096, 8192).is_none());
        assert!(parse_ranges(&p[..p.len() - 8], 3, 4096, 8192).is_none());
        let mut longer = p.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(parse_ranges(&longer, 3, 4096, 8192).is_none());
        // Just outside the data area at either end.
        assert!(parse_ranges(&p, 3, 4104, 8192).is_none());
        assert!(parse_ranges(&p, 3, 4096, 8184).is_none());
    }
}
