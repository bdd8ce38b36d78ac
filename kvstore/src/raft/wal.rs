//! The raft log's write-ahead log: append-only, preallocated segment files, one
//! `fdatasync` per raft `Ready` (as etcd's WAL). The state machine lives in sled and is
//! flushed lazily; the WAL keeps every entry the state machine may not have made durable
//! yet, so a segment is deleted only after a sled flush (see `LogStorage::sync`).
//!
//! A segment is `<seq:016x>.wal`, preallocated to its full size, holding records:
//!
//! | bytes | field                                                          |
//! |-------|----------------------------------------------------------------|
//! | 4     | length of type + payload, u32 LE (0 = end: preallocated zeros)  |
//! | 4     | CRC-32 of type + payload, u32 LE                                 |
//! | 1     | type: entry, hard state, compaction point, installed snapshot    |
//! | n     | payload: `eraftpb.Entry`, `HardState` or `SnapshotMetadata`      |
//!
//! Reading stops at the first record that is short or fails its CRC (a torn write at the
//! tail); a gap in entry indexes that this leaves is reported as corruption. Each new
//! segment starts with the compaction point and the hard state, so deleting older
//! segments loses nothing raft still needs.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
/// Entries up to the index are compacted away (later ones stay).
const COMPACTED: u8 = 3;
/// A snapshot from the leader replaced the whole log.
const SNAPSHOT: u8 = 4;
const HEADER: usize = 9;

struct Segment {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written to it (0: none).
    max_index: u64,
}

/// What a WAL holds after replay.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The latest compaction point or installed snapshot: entries start after it.
    pub snapshot: Option<SnapshotMetadata>,
    pub hard_state: Option<HardState>,
    /// Contiguous entries after `snapshot`.
    pub entries: Vec<Entry>,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    file: File,
    /// Where the next record goes in the current segment.
    offset: u64,
    /// Records not yet written.
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Wal {
    /// Creates a WAL at `dir` (which must not exist) holding `initial` records, durably:
    /// it is built in a temporary directory and renamed into place, so a crash leaves
    /// either no WAL or a complete one.
    pub fn create(
        dir: &Path,
        segment_bytes: u64,
        snapshot: Option<&SnapshotMetadata>,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> io::Result<Wal> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let mut wal = Wal::new_segment_in(&tmp, segment_bytes, 0)?;
        if let Some(s) = snapshot {
            wal.record(SNAPSHOT, &s.write_to_bytes().map_err(io::Error::other)?);
        }
        wal.set_hard_state(hard_state)?;
        wal.append(entries)?;
        wal.sync()?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        wal.dir = dir.to_path_buf();
        wal.segments[0].path = segment_path(dir, 0);
        Ok(wal)
    }

    fn new_segment_in(dir: &Path, segment_bytes: u64, seq: u64) -> io::Result<Wal> {
        let path = segment_path(dir, seq);
        let file = open_segment(&path, segment_bytes)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: vec![Segment {
                seq,
                path,
                max_index: 0,
            }],
            file,
            offset: 0,
            buf: Vec::new(),
        })
    }

    /// Opens the WAL at `dir` and replays it.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Wal, Replayed)> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let Some(&last_seq) = seqs.last() else {
            return Err(corrupt(format!("{}: no WAL segments", dir.display())));
        };
        let mut out = Replayed::default();
        let mut segments = Vec::new();
        let mut offset = 0;
        for seq in seqs {
            let path = segment_path(dir, seq);
            let data = std::fs::read(&path)?;
            let (end, max_index) = replay_segment(&data, &mut out)
                .map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
            if seq == last_seq {
                offset = end as u64;
            }
            segments.push(Segment {
                seq,
                path,
                max_index,
            });
        }
        let floor = out.snapshot.as_ref().map_or(0, |s| s.index);
        out.entries.retain(|e| e.index > floor);
        if let Some(first) = out.entries.first() {
            if first.index != floor + 1 {
                return Err(corrupt(format!(
                    "{}: entries start at {} after a compaction point at {floor}",
                    dir.display(),
                    first.index
                )));
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&segments[segments.len() - 1].path)?;
        // A torn record at the tail is overwritten by the next one; zero its header so a
        // crash before then cannot leave it looking like a record.
        file.write_all_at(&[0u8; HEADER], offset)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            file,
            offset,
            buf: Vec::new(),
        };
        Ok((wal, out))
    }

    fn record(&mut self, kind: u8, payload: &[u8]) {
        let len = (payload.len() + 1) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(payload);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(payload);
    }

    /// Buffers entries (a conflicting suffix is replaced: replay keeps the newest).
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        for e in entries {
            self.record(ENTRY, &e.write_to_bytes().map_err(io::Error::other)?);
        }
        if let (Some(last), Some(seg)) = (entries.last(), self.segments.last_mut()) {
            seg.max_index = seg.max_index.max(last.index);
        }
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState) -> io::Result<()> {
        self.record(HARD_STATE, &hs.write_to_bytes().map_err(io::Error::other)?);
        Ok(())
    }

    /// Writes what is buffered and makes it durable (one write, one fdatasync).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.buf, self.offset)?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        self.file.sync_data()
    }

    /// The current segment is past its size: time for [`Wal::rotate`].
    pub fn full(&self) -> bool {
        self.offset >= self.segment_bytes
    }

    /// Starts a new segment beginning with the compaction point and hard state, and
    /// deletes the older segments that hold only entries at or below the compaction
    /// point. The caller makes sure the state machine has durably applied those.
    pub fn rotate(
        &mut self,
        compacted: Option<&SnapshotMetadata>,
        hard_state: &HardState,
    ) -> io::Result<()> {
        self.switch_segment(compacted.map(|c| (COMPACTED, c)), hard_state)?;
        let floor = compacted.map_or(0, |c| c.index);
        let last = self.segments.len() - 1;
        let obsolete = self.segments[..last]
            .iter()
            .take_while(|s| s.max_index <= floor)
            .count();
        self.delete_oldest(obsolete)
    }

    /// Replaces the whole log by an installed snapshot: a new segment starts with it and
    /// every older segment is deleted.
    pub fn install_snapshot(
        &mut self,
        snapshot: &SnapshotMetadata,
        hard_state: &HardState,
    ) -> io::Result<()> {
        self.switch_segment(Some((SNAPSHOT, snapshot)), hard_state)?;
        self.delete_oldest(self.segments.len() - 1)
    }

    fn switch_segment(
        &mut self,
        first: Option<(u8, &SnapshotMetadata)>,
        hard_state: &HardState,
    ) -> io::Result<()> {
        self.sync()?;
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let path = segment_path(&self.dir, seq);
        self.file = open_segment(&path, self.segment_bytes)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            seq,
            path,
            max_index: 0,
        });
        self.offset = 0;
        if let Some((kind, meta)) = first {
            self.record(kind, &meta.write_to_bytes().map_err(io::Error::other)?);
        }
        self.set_hard_state(hard_state)?;
        self.sync()
    }

    fn delete_oldest(&mut self, n: usize) -> io::Result<()> {
        for s in self.segments.drain(..n) {
            std::fs::remove_file(&s.path)?;
        }
        if n > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Creates a segment preallocated to `bytes` (so appends need no size update) and syncs
/// the preallocation.
fn open_segment(path: &Path, bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, bytes as i64).map_err(io::Error::from)?;
    file.sync_all()?;
    Ok(file)
}

/// Replays one segment's records into `out`; returns where its valid records end and the
/// highest entry index in it.
fn replay_segment(data: &[u8], out: &mut Replayed) -> Result<(usize, u64), String> {
    let mut at = 0;
    let mut max_index = 0;
    while at + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default());
        if len == 0
            || at + 8 + len > data.len()
            || crc32fast::hash(&data[at + 8..at + 8 + len]) != crc
        {
            break;
        }
        let kind = data[at + 8];
        let payload = &data[at + 9..at + 8 + len];
        match kind {
            ENTRY => {
                let e = Entry::parse_from_bytes(payload).map_err(|e| e.to_string())?;
                max_index = max_index.max(e.index);
                if let Some(last) = out.entries.last() {
                    if e.index > last.index + 1 {
                        return Err(format!(
                            "entry {} follows entry {}: the log has a gap",
                            e.index, last.index
                        ));
                    }
                    // A replaced suffix: the newer entries win.
                    let keep = out.entries.partition_point(|x| x.index < e.index);
                    out.entries.truncate(keep);
                }
                out.entries.push(e);
            }
            HARD_STATE => {
                out.hard_state =
                    Some(HardState::parse_from_bytes(payload).map_err(|e| e.to_string())?)
            }
            COMPACTED | SNAPSHOT => {
                let meta =
                    SnapshotMetadata::parse_from_bytes(payload).map_err(|e| e.to_string())?;
                if kind == SNAPSHOT {
                    out.entries.clear();
                }
                if kind == SNAPSHOT || out.snapshot.as_ref().is_none_or(|s| s.index < meta.index) {
                    out.snapshot = Some(meta);
                }
            }
            other => return Err(format!("unknown record type {other} at offset {at}")),
        }
        at += 8 + len;
    }
    Ok((at, max_index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            commit,
            ..Default::default()
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMetadata {
        SnapshotMetadata {
            index,
            term,
            ..Default::default()
        }
    }

    /// An empty WAL (1 MiB segments) in a temporary directory.
    fn fresh() -> (tempfile::TempDir, PathBuf, Wal) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let wal = Wal::create(&dir, 1 << 20, None, &hs(1, 0), &[]).unwrap();
        (tmp, dir, wal)
    }

    fn indexes(r: &Replayed) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn replays_entries_hard_state_and_replaced_suffixes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut wal = Wal::create(&dir, 1 << 20, Some(&meta(1, 1)), &hs(1, 1), &[]).unwrap();
        wal.append(&[entry(2, 1, b"a"), entry(3, 1, b"b"), entry(4, 1, b"c")])
            .unwrap();
        wal.set_hard_state(&hs(1, 3)).unwrap();
        wal.sync().unwrap();
        // A new leader replaces 4.. with its own entries.
        wal.append(&[entry(4, 2, b"x"), entry(5, 2, b"y")]).unwrap();
        wal.set_hard_state(&hs(2, 5)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, r) = Wal::open(&dir, 1 << 20).unwrap();
        assert_eq!(r.snapshot.as_ref().unwrap().index, 1);
        assert_eq!(r.hard_state.clone().unwrap(), hs(2, 5));
        assert_eq!(indexes(&r), vec![(2, 1), (3, 1), (4, 2), (5, 2)]);
        assert_eq!(&r.entries[2].data[..], b"x");
    }

    #[test]
    fn a_torn_tail_is_dropped_and_overwritten() {
        let (_tmp, dir, mut wal) = fresh();
        wal.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        wal.sync().unwrap();
        let end = wal.offset;
        wal.append(&[entry(3, 1, b"torn")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        // Corrupt the last record's payload, as a write cut short by a crash.
        let seg = segment_path(&dir, 0);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"XX", end + 10).unwrap();
        drop(f);
        let (mut wal, r) = Wal::open(&dir, 1 << 20).unwrap();
        assert_eq!(indexes(&r), vec![(1, 1), (2, 1)]);
        assert_eq!(wal.offset, end);
        wal.append(&[entry(3, 1, b"c")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, r) = Wal::open(&dir, 1 << 20).unwrap();
        assert_eq!(indexes(&r), vec![(1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn rotation_keeps_what_is_past_the_compaction_point() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let big = vec![7u8; 3000];
        let mut wal = Wal::create(&dir, 16 * 1024, None, &hs(1, 0), &[]).unwrap();
        let mut index = 0;
        let mut rotations = 0;
        while rotations < 4 {
            index += 1;
            wal.append(&[entry(index, 1, &big)]).unwrap();
            wal.sync().unwrap();
            if wal.full() {
                // Compact to ten entries behind.
                let floor = index.saturating_sub(10);
                wal.rotate(Some(&meta(floor, 1)), &hs(1, index)).unwrap();
                rotations += 1;
            }
        }
        assert!(wal.segment_count() < 5, "old segments were deleted");
        wal.append(&[entry(index + 1, 1, b"last")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, r) = Wal::open(&dir, 16 * 1024).unwrap();
        let floor = r.snapshot.as_ref().unwrap().index;
        assert_eq!(floor, index - 10);
        let got: Vec<u64> = r.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, (floor + 1..=index + 1).collect::<Vec<_>>());
        assert_eq!(r.hard_state.unwrap().commit, index);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let (_tmp, dir, mut wal) = fresh();
        wal.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        wal.install_snapshot(&meta(50, 3), &hs(3, 50)).unwrap();
        wal.append(&[entry(51, 3, b"c")]).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.segment_count(), 1);
        drop(wal);
        let (_, r) = Wal::open(&dir, 1 << 20).unwrap();
        assert_eq!(r.snapshot.as_ref().unwrap().index, 50);
        assert_eq!(indexes(&r), vec![(51, 3)]);
    }

    #[test]
    fn a_gap_is_corruption() {
        let (_tmp, dir, mut wal) = fresh();
        wal.append(&[entry(1, 1, b"a"), entry(3, 1, b"c")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let err = Wal::open(&dir, 1 << 20).err().unwrap();
        assert!(err.to_string().contains("gap"), "{err}");
    }
}
