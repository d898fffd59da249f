//! Shared checks for barn-repo's fuzz targets; see `checks.rs`.

pub mod checks;
