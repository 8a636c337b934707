//! Turns an `open_pool` fuzz input into a whole pool image.
//!
//! Shared through `#[path]` by the fuzz crate and the stable replay test
//! `pmem-core/tests/pmem-core/fuzz_corpus.rs`, so a corpus file decodes to the same image in both; it
//! depends on std and pmem-core only.
//!
//! The image starts from a valid 16 KiB pool ([`make_template`]: made by `create`, then its
//! random uuid, pointer tag and creation time fixed so images are reproducible), so the fuzzer
//! starts past the magic and the checksum. Every byte string is a valid input; missing bytes read
//! as 0:
//!
//! | bytes | meaning                                                                     |
//! |-------|-----------------------------------------------------------------------------|
//! | 0     | control byte, see below                                                     |
//! | 1..3  | `param`, u16 LE, used by length modes 6 and 7                               |
//! | 3..   | 5-byte records `(at: u32 LE, mask: u8)`: `image[pos] ^= mask`; a trailing partial record is ignored |
//!
//! Control byte: bits 0-2 pick the image length ([`image_len`]); bit 3 copies the primary header
//! to the backup slot of the new length; bit 4 rewrites `pool_size`, `data_size` and
//! `backup_offset` of both copies to fit the new length (and their checksums); bit 5 fixes the
//! primary's checksum after the records are applied, bit 6 the backup's; bit 7 is unused.
//!
//! A record's position is `at & 0x7fff_ffff`, counted from the backup slot if bit 31 of `at` is
//! set, taken modulo the image length. The backup slot is where pmem-core looks for the backup
//! copy: the last 4 KiB of the file rounded down to 4 KiB, if that leaves room for both copies.

use std::path::{Path, PathBuf};

use pmem_core::{read_from_bytes, PoolHeader, RegionOptions, HEADER_SIZE, MIN_POOL_SIZE};

/// Length of the template pool.
pub const TEMPLATE_SIZE: usize = MIN_POOL_SIZE as usize;
/// Layout name of the template pool (opens check it).
pub const TEMPLATE_LAYOUT: &str = "fuzz";
/// Longest image the decoder makes (length mode 7).
pub const MAX_IMAGE_LEN: usize = 64 * HEADER_SIZE;

const CTL_COPY_BACKUP: u8 = 1 << 3;
const CTL_FIT_GEOMETRY: u8 = 1 << 4;
const CTL_FIX_PRIMARY_CRC: u8 = 1 << 5;
const CTL_FIX_BACKUP_CRC: u8 = 1 << 6;
const RECORD: usize = 5;
const FROM_BACKUP: u32 = 1 << 31;

/// A directory for scratch pool files, private to this process: under `/dev/shm` when it
/// exists (tmpfs: no disk writes), else under the system temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("ptm-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Makes the template image with `create` (in `dir`), with the random fields fixed.
pub fn make_template(dir: &Path) -> Vec<u8> {
    let path = dir.join("template.img");
    let _ = std::fs::remove_file(&path);
    let region = RegionOptions::new()
        .layout(TEMPLATE_LAYOUT)
        .engine(pmem_core::Engine::Msync)
        .create(&path, TEMPLATE_SIZE as u64)
        .expect("create the template pool");
    drop(region);
    let mut img = std::fs::read(&path).expect("read the template pool");
    std::fs::remove_file(&path).expect("remove the template pool");
    assert_eq!(img.len(), TEMPLATE_SIZE);
    let mut h: PoolHeader = read_from_bytes(&img).expect("template header");
    h.uuid = *b"ptm-fuzz-uuid-01";
    h.pptr_tag = 0x7466;
    h.created_secs = 1_700_000_000;
    h.checksum = h.compute_checksum();
    img[..HEADER_SIZE].copy_from_slice(h.as_bytes());
    img[TEMPLATE_SIZE - HEADER_SIZE..].copy_from_slice(h.as_bytes());
    img
}

/// Where pmem-core looks for the backup copy in a file of `len` bytes, if there is room.
pub fn backup_slot(len: usize) -> Option<usize> {
    let end = len & !(HEADER_SIZE - 1);
    (end >= 2 * HEADER_SIZE).then(|| end - HEADER_SIZE)
}

/// The image length selected by the control byte `ctl` and `param` for a template of `t` bytes.
pub fn image_len(ctl: u8, param: u16, t: usize) -> usize {
    match ctl & 7 {
        0 => t,
        1 => t - HEADER_SIZE,
        2 => t + HEADER_SIZE,
        3 => 2 * t,
        4 => t - 1,
        5 => t + 1,
        6 => usize::from(param),
        _ => (usize::from(param) % 64 + 1) * HEADER_SIZE,
    }
}

/// Decodes `input` into a pool image, starting from `template` (see the module docs).
pub fn decode(template: &[u8], input: &[u8]) -> Vec<u8> {
    let byte = |i: usize| input.get(i).copied().unwrap_or(0);
    let ctl = byte(0);
    let param = u16::from_le_bytes([byte(1), byte(2)]);
    let len = image_len(ctl, param, template.len());
    let mut img = template[..len.min(template.len())].to_vec();
    img.resize(len, 0);
    let slot = backup_slot(len);
    if let (true, Some(b)) = (ctl & CTL_COPY_BACKUP != 0, slot) {
        img.copy_within(..HEADER_SIZE, b);
    }
    if ctl & CTL_FIT_GEOMETRY != 0 {
        let pool = (len & !(HEADER_SIZE - 1)) as u64;
        let hs = HEADER_SIZE as u64;
        for base in [Some(0), slot].into_iter().flatten() {
            if base + HEADER_SIZE <= len {
                put_u64(&mut img, base + 32, pool);
                put_u64(&mut img, base + 48, pool.wrapping_sub(2 * hs));
                put_u64(&mut img, base + 56, pool.wrapping_sub(hs));
                fix_checksum(&mut img, base);
            }
        }
    }
    if len > 0 {
        for rec in input.get(3..).unwrap_or(&[]).chunks_exact(RECORD) {
            let at = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let origin = if at & FROM_BACKUP != 0 {
                slot.unwrap_or(0)
            } else {
                0
            };
            let pos = (origin + (at & !FROM_BACKUP) as usize) % len;
            img[pos] ^= rec[4];
        }
    }
    if ctl & CTL_FIX_PRIMARY_CRC != 0 {
        fix_checksum(&mut img, 0);
    }
    if let (true, Some(b)) = (ctl & CTL_FIX_BACKUP_CRC != 0, slot) {
        fix_checksum(&mut img, b);
    }
    img
}

fn put_u64(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the checksum of the header copy at `base`, if the image holds all of it.
fn fix_checksum(img: &mut [u8], base: usize) {
    if let Some(mut h) = img.get(base..).and_then(read_from_bytes::<PoolHeader>) {
        h.checksum = h.compute_checksum();
        img[base..base + HEADER_SIZE].copy_from_slice(h.as_bytes());
    }
}
