#![no_main]
//! Fuzz target `mst_tree`: see `barn_repo_fuzz::checks::mst_tree`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = barn_repo_fuzz::checks::mst_tree(data);
});
