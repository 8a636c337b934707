//! Guards the bug class "copy primitives": every flush and copy primitive makes every byte it
//! wrote durable at the next drain, for every alignment of head and tail, checked byte for byte
//! on the simulated domain (which models the cache-flush domain: whole lines at a flush,
//! streamed bytes exactly, nothing before the drain). A non-temporal copy whose unaligned head or
//! tail is not flushed, or a flush that misses a partial last line, fails here.
//!
//! Needs the `simulate` feature (on in `cargo test --workspace`; alone:
//! `cargo test -p pmem-core --features simulate --test pmem-core durability::`).
#![cfg(feature = "simulate")]

use crate::common;

use pmem_core::internals::flush::{copy_nontemporal, detected_flush_instruction, line_span};
use pmem_core::Simulation;
use pmem_core::{Region, RegionOptions};

/// Offsets of the destination inside a line: every head alignment.
const HEADS: std::ops::Range<usize> = 0..64;
/// Lengths: nothing, part of a line, every tail alignment over several lines.
const LENS: std::ops::RangeInclusive<usize> = 0..=200;

/// A simulated region and its simulation.
fn region(dir: &tempfile::TempDir, name: &str) -> (Region, Simulation) {
    let sim = Simulation::new();
    let region = RegionOptions::new()
        .simulate(sim.clone())
        .create(common::pool_path(dir, name), 1 << 16)
        .unwrap();
    (region, sim)
}

/// A byte pattern that differs from what was there (so an undurable byte shows).
fn pattern(round: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (round * 31 + i * 7 + 1) as u8 | 1).collect()
}

/// Checks that the durable image holds `data` at `[off, off + len)`, equals the working image on
/// the lines of that range, and equals `before` on the line either side of them.
fn assert_durable(sim: &Simulation, region: &Region, before: &[u8], off: usize, data: &[u8], what: &str) {
    let durable = sim.durable_image();
    assert_eq!(&durable[off..off + data.len()], data, "{what}");
    let (start, end) = line_span(off, data.len());
    let mut working = vec![0u8; end - start];
    region.read_at(start as u64, &mut working).unwrap();
    assert_eq!(
        &durable[start..end],
        &working[..],
        "{what}: a flushed line is not durable"
    );
    let around = start - 64..start;
    assert_eq!(
        &durable[around.clone()],
        &before[around],
        "{what}: the line before changed"
    );
    assert_eq!(
        &durable[end..end + 64],
        &before[end..end + 64],
        "{what}: the line after changed"
    );
}

/// For every head alignment and length: `write` stores `data` at `off` and starts making it
/// durable (`drains`: nothing may be durable before the drain that follows) or makes it durable
/// itself; then every byte of it must be durable, its lines whole, and nothing beyond them.
fn check_every_alignment(name: &str, drains: bool, write: impl Fn(&mut Region, usize, &[u8])) {
    let dir = common::shm_dir();
    let (mut region, sim) = region(&dir, "primitive.pool");
    let base = region.data_range().start as usize;
    let mut round = 0;
    for head in HEADS {
        for len in LENS {
            round += 1;
            let off = base + 4096 + head;
            let data = pattern(round, len);
            let what = format!("{name}({head}, {len})");
            let before = sim.durable_image();
            write(&mut region, off, &data);
            if drains {
                assert_eq!(sim.durable_image(), before, "{what}: durable before the drain");
                region.drain().unwrap();
            }
            assert_durable(&sim, &region, &before, off, &data, &what);
        }
    }
}

#[test]
fn flush_then_drain_makes_every_byte_durable_for_every_alignment() {
    check_every_alignment("flush", true, |region, off, data| {
        region.write_at(off as u64, data).unwrap();
        region.flush(off as u64, data.len() as u64).unwrap();
    });
}

#[test]
fn persist_makes_every_byte_durable_for_every_alignment() {
    check_every_alignment("persist", false, |region, off, data| {
        region.write_at(off as u64, data).unwrap();
        region.persist(off as u64, data.len() as u64).unwrap();
    });
}

#[test]
fn nontemporal_copy_then_drain_makes_every_byte_durable_for_every_alignment() {
    check_every_alignment("write_nontemporal_at", true, |region, off, data| {
        region.write_nontemporal_at(off as u64, data).unwrap();
    });
}

#[test]
fn nontemporal_copy_by_pointer_makes_every_byte_durable_for_every_alignment() {
    check_every_alignment("copy_nontemporal_ptr", true, |region, off, data| {
        // SAFETY: `off` is below 4096 + 4096 + 64 and `off + len` below that + 200, inside the
        // 64 KiB mapping; `data` is a separate allocation; this thread is the only one.
        unsafe {
            let dst = region.base().as_ptr().add(off);
            region.copy_nontemporal_ptr(dst, data.as_ptr(), data.len());
        }
    });
}

/// The CPU path (streaming stores, the detected flush instruction) writes exactly the source
/// bytes, for every alignment, and touches nothing around them.
#[test]
fn nontemporal_copy_on_the_cpu_writes_exactly_its_bytes_for_every_alignment() {
    let src: Vec<u8> = (0..256u32).map(|i| (i * 13 + 5) as u8).collect();
    for insn in [None, detected_flush_instruction()] {
        for head in HEADS {
            for len in LENS {
                let mut buf = vec![0xAAu8; 64 + 256 + 64];
                let start = 64 - (buf.as_ptr() as usize % 64) + head;
                // SAFETY: `start + len <= 64 + 63 + 200 < buf.len()`, so the destination and the
                // lines around it lie in `buf`; `src` is a separate allocation; the instruction
                // (if any) was detected on this CPU.
                unsafe { copy_nontemporal(buf.as_mut_ptr().add(start), src.as_ptr(), len, insn) };
                pmem_core::internals::flush::drain_fence();
                assert_eq!(&buf[start..start + len], &src[..len], "({insn:?}, {head}, {len})");
                assert!(
                    buf[..start].iter().all(|&b| b == 0xAA),
                    "({insn:?}, {head}, {len})"
                );
                assert!(
                    buf[start + len..].iter().all(|&b| b == 0xAA),
                    "({insn:?}, {head}, {len})"
                );
            }
        }
    }
}

/// The CPU path writes its cached head and tail back: exactly the lines they span are flushed
/// (counted in [`pmem_core::PersistStats::lines_flushed`]), once each, and the 16-aligned body
/// goes through streaming stores (`nt_bytes`), for every alignment and length. The bytes a copy
/// writes are checked above; this checks the write-backs that make the head and tail durable,
/// which no read of the buffer can see. Without a flush instruction nothing is flushed.
#[test]
fn nontemporal_copy_on_the_cpu_flushes_exactly_its_head_and_tail_lines() {
    /// Lines spanned by `n` bytes at address `a` (0 when empty).
    fn lines(a: usize, n: usize) -> u64 {
        if n == 0 {
            0
        } else {
            ((a + n - 1) / 64 - a / 64 + 1) as u64
        }
    }
    let src = vec![0x5Au8; 256];
    for insn in [None, detected_flush_instruction()] {
        for head in HEADS {
            for len in LENS {
                let mut buf = vec![0u8; 64 + 256 + 64];
                let start = 64 - (buf.as_ptr() as usize % 64) + head;
                let dst = buf.as_ptr() as usize + start;
                // Independently of the library's split: cached bytes up to the first 16-byte
                // boundary, whole 16-byte blocks streamed, cached bytes after them.
                let cached_head = ((16 - dst % 16) % 16).min(len);
                let body = (len - cached_head) / 16 * 16;
                let tail = len - cached_head - body;
                let want_lines = if insn.is_some() {
                    lines(dst, cached_head) + lines(dst + cached_head + body, tail)
                } else {
                    0
                };
                let before = pmem_core::thread_stats();
                // SAFETY: as in the test above: the destination lies in `buf`, `src` is a separate
                // allocation, the instruction (if any) was detected on this CPU.
                unsafe { copy_nontemporal(buf.as_mut_ptr().add(start), src.as_ptr(), len, insn) };
                let d = pmem_core::thread_stats().since(&before);
                assert_eq!(
                    (d.lines_flushed, d.nt_bytes),
                    (want_lines, body as u64),
                    "(lines flushed, bytes streamed) of a copy of {len} bytes at line offset {head} with {insn:?}"
                );
            }
        }
    }
}

/// Redundant persistence is counted exactly: a flush of a line no store changed since its last
/// flush (or since it became durable), and a drain with nothing flushed or streamed since the
/// previous one.
#[test]
fn redundant_flushes_and_empty_drains_are_counted() {
    let dir = common::shm_dir();
    let (mut region, sim) = region(&dir, "redundant.pool");
    let off = region.data_range().start + 4096;
    let at_create = sim.redundancy();
    region.write_at(off, &[1; 8]).unwrap();
    region.flush(off, 8).unwrap(); // needed
    region.flush(off + 8, 8).unwrap(); // same line, no store since: redundant
    region.drain().unwrap();
    region.drain().unwrap(); // nothing pending
    region.flush(off, 64).unwrap(); // durable already: redundant
    region.write_at(off + 64, &[2; 8]).unwrap();
    region.flush(off, 128).unwrap(); // first line redundant, second needed
    region.drain().unwrap();
    region.write_at(off, &[1; 8]).unwrap(); // the same bytes again: nothing to make durable
    region.flush(off, 8).unwrap(); // redundant (judged by contents)
    region.drain().unwrap();
    let r = sim.redundancy();
    let c = at_create;
    assert_eq!(
        (
            r.line_flushes - c.line_flushes,
            r.redundant_line_flushes - c.redundant_line_flushes
        ),
        (6, 4),
        "{r} (at create: {c})"
    );
    assert_eq!(
        (r.drains - c.drains, r.empty_drains - c.empty_drains),
        (4, 1),
        "{r} (at create: {c})"
    );
    assert!(!r.is_none());
    println!("region create: {c}");
    // A non-temporal copy's streamed body needs no flush; its head and tail flushes are needed.
    let before = sim.redundancy();
    region.write_nontemporal_at(off + 1000, &[7; 100]).unwrap();
    region.drain().unwrap();
    let d = sim.redundancy();
    assert_eq!(d.redundant_line_flushes, before.redundant_line_flushes, "{d}");
    assert_eq!(d.empty_drains, before.empty_drains, "{d}");
}
