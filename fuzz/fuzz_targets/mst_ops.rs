#![no_main]
//! Fuzz target `mst_ops`: see `barn_repo_fuzz::checks::mst_ops`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = barn_repo_fuzz::checks::mst_ops(data);
});
