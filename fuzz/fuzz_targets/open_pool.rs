//! Whole pool images (a valid template pool mutated as the input says, see `ptm_fuzz::image`)
//! through `inspect_headers`, `Region::open`, `repair_headers` and a second open: no panic, and
//! every result consistent with the image (see `ptm_fuzz::checks`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ptm_fuzz::{checks, image};

/// This process's tmpfs scratch directory and the template image.
static SETUP: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (dir, template) = SETUP.get_or_init(|| {
        let dir = image::scratch_dir("open_pool");
        let template = image::make_template(&dir);
        (dir, template)
    });
    checks::check_open_pool(dir, template, data);
});
