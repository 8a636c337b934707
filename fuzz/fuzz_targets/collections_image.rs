//! A pool whose root holds populated persistent collections, their handles and heap blocks
//! mutated as the input says, then a script of collection operations in transactions and
//! reopens: no panic, no hang, only clean errors, and on images whose damage the collections
//! can detect, nothing committed outside them lost (see `ptm_fuzz::collections`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ptm_fuzz::{collections, image};

/// This process's tmpfs scratch directory and the template pool.
static SETUP: OnceLock<(PathBuf, collections::Template)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (dir, template) = SETUP.get_or_init(|| {
        let dir = image::scratch_dir("collections_image");
        let template = collections::make_template(&dir);
        (dir, template)
    });
    collections::check_collections_image(dir, template, data);
});
