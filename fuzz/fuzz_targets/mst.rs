#![no_main]
//! Fuzz target `mst`: see `barn_repo_fuzz::checks::mst_node`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = barn_repo_fuzz::checks::mst_node(data);
});
