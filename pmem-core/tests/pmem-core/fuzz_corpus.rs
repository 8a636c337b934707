//! Guards header parsing, pool opening and journal scanning against the fuzz corpus on stable:
//! every file in `fuzz/corpus/{header_parse,open_pool,journal_scan}` and `fuzz/regressions/`
//! goes through the fuzz targets' own checks (`fuzz/src/checks.rs`, image decoding in
//! `fuzz/src/image.rs`): no panic, results as the header and journal formats say, opened pools
//! well-formed and consistent, journal records applied only inside the data area.

use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/image.rs"]
mod image;

#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;

/// The committed inputs of `target` (seed corpus and regressions).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    corpus::inputs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target)
}

#[test]
fn header_parse_corpus() {
    for (path, data) in inputs("header_parse") {
        eprintln!("header_parse {}", path.display());
        checks::check_header_parse(&data);
        // The `valid*` seeds start the fuzzer on the success path.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("valid"))
        {
            assert!(pmem_core::PoolHeader::parse(&data).is_ok(), "{}", path.display());
        }
    }
}

#[test]
fn open_pool_corpus() {
    let dir = corpus::Scratch::adopt(image::scratch_dir("replay"));
    let template = image::make_template(&dir);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/header_parse/valid");
    assert_eq!(
        &template[..pmem_core::HEADER_SIZE],
        &std::fs::read(seed).expect("read the valid header seed")[..],
        "fuzz/make_seeds.py and image::make_template disagree on the template header"
    );
    for (path, data) in inputs("open_pool") {
        eprintln!("open_pool {}", path.display());
        checks::check_open_pool(&dir, &template, &data);
    }
    std::fs::remove_dir(&*dir).expect("the checks left files in the scratch directory");
}

#[test]
fn journal_scan_corpus() {
    let mut seeds = 0;
    for (path, data) in inputs("journal_scan") {
        eprintln!("journal_scan {}", path.display());
        checks::check_journal_scan(&data);
        // The seeds reach the paths they are named for.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(kind) = name.filter(|_| path.starts_with(fuzz_dir().join("corpus"))) else {
            continue;
        };
        let slot = |at: usize| -> [u8; 64] { data[at..at + 64].try_into().expect("64 bytes") };
        let header =
            pmem_core::internals::journal::format::pick_header([&slot(0), &slot(2048)]).expect("seed header");
        let got = pmem_core::internals::journal::scan(&data, &header.pool_uuid, checks::JOURNAL_DATA);
        seeds += 1;
        match kind.as_str() {
            "valid" => {
                assert!(got.is_ok_and(|s| s.records.len() >= 3 && !s.torn_tail));
                // A deterministic sweep on stable: every 8-byte cut, and a byte flipped every
                // 7 bytes (header slots and records alike).
                for cut in (0..data.len()).step_by(8) {
                    checks::check_journal_scan(&data[..cut]);
                }
                for at in (0..data.len()).step_by(7) {
                    let mut m = data.clone();
                    m[at] ^= 0x41;
                    checks::check_journal_scan(&m);
                }
            }
            "truncated" => assert!(got.is_ok_and(|s| s.records.len() >= 2 && s.torn_tail)),
            "flipped-second-record" => assert!(matches!(
                got,
                Err(pmem_core::internals::journal::ReplayError::Corrupt { .. })
            )),
            _ => seeds -= 1,
        }
    }
    assert_eq!(seeds, 3, "the valid, truncated and flipped seeds are committed");
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Regenerates the journal seeds in `fuzz/corpus/journal_scan`: the journal of a 1 MiB pool on
/// the journaled engine holding 3 persisted writes (cut after its valid prefix), the same cut
/// inside its last record, and the same with a byte of its second record flipped.
/// `cargo test -p pmem-core --test pmem-core -- --ignored fuzz_corpus::make_journal_seeds`
#[test]
#[ignore = "writes the committed seeds"]
fn make_journal_seeds() {
    use pmem_core::internals::journal::{default_journal_path, format::RECORD_HEADER, scan};
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = dir.path().join("seed.pool");
    let mut region = pmem_core::RegionOptions::new()
        .engine(pmem_core::Engine::Journaled)
        .create(&pool, 1 << 20)
        .expect("create a journaled region");
    let data = region.data_range();
    assert_eq!(
        data,
        checks::JOURNAL_DATA,
        "the check's data area is a 1 MiB pool's"
    );
    for (i, off) in [data.start, data.start + 8192, data.start + 64]
        .into_iter()
        .enumerate()
    {
        let bytes = vec![i as u8 + 1; 128];
        region.write_at(off, &bytes).expect("write");
        region.persist(off, bytes.len() as u64).expect("persist");
    }
    let journal = std::fs::read(default_journal_path(&pool)).expect("read journal");
    let uuid = region.header().uuid;
    drop(region);
    let s = scan(&journal, &uuid, data).expect("scan");
    assert!(s.records.len() >= 3, "{s:?}");
    let valid = &journal[..s.end as usize];
    let (last, last_len) = *s.records.last().expect("records");
    let truncated = &journal[..(last + last_len / 2) as usize];
    let mut flipped = valid.to_vec();
    flipped[(s.records[1].0 as usize) + RECORD_HEADER] ^= 0xff;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/journal_scan");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("valid"), valid).expect("write seed");
    std::fs::write(out.join("truncated"), truncated).expect("write seed");
    std::fs::write(out.join("flipped-second-record"), &flipped).expect("write seed");
}
