//! Guards the bug class "copy primitives": every flush and copy primitive makes every byte it
//! wrote durable at the next drain, for every alignment of head and tail, checked byte for byte
//! on the simulated domain (which models the cache-flush domain: whole lines at a flush,
//! streamed bytes exactly, nothing before the drain). A non-temporal copy whose unaligned head or
//! tail is not flushed, or a flush that misses a partial last line, fails here.
//!
//! Needs the `simulate` feature (on in `cargo test --workspace`; alone:
//! `cargo test -p pmem-core --features simulate --test durability`).
#![cfg(feature = "simulate")]

mod common;

use pmem_core::flush::{copy_nontemporal, detected_flush_instruction, line_span};
use pmem_core::sim::Simulation;
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

#[test]
fn flush_then_drain_makes_every_byte_durable_for_every_alignment() {
    let dir = common::shm_dir();
    let (mut region, sim) = region(&dir, "flush.pool");
    let base = region.data_range().start as usize;
    let mut round = 0;
    for head in HEADS {
        for len in LENS {
            round += 1;
            let off = base + 4096 + head;
            let data = pattern(round, len);
            let before = sim.durable_image();
            region.write_at(off as u64, &data).unwrap();
            region.flush(off as u64, len as u64).unwrap();
            assert_eq!(
                sim.durable_image(),
                before,
                "flush({head}, {len}): durable before the drain"
            );
            region.drain().unwrap();
            assert_durable(
                &sim,
                &region,
                &before,
                off,
                &data,
                &format!("flush({head}, {len})"),
            );
        }
    }
}

#[test]
fn persist_makes_every_byte_durable_for_every_alignment() {
    let dir = common::shm_dir();
    let (mut region, sim) = region(&dir, "persist.pool");
    let base = region.data_range().start as usize;
    let mut round = 0;
    for head in HEADS {
        for len in LENS {
            round += 1;
            let off = base + 8192 + head;
            let data = pattern(round, len);
            let before = sim.durable_image();
            region.write_at(off as u64, &data).unwrap();
            region.persist(off as u64, len as u64).unwrap();
            assert_durable(
                &sim,
                &region,
                &before,
                off,
                &data,
                &format!("persist({head}, {len})"),
            );
        }
    }
}

#[test]
fn nontemporal_copy_then_drain_makes_every_byte_durable_for_every_alignment() {
    let dir = common::shm_dir();
    let (mut region, sim) = region(&dir, "nt.pool");
    let base = region.data_range().start as usize;
    let mut round = 0;
    for head in HEADS {
        for len in LENS {
            round += 1;
            let off = base + 4096 + head;
            let data = pattern(round, len);
            let before = sim.durable_image();
            region.write_nontemporal_at(off as u64, &data).unwrap();
            assert_eq!(
                sim.durable_image(),
                before,
                "copy({head}, {len}): durable before the drain"
            );
            region.drain().unwrap();
            let durable = sim.durable_image();
            assert_eq!(
                &durable[off..off + len],
                &data[..],
                "copy({head}, {len}): not durable"
            );
            // Nothing beyond the copy's lines became durable.
            let (start, end) = line_span(off, len);
            let around = start - 64..start;
            assert_eq!(&durable[around.clone()], &before[around], "copy({head}, {len})");
            assert_eq!(
                &durable[end..end + 64],
                &before[end..end + 64],
                "copy({head}, {len})"
            );
        }
    }
}

#[test]
fn nontemporal_copy_by_pointer_makes_every_byte_durable_for_every_alignment() {
    let dir = common::shm_dir();
    let (region, sim) = region(&dir, "ntptr.pool");
    let base = region.data_range().start as usize;
    let mut round = 0;
    for head in HEADS {
        for len in LENS {
            round += 1;
            let off = base + 12288 + head;
            let data = pattern(round, len);
            // SAFETY: `off` is below 4096 + 12288 + 64, inside the 64 KiB mapping.
            let dst = unsafe { region.base().as_ptr().add(off) };
            // SAFETY: `[off, off + len)` lies inside the region's data area (64 KiB; offsets below
            // 4096 + 12288 + 264); `data` is a separate allocation; this thread is the only one.
            unsafe { region.copy_nontemporal_ptr(dst, data.as_ptr(), len) };
            region.drain().unwrap();
            assert_eq!(
                &sim.durable_image()[off..off + len],
                &data[..],
                "copy_ptr({head}, {len})"
            );
        }
    }
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
                pmem_core::flush::drain_fence();
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
