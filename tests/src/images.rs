//! Which crash images a crash point gets: the plan (how many, which subset of the pending units
//! each one persists) and the image's identity for reports and reproduction.

use std::fmt;

use ptm::pmem_core::internals::sim::{
    apply_units, mask_subset, mix, random_subset, subset_strategy, FaultModel, SubsetStrategy,
};
use xxhash_rust::xxh3::xxh3_128;

/// How one crash image was chosen from the units pending at its crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageKind {
    /// No pending unit reached the media: the durable image as it was.
    Nothing,
    /// Every pending unit reached the media: the working image.
    All,
    /// One subset of an exhaustive enumeration (few units pending): bit `i` of `mask` set means
    /// the `i`-th pending unit (ascending offset) persisted.
    Exhaustive {
        /// The subset, one bit per pending unit.
        mask: u64,
    },
    /// A seeded random subset.
    Random {
        /// The seed the subset was drawn from (derived from the explorer seed and the image id).
        seed: u64,
        /// How the subset was drawn.
        strategy: SubsetStrategy,
    },
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageKind::Nothing => write!(f, "nothing pending persisted"),
            ImageKind::All => write!(f, "everything pending persisted"),
            ImageKind::Exhaustive { mask } => write!(f, "exhaustive subset {mask:#b}"),
            ImageKind::Random { seed, strategy } => {
                write!(f, "random subset ({}, seed {seed:#018x})", strategy.name())
            }
        }
    }
}

/// The images of one crash point with `n` pending units.
///
/// Numbering: with at most `exhaustive_units` units (and at most 20), image `i` is the subset
/// whose bit mask is `i` (0 = nothing, `2^n - 1` = all). Otherwise image 0 is nothing, image 1
/// is all, and images `2..2 + random` are seeded random subsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    n: usize,
    exhaustive: bool,
    random: u32,
    /// Seed of this crash point (explorer seed mixed with the crash point's id).
    point_seed: u64,
}

/// Largest number of units enumerated exhaustively, whatever the settings (2^20 images).
const MAX_EXHAUSTIVE: u32 = 20;

impl Plan {
    pub(crate) fn new(n: usize, exhaustive_units: u32, random: u32, point_seed: u64) -> Plan {
        Plan {
            n,
            exhaustive: n <= exhaustive_units.min(MAX_EXHAUSTIVE) as usize,
            random,
            point_seed,
        }
    }

    /// Number of images in the plan.
    pub(crate) fn len(&self) -> u32 {
        if self.exhaustive {
            1 << self.n
        } else {
            2 + self.random
        }
    }

    /// Image `i`: its kind and the indices (into the ascending pending units) it persists. Any
    /// `i` is accepted (beyond `len` a random plan draws further subsets; an exhaustive one
    /// wraps), so a reproduction never depends on the number of images per point.
    pub(crate) fn image(&self, i: u32) -> (ImageKind, Vec<usize>) {
        if self.exhaustive {
            let all = (1u64 << self.n) - 1;
            let mask = u64::from(i) & all;
            let kind = match mask {
                0 => ImageKind::Nothing,
                m if m == all => ImageKind::All,
                m => ImageKind::Exhaustive { mask: m },
            };
            return (kind, mask_subset(self.n, mask));
        }
        match i {
            0 => (ImageKind::Nothing, Vec::new()),
            1 => (ImageKind::All, (0..self.n).collect()),
            _ => {
                let seed = mix(self.point_seed, u64::from(i));
                let kind = ImageKind::Random {
                    seed,
                    strategy: subset_strategy(seed),
                };
                (kind, random_subset(self.n, seed))
            }
        }
    }
}

/// Identifies a crash image within one exploration: the crash point (drain number) of the
/// workload and the image there, and for a crash during recovery (double crash) the recovery's
/// crash point and image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId {
    /// The workload's crash point: the index of the drain (0 = the first drain after the pool
    /// was opened for the workload).
    pub point: u64,
    /// The image at that crash point.
    pub image: u32,
    /// For a crash inside the recovery of that image: the recovery's drain and the image there.
    pub recovery: Option<(u64, u32)>,
    /// For a crash in the follow-up workload run on that image once recovered
    /// ([`Explorer::run_then`](crate::Explorer::run_then)): the follow-up's drain and the
    /// image there.
    pub followup: Option<(u64, u32)>,
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crash point {}, image {}", self.point, self.image)?;
        if let Some((p, i)) = self.recovery {
            write!(f, "; recovery crash point {p}, image {i}")?;
        }
        if let Some((p, i)) = self.followup {
            write!(f, "; after recovery, follow-up crash point {p}, image {i}")?;
        }
        Ok(())
    }
}

/// The seed of workload crash point `point`.
pub(crate) fn point_seed(seed: u64, point: u64) -> u64 {
    mix(seed, point)
}

/// The seed of recovery crash point `rpoint` inside the recovery of image `image` of workload
/// crash point `point`.
pub(crate) fn recovery_seed(seed: u64, point: u64, image: u32, rpoint: u64) -> u64 {
    mix(
        mix(mix(seed ^ 0x2ec0_5e27_d0b1_e000, point), u64::from(image)),
        rpoint,
    )
}

/// The seed of follow-up crash point `fpoint` in the follow-up run on the recovered image
/// `image` of workload crash point `point`.
pub(crate) fn followup_seed(seed: u64, point: u64, image: u32, fpoint: u64) -> u64 {
    mix(
        mix(mix(seed ^ 0xf011_0a09_5eed_0000, point), u64::from(image)),
        fpoint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustive_plans_enumerate_every_subset_once() {
        let p = Plan::new(3, 10, 8, 1);
        assert_eq!(p.len(), 8);
        let subsets: std::collections::HashSet<_> = (0..8).map(|i| p.image(i).1).collect();
        assert_eq!(subsets.len(), 8);
        assert_eq!(p.image(0).0, ImageKind::Nothing);
        assert_eq!(p.image(7), (ImageKind::All, vec![0, 1, 2]));
        assert_eq!(p.image(5).1, [0, 2]);
    }

    #[test]
    fn random_plans_start_with_nothing_and_all_and_are_deterministic() {
        let p = Plan::new(40, 10, 8, 99);
        assert_eq!(p.len(), 10);
        assert_eq!(p.image(0), (ImageKind::Nothing, vec![]));
        assert_eq!(p.image(1).1.len(), 40);
        for i in 2..30 {
            let (k, s) = p.image(i);
            assert!(matches!(k, ImageKind::Random { .. }));
            assert_eq!(
                (k, s),
                Plan::new(40, 10, 3, 99).image(i),
                "independent of the image count"
            );
        }
        assert_ne!(p.image(2), Plan::new(40, 10, 8, 100).image(2));
    }

    #[test]
    fn no_pending_units_give_one_image() {
        let p = Plan::new(0, 10, 8, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p.image(0), (ImageKind::Nothing, vec![]));
    }

    #[test]
    fn image_keys_depend_on_content_only() {
        let durable = vec![0u8; 3 * 4096 + 100];
        let mut working = durable.clone();
        working[8] = 1;
        working[5000] = 2;
        working[3 * 4096 + 96] = 3;
        let units = ptm::pmem_core::internals::sim::diff_units(&durable, &working, FaultModel::Words);
        let mut b = ImageBuffer::default();
        b.load(&durable);
        let nothing = b.key(&[]);
        b.apply(&working, &units, FaultModel::Words);
        let all = b.key(&units);
        assert_eq!(b.buf, working);
        b.apply(&durable, &units, FaultModel::Words);
        assert_eq!(b.buf, durable);
        b.apply(&working, &units[1..2], FaultModel::Words);
        let one = b.key(&units[1..2]);
        assert_eq!(b.key(&units), one, "untouched blocks keep their durable hash");
        assert!(nothing != all && all != one && one != nothing);
        // The same content loaded as another crash point's durable image has the same key,
        // whether loaded afresh or over a previous crash point's image.
        let mut c = ImageBuffer::default();
        c.load(&working);
        assert_eq!(c.key(&[]), all);
        b.apply(&durable, &units[1..2], FaultModel::Words);
        b.load(&working);
        assert_eq!(b.buf, working);
        assert_eq!(b.key(&[]), all);
    }

    #[test]
    fn point_seeds_differ_between_levels_and_points() {
        let a = point_seed(1, 3);
        assert_ne!(a, point_seed(1, 4));
        assert_ne!(a, point_seed(2, 3));
        assert_ne!(a, recovery_seed(1, 3, 0, 0));
        assert_ne!(recovery_seed(1, 3, 0, 0), recovery_seed(1, 3, 1, 0));
        assert_ne!(recovery_seed(1, 3, 0, 0), recovery_seed(1, 3, 0, 1));
    }
}

/// Bytes per block of the content hash.
const HASH_BLOCK: usize = 4096;

/// The image being built at a crash point, with a content hash that costs O(touched blocks)
/// per image: the key of an image is the hash of its per-block hashes, and an image differs
/// from the durable one only in the blocks holding its persisted units.
#[derive(Debug, Default)]
pub(crate) struct ImageBuffer {
    /// The durable image of the crash point; images are built in place and restored.
    pub(crate) buf: Vec<u8>,
    durable_hashes: Vec<[u8; 16]>,
    image_hashes: Vec<[u8; 16]>,
    touched: Vec<usize>,
}

impl ImageBuffer {
    /// Starts a crash point: loads its durable image. Consecutive crash points have similar
    /// durable images, so only the blocks that differ from the previous one are copied and
    /// hashed again.
    pub(crate) fn load(&mut self, durable: &[u8]) {
        if self.buf.len() != durable.len() {
            self.buf.clear();
            self.buf.extend_from_slice(durable);
            self.durable_hashes.clear();
            self.durable_hashes
                .extend(durable.chunks(HASH_BLOCK).map(|b| xxh3_128(b).to_le_bytes()));
            return;
        }
        let blocks = self.buf.chunks_mut(HASH_BLOCK).zip(durable.chunks(HASH_BLOCK));
        for ((mine, new), hash) in blocks.zip(self.durable_hashes.iter_mut()) {
            if mine != new {
                mine.copy_from_slice(new);
                *hash = xxh3_128(new).to_le_bytes();
            }
        }
    }

    /// Applies `units` of `working` (or of `durable`, to restore) to the buffer.
    pub(crate) fn apply(&mut self, source: &[u8], units: &[u64], model: FaultModel) {
        apply_units(&mut self.buf, source, units, model);
    }

    /// The content key of the buffer, which differs from the loaded durable image at most in the
    /// blocks of `units`.
    pub(crate) fn key(&mut self, units: &[u64]) -> u128 {
        self.touched.clear();
        self.touched
            .extend(units.iter().map(|&o| o as usize / HASH_BLOCK));
        self.touched.dedup(); // `units` ascend
        self.image_hashes.clear();
        self.image_hashes.extend_from_slice(&self.durable_hashes);
        for &b in &self.touched {
            let end = ((b + 1) * HASH_BLOCK).min(self.buf.len());
            self.image_hashes[b] = xxh3_128(&self.buf[b * HASH_BLOCK..end]).to_le_bytes();
        }
        xxh3_128(self.image_hashes.as_flattened())
    }
}
