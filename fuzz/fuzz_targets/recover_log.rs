//! A pool image copied in the middle of an uncommitted transaction, its lanes and chunk table
//! mutated as the input says, opened twice (recovery runs each time): no panic, only damage
//! errors, recovery idempotent (see `ptm_fuzz::txn`).
#![no_main]

use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ptm_fuzz::{image, txn};

/// This process's tmpfs scratch directory, the template image, its lane area and chunk table.
type Setup = (PathBuf, Vec<u8>, Range<usize>, Range<usize>);

static SETUP: OnceLock<Setup> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (dir, template, lanes, table) = SETUP.get_or_init(|| {
        let dir = image::scratch_dir("recover_log");
        let (img, lanes, table) = txn::make_recover_template(&dir);
        (dir, img, lanes, table)
    });
    txn::check_recover_log(dir, template, lanes, table, data);
});
