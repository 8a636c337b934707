//! `PoolHeader::parse` on arbitrary bytes: no panic, results as the format table says, accepted
//! headers well-formed and stable under `as_bytes` + `parse` (see `ptm_fuzz::checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ptm_fuzz::checks::check_header_parse(data));
