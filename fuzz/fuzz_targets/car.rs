#![no_main]
//! Fuzz target `car`: see `barn_repo_fuzz::checks::car`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = barn_repo_fuzz::checks::car(data);
});
