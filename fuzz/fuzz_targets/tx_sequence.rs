//! A sequence of transactions (sets, allocations, frees, nested and aborted transactions) and
//! reopens, decoded from the input, run against a pool and a model: after every step they agree
//! and the heap checks (see `ptm_fuzz::txn`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ptm_fuzz::{image, txn};

/// This process's tmpfs scratch directory and a fresh pool image.
static SETUP: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (dir, template) = SETUP.get_or_init(|| {
        let dir = image::scratch_dir("tx_sequence");
        let template = txn::make_sequence_template(&dir);
        (dir, template)
    });
    txn::check_tx_sequence(dir, template, data);
});
