//! Makes a sled flush durable the way etcd's WAL sync is.
//!
//! sled 0.34 makes its log writes stable with `sync_file_range`, which neither flushes
//! the disk's write cache nor records the file's new size, and writes large values to
//! blob files it never syncs. So after each sled flush the log storage fdatasyncs the log
//! file, and any blob file that appeared since the last sync together with the blob
//! directory (so the new name survives too).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub struct SledFiles {
    log: File,
    blobs: PathBuf,
    /// The newest blob (blob files are named by the log sequence number) already synced.
    blobs_synced: i64,
}

impl SledFiles {
    /// `dir` is the directory sled was opened at.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(SledFiles {
            log: File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            blobs_synced: i64::MIN,
        })
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = self.blobs_synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if lsn > self.blobs_synced {
                File::open(entry.path())?.sync_data()?;
                newest = newest.max(lsn);
            }
        }
        if newest > self.blobs_synced {
            File::open(&self.blobs)?.sync_all()?;
            self.blobs_synced = newest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_the_log_and_new_blobs_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut files = SledFiles::open(dir.path()).unwrap();
        // A value far over sled's blob threshold is written as a blob file.
        db.insert(b"big", vec![7u8; 1024 * 1024]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .collect();
        assert!(!blobs.is_empty(), "the big value became a blob");
        assert!(files.blobs_synced > i64::MIN, "and it was synced");
        let synced = files.blobs_synced;
        files.sync().unwrap();
        assert_eq!(files.blobs_synced, synced, "nothing new to sync");
    }
}
