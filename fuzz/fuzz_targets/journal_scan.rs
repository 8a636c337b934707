//! `pmem_core::internals::journal::scan` on arbitrary journal bytes: no panic; accepted records whole,
//! checksummed, consecutive and inside the pool's data area; `apply` writes only there (see
//! `ptm_fuzz::checks::check_journal_scan`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ptm_fuzz::checks::check_journal_scan(data));
