//! Guards header parsing and pool opening against the fuzz corpus on stable: every file in
//! `fuzz/corpus/{header_parse,open_pool}` and `fuzz/regressions/` goes through the fuzz
//! targets' own checks (`fuzz/src/checks.rs`, image decoding in `fuzz/src/image.rs`): no
//! panic, results as the header format says, opened pools well-formed and consistent.

use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;
#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/image.rs"]
mod image;

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/corpus.rs"]
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
    let dir = image::scratch_dir("replay");
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
    std::fs::remove_dir(&dir).expect("remove the scratch directory");
}
