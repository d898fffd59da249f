#![no_main]
//! Fuzz target `dagcbor`: see `barn_repo_fuzz::checks::dagcbor`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = barn_repo_fuzz::checks::dagcbor(data);
});
