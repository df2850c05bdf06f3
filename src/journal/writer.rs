//! The append side: one frame per drained batch into a preallocated
//! segment; `fdatasync` on demand.
//!
//! How a frame gets there depends on the durability mode:
//! - `async`: copied into a shared memory map of the segment. The `async`
//!   promise (survive a process crash) holds the moment the bytes are in the
//!   page cache, and a store into a shared file map puts them there with no
//!   system call. `pwrite` cost ~4 us per small frame here (syscall, page
//!   lookup, dirty accounting); with the small groups smart batching makes
//!   when the business thread keeps up, that was most of the journal's cost
//!   (engine bench, 1 gateway: 3.8M req/s with `pwrite`, 7.0-8.0M mapped).
//!   The spare segment's blocks are allocated, and its pages mapped and
//!   touched on a helper thread, so the business thread's stores neither
//!   fault nor can meet a full disk.
//! - `sync`: one `pwrite` per frame, then `fdatasync`. Writing back pages
//!   dirtied through a map made each fdatasync ~5x slower here (p50 0.6-0.7
//!   ms instead of 0.12 ms after 64 KiB, same disk, alternating runs), far
//!   more than a `pwrite` costs.
//!
//! Every frame header carries the seq through which the writer knew the
//! journal synced when it wrote the frame, and [`JournalWriter::close`]
//! ends a clean shutdown with a synced mark: recovery's durable point (see
//! `journal/README.md`). In `async` mode a helper thread fdatasyncs what was
//! written every [`ASYNC_SYNC_INTERVAL`], like Redis's `everysec`, so the
//! durable point (and what a power loss can take) trails by about that much;
//! the business thread never waits for it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::error::JournalError;
use super::format::{
    encode_clean_shutdown, encode_frame, frame_links, parse_frame, segment_header, ChainHead,
    Parsed, SEGMENT_HEADER_BYTES,
};
use super::lock::DirLock;
use super::scan::{list_segments, segment_name, Scanner};
use super::snapshot::snapshot_floor;
use super::{Durability, JournalConfig};
use crate::metrics::JournalMetrics;
use crate::request::Stamped;
use crate::storage::{zero_fill, OpenMode, OsStorage, Storage, StorageFile, StorageMap};

/// Smallest accepted `segment_bytes`: room for the header and a few frames.
pub const SEGMENT_BYTES_MIN: u64 = 512;

/// How often `async` mode's helper thread fdatasyncs what was written.
pub const ASYNC_SYNC_INTERVAL: Duration = Duration::from_millis(100);

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
///
/// It reaches the disk through `S` ([`crate::storage`]): the real file
/// system unless a simulated one is given (through the lock it is opened
/// with, [`Self::open_locked`]).
#[derive(Debug)]
pub struct JournalWriter<S: Storage = OsStorage> {
    storage: S,
    dir: PathBuf,
    /// Held until the writer is dropped (released after `Drop::drop` has
    /// joined the helper threads and removed the spare). None only in
    /// `Durability::None` mode opened by path.
    lock: Option<DirLock<S>>,
    config: JournalConfig,
    segment: Option<Segment<S>>,
    /// Where the next frame goes in the current segment.
    write_at: u64,
    /// Where the bytes not yet synced start in the current segment
    /// (`< write_at`: the segment has unsynced frames).
    synced_to: u64,
    /// The seq the next batch must start at (None: no segment yet).
    next_seq: Option<u64>,
    /// The hash chain after the last frame written: the next frame's parent.
    head: ChainHead,
    /// Every record up to this seq is known fdatasynced (by [`Self::sync`]
    /// or at open); the async helper may know a later one.
    durable_seq: u64,
    /// `async` mode's periodic fdatasync.
    syncer: Option<Syncer<S>>,
    frame: Vec<u8>,
    /// The next segment being zero-filled on a helper thread, so a roll on
    /// the business thread costs a header write and two small syncs instead
    /// of filling and syncing a whole segment (~80 ms for 64 MiB here).
    /// Always None without helper threads ([`Storage::HELPER_THREADS`]).
    spare: Option<JoinHandle<io::Result<Segment<S>>>>,
    /// fdatasync of the previous segment, run on a helper thread when a roll
    /// leaves it dirty (async mode): syncing up to 64 MiB inline would stall
    /// the business thread for ~100 ms. `sync` waits for it.
    previous_sync: Option<JoinHandle<io::Result<()>>>,
    /// Set after a failed write or sync: the file's state is unknown (and on
    /// Linux a failed fsync may not be retried meaningfully), so the writer
    /// refuses further work until the journal is recovered.
    poisoned: Option<String>,
    /// Bytes written and fdatasync latency, for monitoring.
    metrics: Option<JournalMetrics>,
}

impl JournalWriter<OsStorage> {
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
            return Ok(JournalWriter::new(
                OsStorage,
                dir.as_ref().to_path_buf(),
                None,
                config,
            ));
        }
        check_segment_bytes(dir.as_ref(), config)?;
        JournalWriter::open_locked(super::lock_dir(dir)?, config)
    }
}

impl<S: Storage> JournalWriter<S> {
    /// [`JournalWriter::open`] in the directory `lock` holds, keeping the lock until
    /// the writer is dropped. Used after [`super::recover_locked`] with the
    /// same lock, so no other writer can touch the directory in between.
    pub fn open_locked(
        lock: DirLock<S>,
        config: JournalConfig,
    ) -> Result<JournalWriter<S>, JournalError> {
        let storage = lock.storage().clone();
        let mut writer = JournalWriter::new(storage, lock.dir().to_path_buf(), Some(lock), config);
        if config.durability == Durability::None {
            return Ok(writer);
        }
        check_segment_bytes(&writer.dir, config)?;
        let storage = writer.storage.clone();
        storage
            .create_dir_all(&writer.dir)
            .map_err(|e| JournalError::io(&writer.dir, "create journal directory", e))?;
        let spare = writer.dir.join(SPARE_NAME);
        match storage.remove_file(&spare) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(JournalError::io(spare, "remove stale spare segment", e))
            }
            _ => {}
        }
        let segments = list_segments(&storage, &writer.dir)?;
        let Some(last) = segments.last().cloned() else {
            return Ok(writer);
        };
        // Only the last two segments can hold unsynced frames: a roll syncs
        // the segment it leaves, one at a time.
        let tail = segments[segments.len().saturating_sub(2)..].to_vec();
        let mut scanner = Scanner::new(storage.clone(), tail.clone(), 0, 0);
        let mut write_at = SEGMENT_HEADER_BYTES as u64;
        let mut next_seq = last.first_seq;
        // The journal's own durable point, and the frames beyond it (file,
        // offset, end, the seq a D must reach to cover them): few, those of
        // one sync interval at most.
        let mut durable_seq = snapshot_floor(&storage, &writer.dir)?;
        let mut unsynced: VecDeque<(PathBuf, usize, usize, u64)> = VecDeque::new();
        while let Some(frame) = scanner.next_frame()? {
            durable_seq = durable_seq.max(frame.durable_seq);
            while unsynced.front().is_some_and(|f| f.3 <= durable_seq) {
                unsynced.pop_front();
            }
            // A frame's bytes are known synced once a later D covers its
            // records; a clean-shutdown mark (no records, D = its seq - 1)
            // only once a later D reaches its own seq: its D says nothing of
            // its own bytes.
            let covered_by = frame.last_seq().max(frame.first_seq);
            if covered_by > durable_seq {
                let path = scanner.path().to_path_buf();
                unsynced.push_back((path, frame.offset, frame.next, covered_by));
            }
            if scanner.path() == last.path {
                write_at = frame.next as u64;
            }
            next_seq = next_seq.max(frame.last_seq() + 1);
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
        // Whatever is readable now is what was recovered; make it durable so
        // the frames from here on can say so. An fdatasync alone is not
        // enough for the frames the journal does not show synced: if an
        // earlier fdatasync of theirs failed, Linux marked their pages clean
        // without writing them, the page cache still shows them, and a
        // second fdatasync has nothing to write, so a power loss would take
        // them from under the frames acknowledged after this open. Writing
        // their bytes again dirties those pages, so the fdatasync writes them.
        for (path, from, to) in unsynced_ranges(&unsynced) {
            rewrite(&storage, &path, from, to)
                .map_err(|e| JournalError::io(&path, "rewrite the unsynced frames of", e))?;
        }
        // Likewise the directory: if the fsync that followed the last roll
        // failed, the newest segment's name may be only in the page cache.
        storage
            .sync_dir(&writer.dir)
            .map_err(|e| JournalError::io(&writer.dir, "sync the journal directory", e))?;
        for older in tail.iter().rev().skip(1) {
            storage
                .open(&older.path, OpenMode::Read)
                .and_then(|file| file.sync_data())
                .map_err(|e| JournalError::io(&older.path, "fdatasync", e))?;
        }
        let segment = storage
            .open(&last.path, OpenMode::ReadWrite)
            .and_then(|file| {
                file.sync_data()?;
                Segment::open(file, last.path.clone(), config.durability)
            })
            .map_err(|e| JournalError::io(&last.path, "open segment for appending", e))?;
        if let Some(syncer) = &writer.syncer {
            syncer.switch(&segment, write_at, false);
        }
        writer.segment = Some(segment);
        writer.write_at = write_at;
        writer.synced_to = write_at;
        writer.next_seq = Some(next_seq);
        writer.head = scanner.head();
        writer.durable_seq = next_seq - 1;
        writer.start_spare();
        Ok(writer)
    }

    fn new(
        storage: S,
        dir: PathBuf,
        lock: Option<DirLock<S>>,
        config: JournalConfig,
    ) -> JournalWriter<S> {
        let syncer =
            (S::HELPER_THREADS && config.durability == Durability::Async && lock.is_some())
                .then(Syncer::start)
                .flatten();
        JournalWriter {
            storage,
            dir,
            lock,
            config,
            segment: None,
            write_at: 0,
            synced_to: 0,
            next_seq: None,
            head: ChainHead::GENESIS,
            durable_seq: 0,
            syncer,
            metrics: None,
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
    pub fn lock(&self) -> Option<&DirLock<S>> {
        self.lock.as_ref()
    }

    /// The seq the next appended batch must start with, once known.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// The storage the journal is written through.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The hash chain after the last batch written (or resumed from): what
    /// a snapshot of the Ledger at that seq records ([`super::write_snapshot`]).
    pub fn chain_head(&self) -> ChainHead {
        self.head
    }

    /// Continues the chain from `head`, the recovered state's
    /// ([`super::Recovered::chain_head`]). Needed only when that state is
    /// ahead of the journal (restored from a snapshot newer than the
    /// journal's end): the next batch then opens a segment that starts the
    /// chain from the snapshot's head, so recovery from that snapshot can
    /// check it. At the journal's own last seq the heads must agree; behind
    /// it is refused (recover first). Nothing is written either way.
    pub fn resume(&mut self, head: ChainHead) -> Result<(), JournalError> {
        let refuse = |reason: String| {
            Err(JournalError::Refused {
                path: self.dir.clone(),
                reason,
            })
        };
        if head.seq < self.head.seq {
            return refuse(format!(
                "cannot continue from seq {head_seq}: the journal already goes on to seq {}; recover the state from it first",
                self.head.seq,
                head_seq = head.seq
            ));
        }
        if head.seq == self.head.seq && head.checksum != self.head.checksum {
            return refuse(format!(
                "the state's chain head at seq {} is {head}, but the journal's is {}: they are not of the same history",
                head.seq, self.head
            ));
        }
        self.head = head;
        Ok(())
    }

    /// Every record up to this seq is known to be fdatasynced (0: none).
    pub fn durable_seq(&self) -> u64 {
        let background = self.syncer.as_ref().map_or(0, Syncer::durable_seq);
        self.durable_seq.max(background)
    }

    /// The bytes of the frame the last [`Self::append`] wrote, padding
    /// included: what replication publishes, byte for byte, so a follower
    /// checks the very checksum the leader's disk holds.
    pub fn last_frame(&self) -> &[u8] {
        &self.frame
    }

    /// The segment being appended to.
    pub fn segment_path(&self) -> Option<&Path> {
        self.segment.as_ref().map(|s| s.path.as_path())
    }

    /// Writes `batch` as one frame to the OS page cache (the `async` promise:
    /// it survives a process crash, not a power loss).
    ///
    /// Seqs must be consecutive and start at [`Self::next_seq`]. A batch
    /// starting later (the Ledger was restored from a snapshot newer than
    /// the journal) opens a new segment at its seq, once [`Self::resume`]
    /// has given the chain at the seq before it; one starting earlier is
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
        if first != self.head.seq + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "batch starts at seq {first}, but the chain stands at seq {}: a state restored from a snapshot \
                     newer than the journal must be resumed first (JournalWriter::resume with its chain head)",
                    self.head.seq
                ),
            ));
        }
        let checksum = encode_frame(
            batch,
            self.durable_seq(),
            self.head.checksum,
            &mut self.frame,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.write_frame(first)?;
        let last = first + batch.len() as u64 - 1;
        self.head = ChainHead {
            seq: last,
            checksum,
        };
        self.next_seq = Some(last + 1);
        if let Some(syncer) = &self.syncer {
            syncer.written(self.write_at, first + batch.len() as u64 - 1);
        }
        Ok(())
    }

    /// Writes `frame`, a frame another journal wrote (a leader's, received
    /// through replication), as it is, holding `batch`: its checksum, durable
    /// seq and parent included, so this journal's chain follows the other's
    /// and has the same head at every seq. The frame must be exactly the
    /// frame of `batch`'s records whose parent is this journal's head
    /// ([`Self::chain_head`]): anything else is refused (`InvalidInput`) and
    /// nothing is written.
    ///
    /// The check is an encoding: `batch` is encoded after the frame's own
    /// durable seq and parent, as [`Self::append`] would, and must give the
    /// frame's very bytes. So the frame's checksum, count and records are
    /// right by construction (a frame whose records are not `batch`'s, or
    /// with bytes past the records it claims, cannot pass), it is hashed
    /// once, and it is written from the buffer it was encoded into.
    ///
    /// The frame's durable seq speaks of the other journal's disk; it becomes
    /// true of this one first: if it is beyond what this writer knows
    /// synced, everything written so far is fdatasynced before the frame is
    /// written (recovery reads a durable seq as a promise about the frames
    /// before it).
    pub fn append_frame(&mut self, frame: &[u8], batch: &[Stamped]) -> io::Result<()> {
        let Some(first) = batch.first().map(|s| s.stamp.seq) else {
            return Ok(());
        };
        if self.config.durability == Durability::None {
            return Ok(());
        }
        self.check_usable()?;
        check_batch_seqs(batch, first, self.next_seq)?;
        let invalid = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        let Some((durable_seq, parent)) = frame_links(frame) else {
            return invalid(format!("{} bytes are too short for a frame", frame.len()));
        };
        let checksum = encode_frame(batch, durable_seq, parent, &mut self.frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if self.frame != frame {
            return invalid(not_the_frame_of(frame, batch));
        }
        if first != self.head.seq + 1 || parent != self.head.checksum {
            return invalid(format!(
                "the frame (seqs from {first}) names parent {parent:032x}, but this journal's chain head is {} at seq {}: \
                 it does not extend this journal",
                self.head, self.head.seq
            ));
        }
        if durable_seq >= first {
            return invalid(format!(
                "the frame says seq {durable_seq} was durable before it was written, but it starts at seq {first}"
            ));
        }
        if durable_seq > self.durable_seq() {
            self.sync()?;
            // Everything before the frame is durable now: synced just now,
            // or recovered (made durable at open), or in a snapshot.
            self.durable_seq = self.durable_seq.max(self.head.seq);
        }
        self.write_frame(first)?;
        let last = first + batch.len() as u64 - 1;
        self.head = ChainHead {
            seq: last,
            checksum,
        };
        self.next_seq = Some(last + 1);
        if let Some(syncer) = &self.syncer {
            syncer.written(self.write_at, last);
        }
        Ok(())
    }

    /// Writes the encoded frame (`self.frame`), whose first seq is `first`,
    /// rolling to a new segment first if it does not fit or starts later
    /// than the current segment's next seq.
    fn write_frame(&mut self, first: u64) -> io::Result<()> {
        if let Some(why) = self.syncer.as_ref().and_then(Syncer::failure) {
            return Err(self.poison("background fdatasync", io::Error::other(why)));
        }
        let frame_bytes = self.frame.len() as u64;
        let fits = self
            .segment
            .as_ref()
            .is_some_and(|s| self.write_at + frame_bytes <= s.bytes);
        if !fits || self.next_seq != Some(first) {
            self.roll(first, frame_bytes)?;
        }
        let written = match &mut self.segment {
            Some(segment) => segment.write(&self.frame, self.write_at),
            None => Err(io::Error::other("no open segment after roll")),
        };
        if let Err(e) = written {
            return Err(self.poison("write", e));
        }
        self.write_at += frame_bytes;
        if let Some(metrics) = &self.metrics {
            metrics.bytes_written.inc_by(frame_bytes);
        }
        Ok(())
    }

    /// Counts the bytes this writer writes and times every fdatasync of
    /// the journal: its own ([`Self::sync`]: each group in `sync` mode,
    /// before a snapshot, at close) and `async` mode's background ones (the
    /// periodic one, and a finished segment's after a roll).
    pub fn set_metrics(&mut self, metrics: JournalMetrics) {
        if let Some(syncer) = &self.syncer {
            syncer.shared.state.lock().fsync_seconds = Some(metrics.fsync_seconds.clone());
        }
        self.metrics = Some(metrics);
    }

    /// Ends a clean shutdown: syncs, writes the clean-shutdown mark (a frame
    /// with no records saying the whole journal is durable) and syncs it, so
    /// recovery treats damage anywhere in the journal as corruption instead
    /// of a torn tail. A writer merely dropped leaves no mark.
    pub fn close(mut self) -> io::Result<()> {
        let Some(next_seq) = self.next_seq else {
            return Ok(());
        };
        if self.config.durability == Durability::None {
            return Ok(());
        }
        self.sync()?;
        encode_clean_shutdown(next_seq, self.head.checksum, &mut self.frame);
        self.write_frame(next_seq)?;
        self.sync()
    }

    /// fdatasync of what was appended to the current segment since the last
    /// sync (the `sync` promise: everything appended so far survives power
    /// loss). Call once per batch for group commit. Cheap when nothing was
    /// appended since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_usable()?;
        self.finish_previous_sync()?;
        if self.synced_to == self.write_at {
            return Ok(());
        }
        if let Some(segment) = &self.segment {
            let started = std::time::Instant::now();
            if let Err(e) = segment.sync(self.synced_to, self.write_at) {
                return Err(self.poison("fdatasync", e));
            }
            if let Some(metrics) = &self.metrics {
                metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        self.synced_to = self.write_at;
        if let Some(next) = self.next_seq {
            self.durable_seq = next - 1;
        }
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
    /// there is none, or if a `frame_bytes` frame would not fit it): header
    /// written and synced, renamed into place, directory synced, then the
    /// next spare started. Zero-filling up front is what makes later syncs
    /// cheap: overwriting allocated blocks changes no file metadata, while
    /// appending (or filling a sparse hole) does.
    fn roll(&mut self, first_seq: u64, frame_bytes: u64) -> io::Result<()> {
        // At most one background sync: a second roll before it finished means
        // segments fill faster than the disk drains them anyway.
        self.finish_previous_sync()?;
        let path = self.dir.join(segment_name(first_seq));
        // The current segment may be replaced only while it holds no frame
        // (a torn first frame was truncated): nothing in it is lost.
        let empty_current = self.segment_path() == Some(path.as_path())
            && self.write_at == SEGMENT_HEADER_BYTES as u64;
        if self.storage.info(&path).is_ok() && !empty_current {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "segment {} already exists; refusing to overwrite it",
                    path.display()
                ),
            ));
        }
        let spare_path = self.dir.join(SPARE_NAME);
        let needed = SEGMENT_HEADER_BYTES as u64 + frame_bytes;
        let mut segment = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(Ok(spare))) if spare.bytes >= needed => spare,
            // No spare yet, making it failed (make it here, so a real I/O
            // error surfaces on this call), or one frame is larger than a
            // whole segment (this one gets a segment of its own size).
            _ => make_spare(
                &self.storage,
                &spare_path,
                self.config.segment_bytes.max(needed),
                self.config.durability,
            )?,
        };
        let header = segment_header(first_seq, self.head.checksum);
        segment.write(&header, 0)?;
        segment.sync(0, header.len() as u64)?;
        self.storage.rename(&spare_path, &path)?;
        self.storage.sync_dir(&self.dir)?;
        segment.path = path;
        let previous_dirty = self.synced_to < self.write_at;
        if let Some(syncer) = &self.syncer {
            syncer.switch(&segment, SEGMENT_HEADER_BYTES as u64, previous_dirty);
        }
        if let Some(previous) = self.segment.replace(segment) {
            if previous_dirty && !S::HELPER_THREADS {
                if let Err(e) = previous.file.sync_data() {
                    return Err(self.poison("fdatasync of the previous segment", e));
                }
            } else if previous_dirty {
                // fdatasync on the file also writes pages dirtied through
                // the map.
                let Segment { file, map, .. } = previous;
                let syncer = self.syncer.as_ref().map(|s| Arc::clone(&s.shared));
                let timer = self.metrics.as_ref().map(|m| m.fsync_seconds.clone());
                match thread::Builder::new()
                    .name("journal-sync".into())
                    .spawn(move || {
                        let started = std::time::Instant::now();
                        file.sync_data()?;
                        if let Some(timer) = timer {
                            timer.observe(started.elapsed().as_secs_f64());
                        }
                        drop(map);
                        if let Some(syncer) = syncer {
                            syncer.state.lock().previous_pending = false;
                        }
                        Ok(())
                    }) {
                    Ok(handle) => self.previous_sync = Some(handle),
                    Err(e) => return Err(self.poison("start syncing the previous segment", e)),
                }
            }
        }
        self.write_at = SEGMENT_HEADER_BYTES as u64;
        self.synced_to = self.write_at;
        self.next_seq = Some(first_seq);
        self.start_spare();
        Ok(())
    }

    /// Starts preparing the next segment on a helper thread. If the thread
    /// cannot start, the next roll makes the spare inline.
    fn start_spare(&mut self) {
        if !S::HELPER_THREADS {
            return;
        }
        let storage = self.storage.clone();
        let path = self.dir.join(SPARE_NAME);
        let JournalConfig {
            segment_bytes,
            durability,
        } = self.config;
        self.spare = thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || make_spare(&storage, &path, segment_bytes, durability))
            .ok();
    }
}

impl<S: Storage> Drop for JournalWriter<S> {
    /// Waits for the helper threads and removes the spare segment, so no
    /// thread writes into the directory after the writer is gone.
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        if let Some(handle) = self.previous_sync.take() {
            let _ = handle.join();
        }
        if let Some(Ok(Ok(_))) = self.spare.take().map(JoinHandle::join) {
            let _ = self.storage.remove_file(&self.dir.join(SPARE_NAME));
        }
    }
}

/// A segment file, and in `async` mode its shared, writable map (shared
/// with the helper thread that syncs it).
#[derive(Debug)]
struct Segment<S: Storage> {
    file: S::File,
    path: PathBuf,
    /// The file's length: frames go below it.
    bytes: u64,
    map: Option<Arc<S::Map>>,
}

impl<S: Storage> Segment<S> {
    /// An existing segment (opened read-write) to append to.
    fn open(file: S::File, path: PathBuf, durability: Durability) -> io::Result<Segment<S>> {
        let bytes = file.size()?;
        let map = match durability {
            Durability::Async => Some(Arc::new(file.map(false)?)),
            _ => None,
        };
        Ok(Segment {
            file,
            path,
            bytes,
            map,
        })
    }

    /// Stores `bytes` at `at`, which the caller checked against `self.bytes`.
    #[inline]
    fn write(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        match &self.map {
            Some(map) => map.write(bytes, at as usize),
            None => self.file.write_all_at(bytes, at),
        }
    }

    /// Makes `[from, to)` durable. Through the map, only that range is
    /// synced (msync is an fdatasync of a range on Linux): an fdatasync of
    /// the whole file would also write back, and write-protect again, every
    /// page `make_spare` touched.
    fn sync(&self, from: u64, to: u64) -> io::Result<()> {
        match &self.map {
            Some(map) => map.flush_range(from as usize, (to - from) as usize),
            None => self.file.sync_data(),
        }
    }
}

/// A file of `bytes` zeros with its blocks allocated, synced with its size.
///
/// Allocated blocks mean a write can never meet a full disk. In `sync` mode
/// the zeros are written for real, because an fdatasync after overwriting
/// written blocks has no metadata to commit (measured here: ~0.12 ms p50
/// after 64 KiB, ~0.18 ms when appending to a growing file). In `async` mode
/// nobody waits for a sync, so `fallocate` reserves the blocks without
/// writing 64 MiB of zeros per segment (which took a quarter of all CPU time
/// at 6M records/s on two cores); the file is then mapped and each page
/// touched (a store of the zero it already holds), taking the page faults
/// here, on the helper thread, instead of in the business thread's first
/// store to each page. Those pages are dirty now; a sync flushes only the
/// range written since the last one, and the background sync of a finished
/// segment writes the rest.
fn make_spare<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: u64,
    durability: Durability,
) -> io::Result<Segment<S>> {
    let file = storage.open(path, OpenMode::CreateTruncate)?;
    if durability == Durability::Sync {
        zero_fill(&file, 0, bytes)?;
    } else {
        file.allocate(bytes)?;
    }
    file.sync_all()?;
    let map = match durability {
        Durability::Sync => None,
        _ => {
            let map = file.map(true)?;
            map.touch_pages();
            Some(Arc::new(map))
        }
    };
    Ok(Segment {
        file,
        path: path.to_path_buf(),
        bytes,
        map,
    })
}

/// The byte range of each file holding `frames` (in file order).
fn unsynced_ranges(frames: &VecDeque<(PathBuf, usize, usize, u64)>) -> Vec<(PathBuf, u64, u64)> {
    let mut ranges: Vec<(PathBuf, u64, u64)> = Vec::new();
    for (path, from, to, _) in frames {
        match ranges.last_mut() {
            Some((last, _, end)) if last == path => *end = *to as u64,
            _ => ranges.push((path.clone(), *from as u64, *to as u64)),
        }
    }
    ranges
}

/// Reads `[from, to)` of `path` and writes the same bytes back.
fn rewrite<S: Storage>(storage: &S, path: &Path, from: u64, to: u64) -> io::Result<()> {
    let file = storage.open(path, OpenMode::ReadWrite)?;
    let mut bytes = vec![0u8; (to - from) as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], from + filled as u64)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends before byte {to}"),
                ))
            }
            n => filled += n,
        }
    }
    file.write_all_at(&bytes, from)
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

/// Why `frame` is not the frame of `batch` (whose encoding it failed to
/// match), for [`JournalWriter::append_frame`]'s refusal.
fn not_the_frame_of(frame: &[u8], batch: &[Stamped]) -> String {
    let first = batch.first().map_or(0, |s| s.stamp.seq);
    let last = first + batch.len() as u64 - 1;
    match parse_frame(frame, 0) {
        Parsed::Frame(parsed) if parsed.next != frame.len() => {
            "the bytes hold more than one frame".into()
        }
        Parsed::Frame(parsed)
            if parsed.is_mark() || parsed.first_seq != first || parsed.last_seq() != last =>
        {
            format!(
                "the frame holds seqs {}..={} (count {}), the batch {first}..={last}",
                parsed.first_seq,
                parsed.first_seq + u64::from(parsed.count).saturating_sub(1),
                parsed.count
            )
        }
        Parsed::Frame(_) => format!(
            "the frame's bytes are not the encoding of the batch's records {first}..={last} \
             (other records, or bytes past the ones it claims)"
        ),
        Parsed::End => "the frame is empty".into(),
        Parsed::Bad(why) => format!("not a valid frame: {why}"),
    }
}

/// `async` mode's background fdatasync: every [`ASYNC_SYNC_INTERVAL`] it
/// msyncs the range of the current segment written since the last sync (an
/// fdatasync of that range; the whole file would also write back every
/// page the spare maker touched) and publishes the last seq in it as
/// durable, which the writer stamps into the next frames.
#[derive(Debug)]
struct Syncer<S: Storage> {
    shared: Arc<SyncShared<S>>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct SyncShared<S: Storage> {
    state: Mutex<SyncState<S>>,
    wake: Condvar,
    /// Every record up to this seq was synced by the helper.
    durable_seq: AtomicU64,
}

/// What the writer has written, as the helper needs it. Locked briefly per
/// frame by the writer and twice per round by the helper, never across a
/// sync.
#[derive(Debug)]
struct SyncState<S: Storage> {
    map: Option<Arc<S::Map>>,
    /// Bumped per segment, so a round that synced an old segment does not
    /// move the new one's `synced_to`.
    generation: u64,
    synced_to: u64,
    written_to: u64,
    written_seq: u64,
    /// The previous segment's own fdatasync is still running: seqs in the
    /// current segment cannot be claimed durable before it ends.
    previous_pending: bool,
    /// Where each background sync's latency goes, once metrics are set.
    fsync_seconds: Option<prometheus::Histogram>,
    stop: bool,
    failure: Option<String>,
}

impl<S: Storage> Syncer<S> {
    /// None if the thread cannot start: then only explicit syncs move the
    /// durable point, as before.
    fn start() -> Option<Syncer<S>> {
        let shared = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                map: None,
                generation: 0,
                synced_to: 0,
                written_to: 0,
                written_seq: 0,
                previous_pending: false,
                fsync_seconds: None,
                stop: false,
                failure: None,
            }),
            wake: Condvar::new(),
            durable_seq: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("journal-fdatasync".into())
            .spawn(move || run_syncer(&thread_shared))
            .ok()?;
        Some(Syncer {
            shared,
            handle: Some(handle),
        })
    }

    fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    fn failure(&self) -> Option<String> {
        self.shared.state.lock().failure.clone()
    }

    /// The writer wrote up to `written_to` of the current segment, through
    /// `seq`.
    fn written(&self, written_to: u64, seq: u64) {
        let mut state = self.shared.state.lock();
        state.written_to = written_to;
        state.written_seq = seq;
    }

    /// The writer now appends to `segment`, whose data so far ends at
    /// `written_to` (synced); `previous_pending`: the segment it left is
    /// being synced on its own thread.
    fn switch(&self, segment: &Segment<S>, written_to: u64, previous_pending: bool) {
        let mut state = self.shared.state.lock();
        state.map = segment.map.clone();
        state.generation += 1;
        state.synced_to = written_to;
        state.written_to = written_to;
        state.previous_pending = previous_pending;
    }

    fn stop(mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run_syncer<S: Storage>(shared: &SyncShared<S>) {
    let mut state = shared.state.lock();
    loop {
        if !state.stop {
            shared.wake.wait_for(&mut state, ASYNC_SYNC_INTERVAL);
        }
        if state.stop {
            return;
        }
        let Some(map) = state.map.clone() else {
            continue;
        };
        let (generation, from, to, seq) = (
            state.generation,
            state.synced_to,
            state.written_to,
            state.written_seq,
        );
        let previous_pending = state.previous_pending;
        let timer = state.fsync_seconds.clone().filter(|_| to > from);
        let synced = parking_lot::MutexGuard::unlocked(&mut state, || {
            if to > from {
                let started = std::time::Instant::now();
                let synced = map.flush_range(from as usize, (to - from) as usize);
                if let Some(timer) = timer {
                    timer.observe(started.elapsed().as_secs_f64());
                }
                synced
            } else {
                Ok(())
            }
        });
        if let Err(e) = synced {
            state.failure = Some(format!("msync of bytes {from}..{to}: {e}"));
            return;
        }
        if state.generation == generation {
            state.synced_to = state.synced_to.max(to);
            if !previous_pending {
                shared.durable_seq.fetch_max(seq, Ordering::AcqRel);
            }
        }
    }
}
