//! A run directory: one per test run or cluster, holding `logs/`, data dirs and the PKI.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Removed on drop (tests); a directory given by the user (`local-cluster`) is kept.
    remove_on_drop: bool,
}

impl RunDir {
    /// A fresh, unique directory under the system temp dir, named after `label`, removed
    /// when dropped (also on panic). Set `RUSTKUBE_KEEP_RUNS=1` to keep it for debugging.
    pub fn temp(label: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("rustkube-e2e")
            .join(format!("{label}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        let keep = std::env::var_os("RUSTKUBE_KEEP_RUNS").is_some();
        Self::create(path, !keep)
    }

    /// Uses (and creates) a directory the caller chose; never removed.
    pub fn at(path: &Path) -> Result<Self> {
        Self::create(path.to_path_buf(), false)
    }

    fn create(path: PathBuf, remove_on_drop: bool) -> Result<Self> {
        std::fs::create_dir_all(path.join("logs"))
            .with_context(|| format!("creating {}", path.display()))?;
        let path = path
            .canonicalize()
            .with_context(|| format!("resolving {}", path.display()))?;
        Ok(RunDir {
            path,
            remove_on_drop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// A subdirectory, created.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Best effort: a leftover temp dir is harmless, and Drop cannot report errors.
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("warning: removing {}: {e}", self.path.display());
            }
        }
    }
}
