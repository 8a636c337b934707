//! Arbitrary stored bytes read through `Checked<T>` (derived enums, `bool`, `char`, `Option`):
//! the value exactly when the bytes encode one, else `CorruptData`; never a panic or an invalid
//! value (see `ptm_fuzz::checked`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ptm_fuzz::checked::check_checked_values(data);
});
