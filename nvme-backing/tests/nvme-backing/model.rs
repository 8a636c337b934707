//! Property test: random writes, persists and evictions agree with a plain byte-array model, in
//! both fault modes.

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};
use proptest::prelude::*;

const PAGES: usize = 8;
const LEN: usize = PAGES * PAGE_SIZE;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: usize, len: usize, byte: u8 },
    Persist { offset: usize, len: usize },
    Evict { target: usize },
    Check { offset: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..LEN, 1..3000usize, any::<u8>()).prop_map(|(offset, len, byte)| Op::Write {
            offset,
            len: len.min(LEN - offset),
            byte
        }),
        2 => (0..LEN, 0..LEN).prop_map(|(offset, len)| Op::Persist { offset, len: len.min(LEN - offset) }),
        1 => (0..4usize).prop_map(|target| Op::Evict { target }),
        1 => (0..LEN).prop_map(|offset| Op::Check { offset }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn region_matches_model(
        mode in prop_oneof![Just(FaultMode::Signal), Just(FaultMode::Userfaultfd)],
        limit in 2usize..5,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backing");
        let mut model = vec![0u8; LEN];
        let mut r = PagedRegion::create_with_mode(&path, LEN, limit, mode).unwrap();
        for op in ops {
            match op {
                Op::Write { offset, len, byte } => {
                    let data = vec![byte; len];
                    r.write_at(offset, &data).unwrap();
                    model[offset..offset + len].copy_from_slice(&data);
                }
                Op::Persist { offset, len } => {
                    r.persist(offset, len).unwrap();
                    // Persisted bytes are on the file now (eviction may have written others).
                    let file = std::fs::read(&path).unwrap();
                    prop_assert_eq!(&file[offset..offset + len], &model[offset..offset + len]);
                }
                Op::Evict { target } => {
                    r.evict_to(target).unwrap();
                    prop_assert!(r.resident_pages() <= target);
                }
                Op::Check { offset } => {
                    let mut b = [0u8; 1];
                    r.read_at(offset, &mut b).unwrap();
                    prop_assert_eq!(b[0], model[offset]);
                }
            }
            prop_assert!(r.resident_pages() <= limit);
        }
        let mut all = vec![0u8; LEN];
        r.read_at(0, &mut all).unwrap();
        prop_assert!(all == model, "region differs from the model");
        r.flush_all().unwrap();
        let file = std::fs::read(&path).unwrap();
        prop_assert!(file == model, "file differs from the model after flush_all");
        let s = r.stats();
        prop_assert_eq!(s.writeback_bytes, s.blocks_written * 1024);
    }
}
