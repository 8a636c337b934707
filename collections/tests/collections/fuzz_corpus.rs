//! Guards the persistent collections against damaged pools on stable: every file in
//! `fuzz/corpus/collections_image` and `fuzz/regressions/collections_image` goes through the
//! fuzz target's own check (`fuzz/src/collections.rs`): collection handles and heap blocks
//! mutated, then a script of operations and reopens — no panic, no hang, only clean errors, and
//! on damage the collections can detect, nothing committed outside them lost.

use std::path::Path;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/collections.rs"]
mod collections;

#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;

fn replay() {
    let dir = corpus::scratch("coll");
    let template = collections::make_template(&dir);
    // The unmutated image with every operation once, each in its own transaction.
    let mut all = vec![0u8];
    for op in 0..collections::COLL_OPS {
        all.extend([op, 3 + op, collections::COLL_OPS, 0]);
    }
    collections::check_collections_image(&dir, &template, &all);
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (path, data) in corpus::inputs(&fuzz, "collections_image") {
        eprintln!("collections_image {}", path.display());
        collections::check_collections_image(&dir, &template, &data);
    }
    std::fs::remove_dir(&*dir).expect("the checks left files in the scratch directory");
}

#[test]
fn collections_image_corpus() {
    replay();
}

#[test]
fn unmutated_template_is_strict() {
    let dir = corpus::scratch("coll-template");
    let t = collections::make_template(&dir);
    let (img, strict, rest) = collections::decode_image(&t, &[]);
    assert!(strict && rest.is_empty() && img == t.image);
    // A record on a handle's pointer word makes the image non-strict; one on a length word not.
    let v = t.regions[0].start;
    let rec = |region: u8, at: u32| {
        let a = at.to_le_bytes();
        vec![1, region, a[0], a[1], a[2], 0x10]
    };
    let strict = |input: &[u8]| collections::decode_image(&t, input).1;
    assert!(!strict(&rec(0, 0)));
    assert!(strict(&rec(0, 8)));
    assert!(!strict(&[1, 0xf0, 0, 0, 0, 1]));
    // The length of `vs` (handle 6): strict (discarded handles are zeroed, so none comes back).
    assert!(strict(&rec(6, 8)));
    assert_eq!(
        collections::decode_image(&t, &rec(0, 9)).0[v + 9],
        t.image[v + 9] ^ 0x10
    );
    std::fs::remove_dir(&*dir).expect("the checks left files in the scratch directory");
}
