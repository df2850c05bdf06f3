//! The append side: one frame per drained batch, one `pwrite` per frame into
//! a preallocated segment, `fdatasync` on demand.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use super::error::JournalError;
use super::format::{encode_frame, segment_header, SEGMENT_HEADER_BYTES};
use super::lock::DirLock;
use super::scan::{list_segments, segment_name, Scanner};
use super::snapshot::sync_dir;
use super::{Durability, JournalConfig};
use crate::request::Stamped;

/// Smallest accepted `segment_bytes`: room for the header and a few frames.
pub const SEGMENT_BYTES_MIN: u64 = 512;

/// The next segment, zero-filled in advance under this name. Not a `.seg`
/// name, so readers never see it; a stale one from a crash is removed at open.
const SPARE_NAME: &str = "next.seg.spare";

/// Appends batches to the journal in `dir`. Owned by the business thread.
///
/// It holds the directory's lock ([`DirLock`]) from open until it is dropped,
/// so its owner is the one party entitled to write snapshots into the
/// directory and prune it while it lives (see [`Self::dir`]).
///
/// In [`Durability::None`] mode it touches no files and every call is a
/// no-op, so the engine can hold one unconditionally.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    /// Held until the writer is dropped (released after `Drop::drop` has
    /// joined the helper threads and removed the spare). None only in
    /// `Durability::None` mode opened by path.
    lock: Option<DirLock>,
    config: JournalConfig,
    segment: Option<(File, PathBuf)>,
    /// Where the next frame goes in the current segment.
    write_at: u64,
    /// The seq the next batch must start at (None: no segment yet).
    next_seq: Option<u64>,
    /// Whether the current segment has bytes not yet fdatasync'ed.
    dirty: bool,
    frame: Vec<u8>,
    /// The next segment being zero-filled on a helper thread, so a roll on
    /// the business thread costs a header write and two small syncs instead
    /// of filling and syncing a whole segment (~80 ms for 64 MiB here).
    spare: Option<JoinHandle<io::Result<File>>>,
    /// fdatasync of the previous segment, run on a helper thread when a roll
    /// leaves it dirty (async mode): syncing up to 64 MiB inline would stall
    /// the business thread for ~100 ms. `sync` waits for it.
    previous_sync: Option<JoinHandle<io::Result<()>>>,
    /// Set after a failed write or sync: the file's state is unknown (and on
    /// Linux a failed fsync may not be retried meaningfully), so the writer
    /// refuses further work until the journal is recovered.
    poisoned: Option<String>,
}

impl JournalWriter {
    /// Opens the journal in `dir` (created if missing) for appending after
    /// its last valid record. Refuses a journal whose tail is torn: run
    /// [`super::recover`] first, which truncates it.
    ///
    /// Takes the directory's lock ([`super::lock_dir`]) and keeps it until
    /// the writer is dropped; [`JournalError::Locked`] if another process or
    /// writer holds it. [`Durability::None`] takes no lock and touches no
    /// files. To recover first under the same lock, see [`Self::open_locked`].
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<JournalWriter, JournalError> {
        if config.durability == Durability::None {
            return Ok(JournalWriter::new(dir.as_ref().to_path_buf(), None, config));
        }
        check_segment_bytes(dir.as_ref(), config)?;
        JournalWriter::open_locked(super::lock_dir(dir)?, config)
    }

    /// [`Self::open`] in the directory `lock` holds, keeping the lock until
    /// the writer is dropped. Used after [`super::recover_locked`] with the
    /// same lock, so no other writer can touch the directory in between.
    pub fn open_locked(
        lock: DirLock,
        config: JournalConfig,
    ) -> Result<JournalWriter, JournalError> {
        let mut writer = JournalWriter::new(lock.dir().to_path_buf(), Some(lock), config);
        if config.durability == Durability::None {
            return Ok(writer);
        }
        check_segment_bytes(&writer.dir, config)?;
        fs::create_dir_all(&writer.dir)
            .map_err(|e| JournalError::io(&writer.dir, "create journal directory", e))?;
        let spare = writer.dir.join(SPARE_NAME);
        match fs::remove_file(&spare) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(JournalError::io(spare, "remove stale spare segment", e))
            }
            _ => {}
        }
        let Some(last) = list_segments(&writer.dir)?.pop() else {
            return Ok(writer);
        };
        let mut scanner = Scanner::new(vec![last.clone()], 0);
        let mut write_at = SEGMENT_HEADER_BYTES as u64;
        let mut next_seq = last.first_seq;
        while let Some(frame) = scanner.next_frame()? {
            write_at = frame.next as u64;
            next_seq = frame.last_seq() + 1;
        }
        if let Some(torn) = &scanner.torn {
            return Err(JournalError::io(
                &last.path,
                "append to",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}; run recovery first, it truncates the torn tail",
                        torn.describe()
                    ),
                ),
            ));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&last.path)
            .map_err(|e| JournalError::io(&last.path, "open segment for appending", e))?;
        writer.segment = Some((file, last.path));
        writer.write_at = write_at;
        writer.next_seq = Some(next_seq);
        writer.start_spare();
        Ok(writer)
    }

    fn new(dir: PathBuf, lock: Option<DirLock>, config: JournalConfig) -> JournalWriter {
        JournalWriter {
            dir,
            lock,
            config,
            segment: None,
            write_at: 0,
            next_seq: None,
            dirty: false,
            frame: Vec::new(),
            spare: None,
            previous_sync: None,
            poisoned: None,
        }
    }

    pub fn durability(&self) -> Durability {
        self.config.durability
    }

    /// The journal directory. While the writer lives it holds the
    /// directory's lock, so its owner (and only its owner) may call
    /// [`super::write_snapshot`] and [`super::prune`] on this directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory lock this writer holds (None only in
    /// [`Durability::None`] mode when opened by path).
    pub fn lock(&self) -> Option<&DirLock> {
        self.lock.as_ref()
    }

    /// The seq the next appended batch must start with, once known.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// The segment being appended to.
    pub fn segment_path(&self) -> Option<&Path> {
        self.segment.as_ref().map(|(_, p)| p.as_path())
    }

    /// Writes `batch` as one frame to the OS page cache (the `async` promise:
    /// it survives a process crash, not a power loss).
    ///
    /// Seqs must be consecutive and start at [`Self::next_seq`]. A batch
    /// starting later (the Ledger was restored from a snapshot newer than
    /// the journal) opens a new segment at its seq; one starting earlier is
    /// refused, since it would write a seq twice.
    pub fn append(&mut self, batch: &[Stamped]) -> io::Result<()> {
        let Some(first) = batch.first().map(|s| s.stamp.seq) else {
            return Ok(());
        };
        if self.config.durability == Durability::None {
            return Ok(());
        }
        self.check_usable()?;
        check_batch_seqs(batch, first, self.next_seq)?;
        encode_frame(batch, &mut self.frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let frame_bytes = self.frame.len() as u64;
        let full = self.write_at > SEGMENT_HEADER_BYTES as u64
            && self.write_at + frame_bytes > self.config.segment_bytes;
        if self.segment.is_none() || self.next_seq != Some(first) || full {
            self.roll(first)?;
        }
        let written = match &self.segment {
            Some((file, _)) => file.write_all_at(&self.frame, self.write_at),
            None => Err(io::Error::other("no open segment after roll")),
        };
        if let Err(e) = written {
            return Err(self.poison("write", e));
        }
        self.write_at += frame_bytes;
        self.next_seq = Some(first + batch.len() as u64);
        self.dirty = true;
        Ok(())
    }

    /// fdatasync of the current segment (the `sync` promise: everything
    /// appended so far survives power loss). Call once per batch for group
    /// commit. Cheap when nothing was appended since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_usable()?;
        self.finish_previous_sync()?;
        if !self.dirty {
            return Ok(());
        }
        if let Some((file, _)) = &self.segment {
            if let Err(e) = file.sync_data() {
                return Err(self.poison("fdatasync", e));
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// [`Self::append`], then [`Self::sync`] if the durability mode is `sync`:
    /// after it returns, the batch's outcomes may be released.
    pub fn commit(&mut self, batch: &[Stamped]) -> io::Result<()> {
        self.append(batch)?;
        if self.config.durability == Durability::Sync {
            self.sync()?;
        }
        Ok(())
    }

    fn finish_previous_sync(&mut self) -> io::Result<()> {
        let result = match self.previous_sync.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => return Ok(()),
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the thread syncing the previous segment panicked"),
        };
        Err(self.poison("fdatasync of the previous segment", result))
    }

    fn check_usable(&self) -> io::Result<()> {
        match &self.poisoned {
            Some(why) => Err(io::Error::other(format!(
                "journal writer stopped after an earlier failure ({why}); recover the journal before writing again"
            ))),
            None => Ok(()),
        }
    }

    fn poison(&mut self, action: &str, e: io::Error) -> io::Error {
        let path = self
            .segment_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let message = format!("{action} {path} failed: {e}");
        self.poisoned = Some(message.clone());
        io::Error::new(e.kind(), message)
    }

    /// Starts a new segment at `first_seq` from the spare (made inline if
    /// there is none): header written and synced, renamed into place,
    /// directory synced, then the next spare started. Zero-filling up front
    /// is what makes later fdatasyncs cheap: overwriting allocated blocks
    /// changes no file metadata, while appending (or filling a sparse hole)
    /// does.
    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        // At most one background sync: a second roll before it finished means
        // segments fill faster than the disk drains them anyway.
        self.finish_previous_sync()?;
        let path = self.dir.join(segment_name(first_seq));
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "segment {} already exists; refusing to overwrite it",
                    path.display()
                ),
            ));
        }
        let spare_path = self.dir.join(SPARE_NAME);
        let file = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(Ok(file))) => file,
            // No spare yet, or making it failed: make it here, so a real
            // I/O error surfaces on this call.
            _ => make_spare(&spare_path, self.config)?,
        };
        file.write_all_at(&segment_header(first_seq), 0)?;
        file.sync_data()?;
        fs::rename(&spare_path, &path)?;
        sync_dir(&self.dir)?;
        if let Some((previous, _)) = self.segment.replace((file, path)) {
            if self.dirty {
                match thread::Builder::new()
                    .name("journal-sync".into())
                    .spawn(move || previous.sync_data())
                {
                    Ok(handle) => self.previous_sync = Some(handle),
                    Err(e) => return Err(self.poison("start syncing the previous segment", e)),
                }
            }
        }
        self.write_at = SEGMENT_HEADER_BYTES as u64;
        self.next_seq = Some(first_seq);
        self.dirty = false;
        self.start_spare();
        Ok(())
    }

    /// Starts preparing the next segment on a helper thread. If the thread
    /// cannot start, the next roll makes the spare inline.
    fn start_spare(&mut self) {
        let path = self.dir.join(SPARE_NAME);
        let config = self.config;
        self.spare = thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || make_spare(&path, config))
            .ok();
    }
}

impl Drop for JournalWriter {
    /// Waits for the helper threads and removes the spare segment, so no
    /// thread writes into the directory after the writer is gone.
    fn drop(&mut self) {
        if let Some(handle) = self.previous_sync.take() {
            let _ = handle.join();
        }
        if let Some(Ok(Ok(_))) = self.spare.take().map(JoinHandle::join) {
            let _ = fs::remove_file(self.dir.join(SPARE_NAME));
        }
    }
}

/// A file of `segment_bytes` zeros, synced with its size.
///
/// In `sync` mode the zeros are written for real, because fdatasync after
/// overwriting allocated blocks is faster than after filling a hole or
/// appending (no block allocation to journal). In `async` mode nobody waits
/// for fdatasync, and writing every byte twice (zeros, then data) would halve
/// the disk bandwidth left for the journal, so the file is sparse: reading a
/// hole gives the same zeros, so the format does not change.
fn make_spare(path: &Path, config: JournalConfig) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    if config.durability == Durability::Sync {
        zero_fill(&file, 0, config.segment_bytes)?;
    } else {
        file.set_len(config.segment_bytes)?;
    }
    file.sync_all()?;
    Ok(file)
}

fn check_segment_bytes(dir: &Path, config: JournalConfig) -> Result<(), JournalError> {
    if config.segment_bytes >= SEGMENT_BYTES_MIN {
        return Ok(());
    }
    Err(JournalError::io(
        dir,
        "open journal",
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "segment size {} bytes is below the minimum of {SEGMENT_BYTES_MIN}",
                config.segment_bytes
            ),
        ),
    ))
}

fn check_batch_seqs(batch: &[Stamped], first: u64, next_seq: Option<u64>) -> io::Result<()> {
    let invalid = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
    if first == 0 {
        return invalid("seq 0 is not a valid sequence number; seqs start at 1".into());
    }
    if let Some(next) = next_seq {
        if first < next {
            return invalid(format!(
                "batch starts at seq {first} but the journal already holds up to {}; refusing to write a seq twice",
                next - 1
            ));
        }
    }
    for (i, s) in batch.iter().enumerate() {
        if s.stamp.seq != first + i as u64 {
            return invalid(format!(
                "batch seqs must be consecutive: position {i} has seq {}, expected {}",
                s.stamp.seq,
                first + i as u64
            ));
        }
    }
    Ok(())
}

/// Writes real zeros (not a sparse hole) over `[from, to)`.
fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = CHUNK_BYTES.min(to - at) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
