//! The per-input checks of the fuzz targets, shared through `#[path]` with the stable replay
//! test `pmem-core/tests/pmem-core/fuzz_corpus.rs` (std and pmem-core only). Each panics on a finding.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pmem_core::internals::header::{ParseFailure, MAGIC, MAX_POOL_SIZE};
use pmem_core::{
    inspect_headers, read_from_bytes, repair_headers, Error, HeaderFault, HeaderProblem, HeaderRepair,
    PoolHeader, RegionOptions, FORMAT_VERSION, HEADER_SIZE, MIN_POOL_SIZE,
};

// `super`, not `crate`: pmem-core's `fuzz_corpus` test module includes this file too.
use super::image;

const HS: u64 = HEADER_SIZE as u64;

/// `header_parse`: `PoolHeader::parse` on `data`, on `data` padded (or cut) to 4096 bytes, and
/// on that with its checksum made valid (to reach the checks behind the checksum). Each result
/// must agree with [`expected_parse`]; an accepted header must be well-formed and survive
/// `as_bytes` + `parse` unchanged.
pub fn check_header_parse(data: &[u8]) {
    check_parse(data);
    let mut padded = data.to_vec();
    padded.resize(HEADER_SIZE, 0);
    check_parse(&padded);
    let mut h: PoolHeader = read_from_bytes(&padded).expect("4096 bytes hold a header");
    h.checksum = h.compute_checksum();
    check_parse(h.as_bytes());
}

fn check_parse(bytes: &[u8]) {
    let got = PoolHeader::parse(bytes);
    let want = expected_parse(bytes);
    match (&got, &want) {
        (Ok(h), Ok(())) => {
            assert_eq!(
                h.as_bytes(),
                &bytes[..HEADER_SIZE],
                "parse must not change the bytes"
            );
            assert_well_formed(h);
            let again = PoolHeader::parse(h.as_bytes()).expect("re-parsing an accepted header");
            assert_eq!(again.as_bytes(), h.as_bytes(), "round trip changed the header");
        }
        // Which geometry field is reported first is the parser's choice.
        (
            Err(ParseFailure::Problem(HeaderProblem::BadGeometry { .. })),
            Err(ParseFailure::Problem(HeaderProblem::BadGeometry { .. })),
        ) => {}
        (Err(g), Err(w)) => assert_eq!(g, w, "parse reported the wrong failure"),
        _ => panic!("parse returned {got:?}, the format table says {want:?}"),
    }
    if let Err(ParseFailure::Problem(p)) = got {
        let _ = p.to_string();
    }
}

/// What `PoolHeader::parse` must return, worked out from the format table in `header.rs`
/// directly on the bytes, with its own CRC32C. (`_pad` and `reserved` are not checked.)
pub fn expected_parse(b: &[u8]) -> Result<(), ParseFailure> {
    let geometry = |field| Err(ParseFailure::Problem(HeaderProblem::BadGeometry { field }));
    if b.len() < HEADER_SIZE {
        return geometry("header_size");
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if b[..8] != MAGIC {
        return Err(ParseFailure::Problem(HeaderProblem::BadMagic));
    }
    let (version, stored, computed) = (u32_at(8), u32_at(4092), crc32c(&b[..4092]));
    if stored != computed {
        if version > FORMAT_VERSION {
            let checksum_ok = false;
            return Err(ParseFailure::Version {
                found: version,
                checksum_ok,
            });
        }
        return Err(ParseFailure::Problem(HeaderProblem::ChecksumMismatch {
            stored,
            computed,
        }));
    }
    if version != FORMAT_VERSION {
        let checksum_ok = true;
        return Err(ParseFailure::Version {
            found: version,
            checksum_ok,
        });
    }
    // Bit 0 is the journal flag, bit 1 the grow mark; every other bit is unknown.
    if u64_at(64) & !3 != 0 {
        return Err(ParseFailure::Problem(HeaderProblem::UnknownFlags {
            flags: u64_at(64) & !3,
        }));
    }
    let pool = u64_at(32);
    let layout = &b[88..152];
    let name_ok = layout
        .iter()
        .position(|&c| c == 0)
        .is_some_and(|n| std::str::from_utf8(&layout[..n]).is_ok());
    if u32_at(12) != HS as u32
        || !(MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&pool)
        || pool & (HS - 1) != 0
        || u64_at(40) != HS
        || u64_at(48) != pool - 2 * HS
        || u64_at(56) != pool - HS
        || b[72..74] == [0, 0]
        || !name_ok
        // Shutdown flags (bytes 168..172): bit 0 count known, bit 1 dirty; others refused.
        || u32_at(168) & !3 != 0
    {
        return geometry("any");
    }
    Ok(())
}

/// CRC32C (Castagnoli, reflected), independent of the `crc32c` crate pmem-core uses.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, &x| {
        TABLE[((c ^ u32::from(x)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// What every header accepted by `parse` (or returned by an open) must satisfy.
pub fn assert_well_formed(h: &PoolHeader) {
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.version, FORMAT_VERSION);
    assert_eq!(h.header_size, HS as u32);
    assert_eq!(
        h.flags & !(pmem_core::internals::header::FLAG_JOURNAL | pmem_core::internals::header::FLAG_GROWING),
        0
    );
    assert_eq!(h.checksum, h.compute_checksum());
    assert!(
        (MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&h.pool_size) && h.pool_size & (HS - 1) == 0,
        "pool_size {}",
        h.pool_size
    );
    assert_eq!(h.data_offset, HS);
    assert_eq!(h.data_size, h.pool_size - 2 * HS);
    assert_eq!(h.backup_offset, h.pool_size - HS);
    assert_ne!(h.pptr_tag, 0);
    let nul = h.layout.iter().position(|&c| c == 0).expect("layout has a NUL");
    assert_eq!(
        h.layout_name(),
        std::str::from_utf8(&h.layout[..nul]).expect("layout is UTF-8")
    );
    let _ = format!("{h:?}");
}

/// `open_pool`: decodes `input` into an image ([`image::decode`]), writes it to `dir`, then runs
/// `inspect_headers`, an open, `repair_headers` and another open, checking each result against
/// the image and the others.
pub fn check_open_pool(dir: &Path, template: &[u8], input: &[u8]) {
    let img = image::decode(template, input);
    let path = dir.join("pool.img");
    std::fs::write(&path, &img).expect("write the pool image");
    let len = img.len() as u64;
    let slot = image::backup_slot(img.len());
    // The msync engine opens without touching the header (the journaled one sets its flag).
    let opts = RegionOptions::new()
        .layout(image::TEMPLATE_LAYOUT)
        .engine(pmem_core::Engine::Msync);

    let report = inspect_headers(&path).expect("inspect_headers on an unlocked, readable file");
    assert_eq!(report.file_len, len);
    let (primary, backup) = (report.primary, report.backup);
    let primary_size = primary.map(|h| h.pool_size);
    match &primary {
        Ok(h) => {
            assert_eq!(h.as_bytes(), &img[..HEADER_SIZE]);
            assert_well_formed(h);
        }
        Err(HeaderFault::Missing) => assert!(len < HS),
        Err(HeaderFault::Version(v)) => assert_ne!(*v, FORMAT_VERSION),
        Err(_) => assert!(len >= HS),
    }
    match (&backup, slot) {
        (Ok(h), Some(b)) => {
            assert_eq!(h.as_bytes(), &img[b..b + HEADER_SIZE]);
            assert_well_formed(h);
            assert_eq!(h.backup_offset, b as u64, "backup accepted away from its offset");
        }
        (Err(HeaderFault::Missing), s) => assert!(s.is_none(), "backup slot exists but reported missing"),
        (r, None) => panic!("no room for a backup, yet it was reported as {r:?}"),
        (Err(_), Some(_)) => {}
    }

    match opts.open(&path) {
        Ok(region) => {
            let h = *region.header();
            assert_well_formed(&h);
            // A primary marked as growing is an interrupted grow: finished (a header at the
            // file's end naming its length and the pool's UUID became the primary) or undone
            // (the file cut back to the primary's size, the mark cleared).
            let len_now = std::fs::metadata(&path).expect("stat the pool").len();
            let growing = primary
                .as_ref()
                .is_ok_and(|p| p.flags & pmem_core::internals::header::FLAG_GROWING != 0);
            if growing {
                assert_eq!(
                    h.flags & pmem_core::internals::header::FLAG_GROWING,
                    0,
                    "still growing"
                );
                assert_eq!(
                    primary.map(|p| p.uuid),
                    Ok(h.uuid),
                    "finished another pool's grow"
                );
            } else {
                assert_eq!(h.as_bytes(), &img[..HEADER_SIZE]);
                assert_eq!(len_now, len, "the open changed the file's length");
            }
            let len = len_now;
            assert_eq!(
                h.pool_size, len,
                "opened a pool whose size is not the file length"
            );
            assert_eq!(region.len(), len);
            assert_eq!(region.data_range(), HS..len - HS);
            assert_eq!(h.layout_name(), image::TEMPLATE_LAYOUT);
            if !growing {
                let old_backup = slot.map(|b| &img[b..b + HEADER_SIZE]);
                assert_eq!(region.backup_rewritten(), old_backup != Some(h.as_bytes()));
            }
            let mut first = vec![0u8; HEADER_SIZE];
            region.read_at(0, &mut first).expect("read the mapped primary");
            assert_eq!(first, h.as_bytes());
            drop(region);
            assert_backup_equals(&path, len, &h);
        }
        Err(e) => {
            let _ = e.to_string();
            match &e {
                Error::Truncated { len: l, expected, .. } => {
                    assert_eq!(*l, len);
                    assert!(*expected > len, "{e}");
                    assert!(len < HS || primary_size == Ok(*expected), "{e}");
                }
                Error::SizeMismatch { header, file, .. } => {
                    assert_eq!((*file, primary_size), (len, Ok(*header)));
                    assert!(*header < len, "{e}");
                }
                Error::NotAPool { .. } => {
                    let no_magic = |r: &Result<PoolHeader, HeaderFault>| {
                        matches!(
                            r,
                            Err(HeaderFault::Missing | HeaderFault::Damaged(HeaderProblem::BadMagic))
                        )
                    };
                    assert!(
                        no_magic(&primary) && no_magic(&backup),
                        "{e}: {primary:?} {backup:?}"
                    );
                }
                Error::UnsupportedVersion { found, .. } => {
                    assert_eq!(primary.err(), Some(HeaderFault::Version(*found)));
                    // A "newer" version with a failing checksum next to an intact backup is damage.
                    let unverified = expected_parse(&img) != Err(version_failure(*found, true));
                    assert!(!unverified || backup.is_err(), "{e}, yet the backup is intact");
                }
                Error::CorruptHeader {
                    problem,
                    backup_intact,
                    ..
                } => {
                    assert_eq!(
                        *backup_intact,
                        backup.is_ok(),
                        "{e}: inspect disagrees on the backup"
                    );
                    if let Err(HeaderFault::Version(v)) = primary {
                        assert_eq!(expected_parse(&img), Err(version_failure(v, false)), "{e}");
                        assert!(*backup_intact, "{e}: newer version blamed on damage");
                        let stored = u32::from_le_bytes(img[4092..HEADER_SIZE].try_into().unwrap());
                        let computed = crc32c(&img[..4092]);
                        assert_eq!(*problem, HeaderProblem::ChecksumMismatch { stored, computed });
                    } else {
                        assert_eq!(primary.err(), Some(HeaderFault::Damaged(*problem)), "{e}");
                    }
                }
                Error::LayoutMismatch { expected, found, .. } => {
                    assert_ne!(expected, found);
                    assert!(primary.is_ok_and(|h| h.pool_size == len && h.layout_name() == *found));
                }
                Error::JournalMissing { .. } => {
                    // The header says a journal may hold changes, and there is none beside it.
                    assert!(
                        primary.is_ok_and(|h| h.flags & pmem_core::internals::header::FLAG_JOURNAL != 0),
                        "{e}"
                    );
                }
                _ => panic!("unexpected error from open: {e:?}"),
            }
        }
    }

    // The open may have finished or undone an interrupted grow: the file's length now.
    let len = std::fs::metadata(&path).expect("stat the pool").len();
    // Repair acts exactly where open (without a layout check) reports a damaged primary with an
    // intact backup; everywhere else it returns open's own error, or does nothing harmful.
    let verdict = RegionOptions::new()
        .engine(pmem_core::Engine::Msync)
        .open(&path)
        .map(drop);
    let repaired = repair_headers(&path);
    match (&verdict, &repaired) {
        (Ok(()), Ok(HeaderRepair::NothingToDo | HeaderRepair::RestoredBackup)) => {}
        // Headers are fine; the journal they point to is missing (not a header repair's job).
        (Err(Error::JournalMissing { .. }), Ok(HeaderRepair::NothingToDo | HeaderRepair::RestoredBackup)) => {
        }
        (
            Err(Error::CorruptHeader {
                backup_intact: true, ..
            }),
            Ok(HeaderRepair::RestoredPrimary),
        ) => {}
        (
            Err(Error::CorruptHeader {
                backup_intact: true, ..
            }),
            Err(Error::Truncated { len: l, .. } | Error::SizeMismatch { file: l, .. }),
        ) => assert_eq!(*l, len),
        (Err(a), Err(b)) if std::mem::discriminant(a) == std::mem::discriminant(b) => {}
        (v, r) => panic!("open said {v:?} but repair_headers did {r:?}"),
    }
    if let Err(e) = &repaired {
        let _ = e.to_string();
    }
    let new_len = std::fs::metadata(&path).expect("stat the pool").len();
    assert_eq!(
        new_len, len,
        "repair_headers changed the file length ({repaired:?})"
    );
    let after = inspect_headers(&path).expect("inspect_headers after repair");
    if let Ok(done) = repaired {
        let h = after
            .primary
            .expect("repair succeeded, yet the primary is not intact");
        if done == HeaderRepair::RestoredPrimary {
            assert_eq!(Ok(h.as_bytes()), backup.as_ref().map(|b| b.as_bytes()));
        } else {
            assert_eq!(h.as_bytes(), &img[..HEADER_SIZE]);
        }
        assert_backup_equals(&path, h.pool_size, &h);
    }

    match opts.open(&path) {
        Ok(region) => {
            let h = *region.header();
            assert_well_formed(&h);
            assert_eq!((h.pool_size, region.len()), (len, len));
            assert!(after.primary.is_ok_and(|p| p.as_bytes() == h.as_bytes()));
            drop(region);
            assert_backup_equals(&path, len, &h);
        }
        Err(e) => {
            let _ = e.to_string();
            let fits = after
                .primary
                .is_ok_and(|h| h.pool_size == len && h.layout_name() == image::TEMPLATE_LAYOUT);
            let journal_missing = matches!(e, Error::JournalMissing { .. });
            assert!(
                !fits || journal_missing,
                "intact pool failed to open after repair: {e:?}"
            );
        }
    }
    std::fs::remove_file(&path).expect("remove the pool image");
}

fn version_failure(found: u32, checksum_ok: bool) -> ParseFailure {
    ParseFailure::Version { found, checksum_ok }
}

/// The last 4 KiB of the first `len` bytes of the pool file hold `h`.
fn assert_backup_equals(path: &Path, len: u64, h: &PoolHeader) {
    let mut buf = vec![0u8; HEADER_SIZE];
    let file = File::open(path).expect("open the pool file");
    file.read_exact_at(&mut buf, len - HS)
        .expect("read the backup copy");
    assert_eq!(buf, h.as_bytes(), "backup copy differs from the primary");
}

/// The data area `journal_scan` checks records against: that of a 1 MiB pool (the seeds are
/// journals of such pools).
pub const JOURNAL_DATA: std::ops::Range<u64> = 4096..(1 << 20) - 4096;

/// `journal_scan`: [`pmem_core::internals::journal::scan`] on arbitrary bytes, with the pool UUID of either
/// header slot (so that seeds from real pools get past the UUID check) and with one no slot
/// holds. It must not panic; what it accepts must be a contiguous run of whole, checksummed
/// records of the active epoch with consecutive sequence numbers, inside the file, whose ranges
/// parse and lie inside [`JOURNAL_DATA`]; and [`pmem_core::internals::journal::apply`] of the scan must
/// write only inside the data area and leave the home file as applying the ranges in order does.
pub fn check_journal_scan(bytes: &[u8]) {
    use pmem_core::internals::journal::format::SLOT_OFFSETS;
    let mut uuids = vec![[0xa5u8; 16]];
    for at in SLOT_OFFSETS {
        let at = at as usize + 16;
        if let Some(u) = bytes.get(at..at + 16) {
            let u: [u8; 16] = u.try_into().expect("16 bytes");
            if !uuids.contains(&u) {
                uuids.push(u);
            }
        }
    }
    for uuid in uuids {
        check_scan_with(bytes, &uuid);
    }
}

fn check_scan_with(bytes: &[u8], uuid: &[u8; 16]) {
    use pmem_core::internals::journal::format::{parse_ranges, RecordHeader, RECORDS_OFFSET, RECORD_HEADER};
    use pmem_core::internals::journal::{scan, ReplayError};
    let data = JOURNAL_DATA;
    let s = match scan(bytes, uuid, data.clone()) {
        Ok(s) => s,
        Err(ReplayError::Corrupt { offset, .. }) => {
            assert!(
                offset >= RECORDS_OFFSET,
                "corruption reported in the header area: {offset}"
            );
            assert!(
                offset <= bytes.len() as u64,
                "corruption reported past the file: {offset}"
            );
            return;
        }
        Err(ReplayError::Io { source, .. }) => panic!("scan of bytes in memory did I/O: {source}"),
        Err(ReplayError::Mismatch | ReplayError::BadHeader(_)) => return,
    };
    let Some(header) = s.header else {
        assert!(s.records.is_empty(), "records without a header: {s:?}");
        assert_eq!(s.bytes, 0, "bytes without a header");
        return;
    };
    assert_eq!(&header.pool_uuid, uuid, "accepted a journal of another pool");
    let mut pos = RECORDS_OFFSET;
    let mut seq = header.start_seq;
    let mut total = 0u64;
    for &(off, len) in &s.records {
        assert_eq!(off, pos, "records must follow each other from {RECORDS_OFFSET}");
        let end = off.checked_add(len).expect("record end overflows");
        assert!(
            end <= bytes.len() as u64,
            "record {off}+{len} past the file ({})",
            bytes.len()
        );
        let rec = &bytes[off as usize..end as usize];
        let h = RecordHeader::decode(rec).expect("an accepted record decodes");
        assert_eq!(len, RECORD_HEADER as u64 + h.payload_len, "record length");
        assert!(h.checksum_ok(rec), "accepted a record with a bad checksum");
        assert_eq!(h.epoch, header.epoch, "accepted a record of another epoch");
        assert_eq!(h.seq, seq, "sequence numbers must be consecutive");
        let ranges = parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, data.start, data.end)
            .expect("an accepted record's ranges parse");
        for r in &ranges {
            assert!(
                r.offset >= data.start && r.offset + r.bytes.len() as u64 <= data.end,
                "range outside the data area"
            );
        }
        pos = end;
        seq += 1;
        total += len;
    }
    assert_eq!(s.end, pos, "end of the valid prefix");
    assert_eq!(s.next_seq, seq, "next sequence number");
    assert_eq!(s.bytes, total, "bytes of the valid records");
    check_apply(bytes, &s);
}

/// Applies `s` to an in-memory home file and compares with applying the ranges in order.
fn check_apply(bytes: &[u8], s: &pmem_core::internals::journal::JournalScan) {
    use pmem_core::internals::journal::format::{parse_ranges, RecordHeader, RECORD_HEADER};
    let data = JOURNAL_DATA;
    if s.records.is_empty() {
        return;
    }
    let initial = vec![0x5au8; (data.end + 4096) as usize];
    let home = MemFile::new(initial.clone());
    pmem_core::internals::journal::apply(bytes, s, &home, data.clone()).expect("apply to memory");
    let mut want = initial;
    for &(off, len) in &s.records {
        let rec = &bytes[off as usize..(off + len) as usize];
        let h = RecordHeader::decode(rec).expect("scanned record");
        for r in parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, data.start, data.end).expect("ranges") {
            want[r.offset as usize..r.offset as usize + r.bytes.len()].copy_from_slice(r.bytes);
        }
    }
    let inner = home.0.lock().expect("lock");
    for &(off, len) in &inner.writes {
        assert!(
            off >= data.start && off + len <= data.end,
            "apply wrote {off}+{len}, outside the data area {data:?}"
        );
    }
    assert!(
        inner.bytes == want,
        "apply left the home file differing from the records"
    );
}

#[derive(Debug)]
struct MemInner {
    bytes: Vec<u8>,
    writes: Vec<(u64, u64)>,
}

/// An in-memory [`pmem_core::internals::journal::file::JournalFile`] that records where it was written.
/// (pmem-core's `SimFile` needs its `simulate` feature, which the stable replay test lacks.)
#[derive(Debug)]
struct MemFile(std::sync::Mutex<MemInner>);

impl MemFile {
    fn new(bytes: Vec<u8>) -> Self {
        MemFile(std::sync::Mutex::new(MemInner {
            bytes,
            writes: Vec::new(),
        }))
    }
}

impl pmem_core::internals::journal::file::JournalFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let inner = self.0.lock().expect("lock");
        let start = (offset as usize).min(inner.bytes.len());
        let n = buf.len().min(inner.bytes.len() - start);
        buf[..n].copy_from_slice(&inner.bytes[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut inner = self.0.lock().expect("lock");
        inner.writes.push((offset, buf.len() as u64));
        let end = offset as usize + buf.len();
        if inner.bytes.len() < end {
            inner.bytes.resize(end, 0);
        }
        inner.bytes[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().expect("lock").bytes.len() as u64)
    }
}
