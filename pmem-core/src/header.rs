//! The pool header: first 4 KiB of every pool, with a backup copy in the last 4 KiB.
//!
//! All integers little-endian (the crate refuses to build on big-endian targets).
//!
//! | offset | size | field           | meaning                                                   |
//! |-------:|-----:|-----------------|-----------------------------------------------------------|
//! |      0 |    8 | `magic`         | `b"PTMPOOL\0"`                                            |
//! |      8 |    4 | `version`       | format version, [`FORMAT_VERSION`]                        |
//! |     12 |    4 | `header_size`   | 4096                                                      |
//! |     16 |   16 | `uuid`          | random pool identity, set at creation                     |
//! |     32 |    8 | `pool_size`     | total bytes, multiple of 4096, file length must equal it  |
//! |     40 |    8 | `data_offset`   | start of the data area: 4096                              |
//! |     48 |    8 | `data_size`     | bytes in the data area: `pool_size - 8192`                |
//! |     56 |    8 | `backup_offset` | offset of the backup header: `pool_size - 4096`           |
//! |     64 |    8 | `flags`         | bit 0 [`FLAG_JOURNAL`]: a journal may hold changes; bit 1 [`FLAG_GROWING`]: a grow is under way; others 0 |
//! |     72 |    2 | `pptr_tag`      | non-zero tag carried in the high 16 bits of every `PPtr`  |
//! |     74 |    6 | `_pad`          | zero                                                      |
//! |     80 |    8 | `created_secs`  | creation time, seconds since the Unix epoch (informative) |
//! |     88 |   64 | `layout`        | layout name, UTF-8, NUL-padded, at most 63 bytes          |
//! |    152 |    8 | `shutdown_count`| device's unsafe-shutdown count when recorded ([`ShutdownRecord`]) |
//! |    160 |    8 | `shutdown_device`| digest of the ids of the DIMMs the count was read from (0: none) |
//! |    168 |    4 | `shutdown_flags`| bit 0 [`SHUTDOWN_COUNT_KNOWN`], bit 1 [`SHUTDOWN_DIRTY`]; others 0 |
//! |    172 |    4 | `_pad2`         | zero                                                      |
//! |    176 |    8 | `grow_target`   | with [`FLAG_GROWING`]: the size being grown to; else 0 (first 8 bytes of `reserved`) |
//! |    184 | 3908 | `reserved`      | zero                                                      |
//! |   4092 |    4 | `checksum`      | CRC32C of bytes 0..4092                                   |

use crate::error::HeaderProblem;
use crate::persistent::{bytes_of, read_from_bytes, Persistent};

/// Bytes per header copy.
pub const HEADER_SIZE: usize = 4096;
/// The magic at offset 0.
pub const MAGIC: [u8; 8] = *b"PTMPOOL\0";
/// The on-media format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Longest layout name, in bytes.
pub const MAX_LAYOUT_LEN: usize = 63;
/// Smallest pool: two header copies and at least 8 KiB of data.
pub const MIN_POOL_SIZE: u64 = 4 * HEADER_SIZE as u64;
/// Largest pool: offsets in a `PPtr` have 48 bits.
pub const MAX_POOL_SIZE: u64 = 1 << 48;

/// Header flag: the pool was opened with the journaled engine and not closed cleanly since, so
/// its journal may hold committed changes the file does not. Opening such a pool without its
/// journal fails ([`Error::JournalMissing`](crate::Error::JournalMissing)).
pub const FLAG_JOURNAL: u64 = 1;

/// Shutdown flag: `shutdown_count` and `shutdown_device` hold a recorded count. Zero in pools
/// created before the field existed (and on devices that report no count): nothing recorded.
pub const SHUTDOWN_COUNT_KNOWN: u32 = 1;
/// Shutdown flag: the pool is open (or was, and was not closed cleanly) since the count was
/// recorded. Set at open before anything is written, cleared at a clean close.
pub const SHUTDOWN_DIRTY: u32 = 2;

/// Header flag (primary copy only): a grow to [`PoolHeader::grow_target`] is under way. The
/// next open finishes it (the file has the target length and a new backup header at its end)
/// or undoes it (cuts the file back to `pool_size`), then clears the flag.
pub const FLAG_GROWING: u64 = 2;

/// Offset of the checksum field.
const CHECKSUM_OFFSET: usize = HEADER_SIZE - 4;

/// One copy of the pool header, exactly as stored (see the module table for offsets).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PoolHeader {
    /// `b"PTMPOOL\0"`.
    pub magic: [u8; 8],
    /// Format version.
    pub version: u32,
    /// Size of this header copy (4096).
    pub header_size: u32,
    /// Pool identity.
    pub uuid: [u8; 16],
    /// Total pool bytes.
    pub pool_size: u64,
    /// Start of the data area.
    pub data_offset: u64,
    /// Bytes in the data area.
    pub data_size: u64,
    /// Offset of the backup header copy.
    pub backup_offset: u64,
    /// Feature flags: [`FLAG_JOURNAL`] or 0.
    pub flags: u64,
    /// Tag carried by every `PPtr` into this pool.
    pub pptr_tag: u16,
    _pad: [u8; 6],
    /// Creation time, seconds since the Unix epoch.
    pub created_secs: u64,
    /// Layout name, NUL-padded.
    pub layout: [u8; 64],
    /// Unsafe-shutdown count of the device when recorded (see [`ShutdownRecord`]).
    pub shutdown_count: u64,
    /// Digest of the ids of the DIMMs the count was read from (0: they report none).
    pub shutdown_device: u64,
    /// [`SHUTDOWN_COUNT_KNOWN`], [`SHUTDOWN_DIRTY`] or 0.
    pub shutdown_flags: u32,
    _pad2: [u8; 4],
    reserved: [u8; 3916],
    /// CRC32C of bytes 0..4092.
    pub checksum: u32,
}

const _: () = assert!(core::mem::size_of::<PoolHeader>() == HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(PoolHeader, pool_size) == 32);
const _: () = assert!(core::mem::offset_of!(PoolHeader, pptr_tag) == 72);
const _: () = assert!(core::mem::offset_of!(PoolHeader, layout) == 88);
const _: () = assert!(core::mem::offset_of!(PoolHeader, shutdown_count) == 152);
const _: () = assert!(core::mem::offset_of!(PoolHeader, shutdown_device) == 160);
const _: () = assert!(core::mem::offset_of!(PoolHeader, shutdown_flags) == 168);
const _: () = assert!(core::mem::offset_of!(PoolHeader, checksum) == CHECKSUM_OFFSET);
#[cfg(not(target_endian = "little"))]
compile_error!("ptm pools are little-endian; big-endian targets are not supported");

// SAFETY: `repr(C)` of integers and byte arrays laid out without padding (asserted: the field
// sizes add up to 4096 and the offsets above match), every bit pattern valid, no pointers.
unsafe impl Persistent for PoolHeader {}

impl core::fmt::Debug for PoolHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolHeader")
            .field("version", &self.version)
            .field("uuid", &format_uuid(&self.uuid))
            .field("pool_size", &self.pool_size)
            .field("data_offset", &self.data_offset)
            .field("data_size", &self.data_size)
            .field("backup_offset", &self.backup_offset)
            .field("flags", &self.flags)
            .field("pptr_tag", &self.pptr_tag)
            .field("layout", &self.layout_name())
            .field("shutdown", &self.shutdown_record())
            .field("checksum", &self.checksum)
            .finish()
    }
}

/// Formats a UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl PoolHeader {
    /// With [`FLAG_GROWING`], the size a grow under way goes to (0 otherwise).
    pub fn grow_target(&self) -> u64 {
        if self.flags & FLAG_GROWING == 0 {
            return 0;
        }
        u64::from_le_bytes(self.reserved[..8].try_into().expect("8 bytes"))
    }

    /// Marks a grow to `target` under way (`Some`) or none (`None`), and updates the checksum.
    pub(crate) fn set_grow_target(&mut self, target: Option<u64>) {
        match target {
            Some(t) => {
                self.flags |= FLAG_GROWING;
                self.reserved[..8].copy_from_slice(&t.to_le_bytes());
            }
            None => {
                self.flags &= !FLAG_GROWING;
                self.reserved[..8].fill(0);
            }
        }
        self.checksum = self.compute_checksum();
    }

    /// A fresh header for a pool of `pool_size` bytes (caller validated size and layout).
    pub(crate) fn new(
        pool_size: u64,
        layout: &str,
        uuid: [u8; 16],
        pptr_tag: u16,
        created_secs: u64,
    ) -> Self {
        let mut name = [0u8; 64];
        name[..layout.len()].copy_from_slice(layout.as_bytes());
        let mut h = PoolHeader {
            magic: MAGIC,
            version: FORMAT_VERSION,
            header_size: HEADER_SIZE as u32,
            uuid,
            pool_size,
            data_offset: HEADER_SIZE as u64,
            data_size: pool_size - 2 * HEADER_SIZE as u64,
            backup_offset: pool_size - HEADER_SIZE as u64,
            flags: 0,
            pptr_tag,
            _pad: [0; 6],
            created_secs,
            layout: name,
            shutdown_count: 0,
            shutdown_device: 0,
            shutdown_flags: 0,
            _pad2: [0; 4],
            reserved: [0; 3916],
            checksum: 0,
        };
        h.checksum = h.compute_checksum();
        h
    }

    /// CRC32C of bytes 0..4092.
    pub fn compute_checksum(&self) -> u32 {
        crc32c::crc32c(&bytes_of(self)[..CHECKSUM_OFFSET])
    }

    /// The header's bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        bytes_of(self)
    }

    /// The layout name (up to the first NUL; lossy if not UTF-8).
    pub fn layout_name(&self) -> String {
        let end = self
            .layout
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.layout.len());
        String::from_utf8_lossy(&self.layout[..end]).into_owned()
    }

    /// The unsafe-shutdown state recorded in this header.
    pub fn shutdown_record(&self) -> ShutdownRecord {
        ShutdownRecord {
            count: (self.shutdown_flags & SHUTDOWN_COUNT_KNOWN != 0).then_some(self.shutdown_count),
            device_id: self.shutdown_device,
            dirty: self.shutdown_flags & SHUTDOWN_DIRTY != 0,
        }
    }

    /// Stores `r` in the shutdown fields and recomputes the checksum.
    pub(crate) fn set_shutdown_record(&mut self, r: ShutdownRecord) {
        self.shutdown_count = r.count.unwrap_or(0);
        self.shutdown_device = if r.count.is_some() { r.device_id } else { 0 };
        self.shutdown_flags = if r.count.is_some() {
            SHUTDOWN_COUNT_KNOWN
        } else {
            0
        } | if r.dirty { SHUTDOWN_DIRTY } else { 0 };
        self.checksum = self.compute_checksum();
    }

    /// Parses and validates one header copy from `bytes` (at least 4096 of them).
    ///
    /// Checks, in order: magic, checksum, version, flags, geometry. A checksum failure with a
    /// version newer than this build is reported as that version (the layout may have moved).
    pub fn parse(bytes: &[u8]) -> Result<PoolHeader, ParseFailure> {
        let h: PoolHeader =
            read_from_bytes(bytes).ok_or(ParseFailure::Problem(HeaderProblem::BadGeometry {
                field: "header_size",
            }))?;
        if h.magic != MAGIC {
            return Err(ParseFailure::Problem(HeaderProblem::BadMagic));
        }
        let computed = h.compute_checksum();
        if computed != h.checksum {
            if h.version > FORMAT_VERSION {
                return Err(ParseFailure::Version {
                    found: h.version,
                    checksum_ok: false,
                });
            }
            return Err(ParseFailure::Problem(HeaderProblem::ChecksumMismatch {
                stored: h.checksum,
                computed,
            }));
        }
        if h.version != FORMAT_VERSION {
            return Err(ParseFailure::Version {
                found: h.version,
                checksum_ok: true,
            });
        }
        let unknown = h.flags & !(FLAG_JOURNAL | FLAG_GROWING);
        if unknown != 0 {
            return Err(ParseFailure::Problem(HeaderProblem::UnknownFlags {
                flags: unknown,
            }));
        }
        if h.shutdown_flags & !(SHUTDOWN_COUNT_KNOWN | SHUTDOWN_DIRTY) != 0 {
            return Err(ParseFailure::Problem(HeaderProblem::BadGeometry {
                field: "shutdown_flags",
            }));
        }
        h.check_geometry().map_err(ParseFailure::Problem)?;
        Ok(h)
    }

    fn check_geometry(&self) -> Result<(), HeaderProblem> {
        let hs = HEADER_SIZE as u64;
        let bad = |field| Err(HeaderProblem::BadGeometry { field });
        if self.header_size as usize != HEADER_SIZE {
            return bad("header_size");
        }
        if self.pool_size < MIN_POOL_SIZE
            || self.pool_size > MAX_POOL_SIZE
            || !self.pool_size.is_multiple_of(hs)
        {
            return bad("pool_size");
        }
        if self.data_offset != hs {
            return bad("data_offset");
        }
        if self.backup_offset != self.pool_size - hs {
            return bad("backup_offset");
        }
        if self.data_size != self.pool_size - 2 * hs {
            return bad("data_size");
        }
        if self.pptr_tag == 0 {
            return bad("pptr_tag");
        }
        if !self.layout.contains(&0)
            || std::str::from_utf8(&self.layout[..self.layout.iter().position(|&b| b == 0).unwrap_or(64)])
                .is_err()
        {
            return bad("layout");
        }
        Ok(())
    }
}

/// The unsafe-shutdown state a pool header records (bytes 152..176): the device's unsafe-shutdown
/// count when the pool was last opened on it, and whether the pool has been open since.
///
/// A pool on persistent memory relies on the platform to drain the memory controller (ADR) or
/// the caches (eADR) at power loss. When that fails, the device counts an *unsafe shutdown*.
/// If the count moved while the pool was dirty, stores the pool made durable may be lost, and
/// the pool refuses to open ([`Error::UnsafeShutdown`](crate::Error::UnsafeShutdown)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownRecord {
    /// The recorded count (the sum over the region's DIMMs), or `None` if nothing is recorded.
    pub count: Option<u64>,
    /// Digest of the DIMM ids the count was read from (0: unknown).
    pub device_id: u64,
    /// Set from open to clean close: the pool may have been in use at the last shutdown.
    pub dirty: bool,
}

/// Why a header copy did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// The copy is damaged.
    Problem(HeaderProblem),
    /// The copy claims another format version. With `checksum_ok: false` the version is newer
    /// than this build and the checksum (whose place a newer format may have moved) does not
    /// verify: either a newer pool or a damaged one; the backup copy tells which.
    Version {
        /// The version found.
        found: u32,
        /// Whether the version-1 checksum verified.
        checksum_ok: bool,
    },
}

/// Checks a layout name: at most 63 bytes, no NUL.
pub(crate) fn validate_layout(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_LAYOUT_LEN {
        return Err("longer than 63 bytes");
    }
    if name.as_bytes().contains(&0) {
        return Err("contains a NUL byte");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_header_parses_and_every_flipped_byte_is_rejected() {
        let h = PoolHeader::new(1 << 20, "layout", [7; 16], 0x1234, 99);
        let bytes = h.as_bytes().to_vec();
        let p = PoolHeader::parse(&bytes).unwrap();
        assert_eq!(p.as_bytes(), h.as_bytes());
        assert_eq!(p.layout_name(), "layout");
        let step = if cfg!(miri) { 331 } else { 7 };
        for i in (0..HEADER_SIZE).step_by(step) {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(PoolHeader::parse(&b).is_err(), "byte {i}");
        }
        assert!(PoolHeader::parse(&bytes[..100]).is_err());
    }

    #[test]
    fn the_shutdown_record_round_trips_and_unknown_shutdown_flags_are_refused() {
        let mut h = PoolHeader::new(1 << 20, "", [1; 16], 7, 0);
        assert_eq!(
            h.shutdown_record(),
            ShutdownRecord::default(),
            "a new pool records nothing"
        );
        let r = ShutdownRecord {
            count: Some(u64::MAX),
            device_id: 0xfeed,
            dirty: true,
        };
        h.set_shutdown_record(r);
        let p = PoolHeader::parse(h.as_bytes()).unwrap();
        assert_eq!(p.shutdown_record(), r);
        assert_eq!(&h.as_bytes()[152..160], &u64::MAX.to_le_bytes());
        assert_eq!(&h.as_bytes()[160..168], &0xfeed_u64.to_le_bytes());
        assert_eq!(&h.as_bytes()[168..172], &3u32.to_le_bytes());
        // No count: the device id is not kept either.
        h.set_shutdown_record(ShutdownRecord { count: None, ..r });
        assert_eq!(
            (h.shutdown_count, h.shutdown_device, h.shutdown_flags),
            (0, 0, SHUTDOWN_DIRTY)
        );
        h.shutdown_flags = 4;
        h.checksum = h.compute_checksum();
        assert_eq!(
            PoolHeader::parse(h.as_bytes()).unwrap_err(),
            ParseFailure::Problem(HeaderProblem::BadGeometry {
                field: "shutdown_flags"
            })
        );
    }

    #[test]
    fn the_grow_mark_sets_and_clears_only_its_flag_and_target() {
        for other in [0, FLAG_JOURNAL] {
            let mut h = PoolHeader::new(1 << 20, "g", [2; 16], 9, 0);
            h.flags = other;
            h.set_grow_target(Some(3 << 20));
            assert_eq!(h.flags, other | FLAG_GROWING, "flags with {other}");
            assert_eq!(&h.as_bytes()[176..184], &(3u64 << 20).to_le_bytes());
            let p = PoolHeader::parse(h.as_bytes()).unwrap();
            assert_eq!(p.grow_target(), 3 << 20);
            h.set_grow_target(None);
            assert_eq!(h.flags, other, "the mark cleared, the other flags kept");
            assert_eq!(&h.as_bytes()[176..184], &[0; 8]);
            assert_eq!(PoolHeader::parse(h.as_bytes()).unwrap().grow_target(), 0);
        }
    }

    #[test]
    fn layout_names_are_validated() {
        assert!(validate_layout("ok").is_ok());
        assert!(validate_layout(&"x".repeat(64)).is_err());
        assert!(validate_layout("a\0b").is_err());
        assert_eq!(format_uuid(&[0xab; 16]).len(), 36);
    }
}
