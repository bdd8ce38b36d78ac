//! Finding the workspace's binaries (`kvstore`, `apiserver`, …) in cargo's target dir.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// The directory holding the workspace binaries: `RUSTKUBE_BIN_DIR` when set, otherwise
/// derived from the running executable (a test runs from `target/<profile>/deps/`,
/// `local-cluster` from `target/<profile>/`).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RUSTKUBE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("executable {} has no parent", exe.display()))?;
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of a workspace binary, or an error saying how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "binary {} not found: run `cargo build --workspace --bins` first (or set RUSTKUBE_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}
