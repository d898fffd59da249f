#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays every input kept under `testdata/fuzz/<target>/` through the
//! same checks the cargo-fuzz targets run (`fuzz/src/checks.rs`, included
//! below), so a crash fuzzing once found stays fixed.
//!
//! - Every file must pass its target's checks without panicking.
//! - A file named `reject-*` must also be rejected with an error: these are
//!   hostile inputs (CBOR bombs, 10k-deep nesting, truncated CARs, wrong
//!   hashes, unsorted MST nodes) and crashes whose fix made them errors.
//!
//! To add a crash: copy `fuzz/artifacts/<target>/crash-…` here (prefix
//! `reject-` if the fixed code must reject it). See `scripts/fuzz.sh`.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use checks::Outcome;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every input of `target`; reports all failures at once.
fn replay(target: &str, check: fn(&[u8]) -> Outcome) {
    let mut failures = Vec::new();
    let inputs = inputs(target);
    for (path, bytes) in &inputs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match std::panic::catch_unwind(|| check(bytes)) {
            Ok(Outcome::Accepted) if name.starts_with("reject-") => {
                failures.push(format!("{name}: accepted, must be rejected"));
            }
            Ok(_) => {}
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: panicked: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn car_inputs() {
    replay("car", checks::car);
}

#[test]
fn dagcbor_inputs() {
    replay("dagcbor", checks::dagcbor);
}

#[test]
fn mst_node_inputs() {
    replay("mst", checks::mst_node);
}

#[test]
fn mst_ops_inputs() {
    replay("mst_ops", checks::mst_ops);
}

#[test]
fn mst_tree_inputs() {
    replay("mst_tree", checks::mst_tree);
}

/// The hand-made hostile inputs the brief of this file promises are there.
#[test]
fn hostile_inputs_are_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
    for file in [
        "dagcbor/reject-array-claiming-2p63.bin",
        "dagcbor/reject-10k-nested-arrays.bin",
        "dagcbor/reject-10k-nested-maps.bin",
        "car/reject-truncated-in-block.car",
        "car/reject-truncated-in-varint.car",
        "car/reject-wrong-hash.car",
        "mst/reject-unsorted-keys.bin",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
}
