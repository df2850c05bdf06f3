//! Rebuilding the Ledger: newest valid snapshot, then every journal record
//! after it, read on a helper thread and applied in chunks through
//! `Ledger::apply_batch`. Also the read-only paths: `replay` for audits and
//! timing, `read_records` for `inspect`.

use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};

use super::error::JournalError;
use super::format::{ChainHead, Frame};
use super::lock::{lock_dir, DirLock};
use super::scan::{decode_frame, list_segments, require_dir, Scanner, TornTail};
use super::snapshot::{load_newest, snapshot_floor};
use crate::ledger::{Ledger, LedgerConfig};
use crate::request::Stamped;
use crate::storage::{zero_fill, OpenMode, OsStorage, Storage, StorageFile};

/// The state recovery rebuilt and what it had to say about the files.
#[derive(Debug)]
pub struct Recovered {
    pub ledger: Ledger,
    /// The seq of the snapshot recovery started from (0: none, fresh Ledger).
    pub snapshot_seq: u64,
    /// Journal records applied on top of the snapshot.
    pub records_replayed: u64,
    /// Skipped snapshots and truncated torn tails, one line each.
    pub warnings: Vec<String>,
    /// The journal's hash chain at the Ledger's last seq: what a writer
    /// continues from ([`super::JournalWriter::resume`]) and what a snapshot
    /// of this Ledger records.
    pub chain_head: ChainHead,
}

/// A read-only rebuild with its cost, for the `replay` command.
#[derive(Debug)]
pub struct Replay {
    pub recovered: Recovered,
    /// Wall time of snapshot load plus journal scan, decode and apply.
    pub elapsed: Duration,
    /// Bytes of journal segments read.
    pub journal_bytes: u64,
    /// The first seq the journal's segments hold (None: no segments). Above 1
    /// when segments a snapshot covers were pruned: the replay then started
    /// from the newest valid snapshot even if asked to start from seq 1.
    pub journal_first_seq: Option<u64>,
}

impl Replay {
    pub fn records_per_sec(&self) -> f64 {
        self.recovered.records_replayed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds the Ledger from `dir` and repairs a torn tail so a writer can
/// append after the last good record.
///
/// Torn tail: bad bytes in the last segment beyond the durable point (no
/// snapshot covers them, and no valid frame after them was written once
/// they were synced; see `journal/README.md`). Nothing shows they were
/// synced (for the newest group, a completed last fdatasync leaves no trace
/// the journal can read, see `journal/README.md`), so they are zeroed (the file keeps its preallocated length) and a warning
/// names the file and offset. Anything else bad stops recovery with
/// [`JournalError::Corrupt`] before a single byte is changed.
///
/// Because it may write, it takes the directory's lock ([`lock_dir`]) for its
/// duration and returns [`JournalError::Locked`], reading nothing, if another
/// process or writer holds it; it releases the lock on return. To recover and
/// then append with no other writer slipping in between, take the lock once
/// and use [`recover_locked`] and [`JournalWriter::open_locked`]. A `dir` that
/// does not exist gives an empty Ledger and is not created.
///
/// [`JournalWriter::open_locked`]: super::JournalWriter::open_locked
pub fn recover(dir: impl AsRef<Path>, config: LedgerConfig) -> Result<Recovered, JournalError> {
    let dir = dir.as_ref();
    match OsStorage.info(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Recovered {
                ledger: Ledger::new(config),
                snapshot_seq: 0,
                records_replayed: 0,
                warnings: Vec::new(),
                chain_head: ChainHead::GENESIS,
            })
        }
        Err(e) => return Err(JournalError::io(dir, "read the journal directory", e)),
        Ok(_) => {}
    }
    recover_locked(&lock_dir(dir)?, config)
}

/// [`recover`] for the holder of the directory's lock: rebuilds the Ledger
/// from `lock.dir()` and zeroes a torn tail, without taking or releasing the
/// lock.
pub fn recover_locked<S: Storage>(
    lock: &DirLock<S>,
    config: LedgerConfig,
) -> Result<Recovered, JournalError> {
    let storage = lock.storage();
    let (mut recovered, torn, _) = rebuild(storage, lock.dir(), config, true)?;
    if let Some(torn) = torn {
        zero_tail(storage, &torn)?;
        recovered
            .warnings
            .push(format!("{}; zeroed them", torn.describe()));
    }
    Ok(recovered)
}

/// How far a rebuild has come, reported once per chunk of about a thousand
/// records (never per record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Records applied so far.
    pub records: u64,
    /// Journal bytes read so far (segments are read whole, zero tail included).
    pub bytes_read: u64,
    /// Size of the segment files to read; `bytes_read` reaches it at the end
    /// unless a torn tail stops the scan early.
    pub bytes_total: u64,
}

/// Rebuilds the Ledger like [`recover`] but never writes: a torn tail is only
/// reported. `from_snapshot: false` replays the whole journal from seq 1,
/// unless segments were pruned (see [`Replay::journal_first_seq`]). A `dir`
/// that does not exist is an error.
///
/// Takes no lock, so it may read a journal a live writer is appending to:
/// it sees a prefix, and a frame being written may show up as a torn tail
/// (reported, left alone).
pub fn replay(
    dir: impl AsRef<Path>,
    config: LedgerConfig,
    from_snapshot: bool,
) -> Result<Replay, JournalError> {
    replay_with_progress(dir, config, from_snapshot, |_| {})
}

/// [`replay`], calling `progress` as records are applied (on the calling
/// thread, between chunks), e.g. to drive a progress bar.
pub fn replay_with_progress(
    dir: impl AsRef<Path>,
    config: LedgerConfig,
    from_snapshot: bool,
    mut progress: impl FnMut(&Progress),
) -> Result<Replay, JournalError> {
    let start = Instant::now();
    let dir = dir.as_ref();
    require_dir(&OsStorage, dir)?;
    let journal_first_seq = list_segments(&OsStorage, dir)?.first().map(|s| s.first_seq);
    // A pruned journal cannot be replayed from seq 1: start from a snapshot.
    let from_snapshot = from_snapshot || journal_first_seq.is_some_and(|first| first > 1);
    let (mut recovered, torn, journal_bytes) =
        rebuild_with_progress(&OsStorage, dir, config, from_snapshot, &mut progress)?;
    let elapsed = start.elapsed();
    if let Some(torn) = torn {
        recovered.warnings.push(format!(
            "{}; left in place (replay is read-only)",
            torn.describe()
        ));
    }
    Ok(Replay {
        recovered,
        elapsed,
        journal_bytes,
        journal_first_seq,
    })
}

/// Records per hand-over from the reading thread to the applying one (~320
/// KiB): the channel costs nothing per record. Measured on the 10M-record
/// wallet journal: 256 records per chunk ran ~25% slower, 1024 to 16384
/// within noise of each other.
const CHUNK_RECORDS: usize = 4096;

/// Chunks in flight between the two threads: reading runs ahead, but only a
/// little, so memory stays bounded however long the journal is.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Decoded records on their way from the reading thread to the Ledger.
struct Chunk {
    records: Vec<Stamped>,
    /// Journal bytes read once these records were decoded.
    bytes_read: u64,
}

type Rebuilt = (Recovered, Option<TornTail>, u64);

/// The rebuild [`recover_locked`] and [`replay`] share: never writes, and
/// returns the torn tail (if any) for the caller to zero or report.
pub(crate) fn rebuild<S: Storage>(
    storage: &S,
    dir: &Path,
    config: LedgerConfig,
    from_snapshot: bool,
) -> Result<Rebuilt, JournalError> {
    rebuild_with_progress(storage, dir, config, from_snapshot, &mut |_| {})
}

/// Reads, checks and decodes on a helper thread while this thread applies.
///
/// Read + CRC + decode cost ~30 ns per record and applying ~60-65 ns on the
/// wallet journal of `examples/wallet_journal.rs`, so on two idle cores the
/// rebuild runs at nearly the speed of applying alone: ~75 ns per record
/// against ~97 ns for the same work in one loop (alternating runs, each
/// started on an idle machine). An earlier try on a machine loaded by other
/// builds (commit cb47c7b) measured within noise: with no core to spare the
/// two threads only take turns. `apply_batch` promises the same state
/// whatever the batching, so chunks need not follow frames.
fn rebuild_with_progress<S: Storage>(
    storage: &S,
    dir: &Path,
    config: LedgerConfig,
    from_snapshot: bool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Rebuilt, JournalError> {
    let mut warnings = Vec::new();
    let (mut ledger, snapshot_head, snapshot_path) = if from_snapshot {
        load_newest(storage, dir, config, &mut warnings)?
    } else {
        (Ledger::new(config), ChainHead::GENESIS, None)
    };
    let snapshot_seq = snapshot_head.seq;
    let mut scanner = Scanner::new(
        storage.clone(),
        list_segments(storage, dir)?,
        snapshot_seq,
        snapshot_floor(storage, dir)?,
    );
    if let Some(path) = snapshot_path {
        scanner.expect(snapshot_head, path);
    }
    let mut report = Progress {
        records: 0,
        bytes_read: 0,
        bytes_total: scanner.bytes_to_read(),
    };
    let have = ledger.last_seq();
    let (full_tx, full_rx) = bounded::<Chunk>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = bounded::<Vec<Stamped>>(CHUNKS_IN_FLIGHT + 2);
    let read = thread::scope(|scope| {
        let reader = thread::Builder::new()
            .name("journal-read".into())
            .spawn_scoped(scope, move || {
                read_chunks(scanner, have, snapshot_seq, full_tx, empty_rx)
            })
            .map_err(|e| JournalError::io(dir, "start the journal reading thread for", e))?;
        for chunk in full_rx.iter() {
            ledger.apply_batch(&chunk.records, |_, _| {});
            report.records += chunk.records.len() as u64;
            report.bytes_read = chunk.bytes_read;
            progress(&report);
            let mut records = chunk.records;
            records.clear();
            let _ = empty_tx.try_send(records);
        }
        match reader.join() {
            Ok(read) => read,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let (torn, bytes_read, journal_head) = read.map_err(|e| naming_skipped(e, &warnings))?;
    // A journal that ends before the snapshot (records only the snapshot
    // holds) goes on from the snapshot's chain.
    let chain_head = if journal_head.seq >= ledger.last_seq() {
        journal_head
    } else {
        snapshot_head
    };
    Ok((
        Recovered {
            ledger,
            snapshot_seq,
            records_replayed: report.records,
            warnings,
            chain_head,
        },
        torn,
        bytes_read,
    ))
}

/// The reading half of [`rebuild_with_progress`]: every record after `have`,
/// checked for gaps, in chunks of whole frames. Returns the torn tail (if
/// any), the bytes read and the chain's head.
fn read_chunks<S: Storage>(
    mut scanner: Scanner<S>,
    mut have: u64,
    snapshot_seq: u64,
    full: Sender<Chunk>,
    empty: Receiver<Vec<Stamped>>,
) -> Result<(Option<TornTail>, u64, ChainHead), JournalError> {
    let mut records = Vec::with_capacity(CHUNK_RECORDS);
    while let Some(frame) = scanner.next_frame()? {
        if frame.last_seq() <= have {
            continue;
        }
        let skip = have.saturating_sub(frame.first_seq - 1) as usize;
        if frame.first_seq + skip as u64 != have + 1 {
            return Err(gap(scanner.path(), &frame, have, snapshot_seq));
        }
        let at = records.len();
        decode_frame(
            scanner.records(&frame),
            &frame,
            scanner.path(),
            &mut records,
        )?;
        records.drain(at..at + skip);
        have = frame.last_seq();
        if records.len() >= CHUNK_RECORDS {
            let next = empty
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK_RECORDS));
            let chunk = Chunk {
                records: std::mem::replace(&mut records, next),
                bytes_read: scanner.bytes_read,
            };
            if full.send(chunk).is_err() {
                break;
            }
        }
    }
    // Even empty: the last progress report then counts every byte read.
    let _ = full.send(Chunk {
        records,
        bytes_read: scanner.bytes_read,
    });
    Ok((scanner.torn.take(), scanner.bytes_read, scanner.head()))
}

fn gap(path: &Path, frame: &Frame, have: u64, snapshot_seq: u64) -> JournalError {
    JournalError::corrupt(
        path,
        frame.offset,
        format!(
            "records {}..{} are missing: the state is at seq {have} (snapshot {snapshot_seq}) but the journal continues at seq {}; \
             were segments pruned while the snapshot covering them is now damaged or gone?",
            have + 1,
            frame.first_seq - 1,
            frame.first_seq
        ),
    )
}

/// Adds the snapshots recovery skipped to a corruption error: records that
/// go missing after a damaged snapshot are that snapshot's loss, and it is
/// the file to restore.
fn naming_skipped(error: JournalError, skipped: &[String]) -> JournalError {
    match error {
        JournalError::Corrupt {
            file,
            offset,
            reason,
        } if !skipped.is_empty() => JournalError::Corrupt {
            file,
            offset,
            reason: format!("{reason} ({})", skipped.join("; ")),
        },
        other => other,
    }
}

/// Zeroes the torn bytes in place, keeping the file's preallocated length, so
/// the next writer finds end-of-data exactly where the good records stop.
fn zero_tail<S: Storage>(storage: &S, torn: &TornTail) -> Result<(), JournalError> {
    let fail = |e| JournalError::io(&torn.path, "zero the torn tail of", e);
    let file = storage
        .open(&torn.path, OpenMode::ReadWrite)
        .map_err(fail)?;
    zero_fill(&file, torn.offset as u64, torn.file_bytes as u64).map_err(fail)?;
    file.sync_data().map_err(fail)
}

/// Streams journal records with seq ≥ `from_seq`, for `inspect` and audits.
/// Read-only and lock-free like [`replay`], so safe on a live journal. Ends
/// quietly at a torn tail (see [`Records::torn_tail`]); yields one `Err` and
/// then stops at corruption.
pub fn read_records(dir: impl AsRef<Path>, from_seq: u64) -> Result<Records, JournalError> {
    Ok(Records {
        scanner: Scanner::reading(dir.as_ref(), from_seq)?,
        from_seq,
        batch: Vec::new(),
        next: 0,
        done: false,
    })
}

/// The iterator [`read_records`] returns.
pub struct Records {
    scanner: Scanner,
    from_seq: u64,
    batch: Vec<Stamped>,
    next: usize,
    done: bool,
}

impl Records {
    /// After the iterator ends: where the journal's torn tail starts, if any.
    pub fn torn_tail(&self) -> Option<String> {
        self.scanner.torn.as_ref().map(TornTail::describe)
    }
}

impl Iterator for Records {
    type Item = Result<Stamped, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(record) = self.batch.get(self.next) {
                self.next += 1;
                if record.stamp.seq >= self.from_seq {
                    return Some(Ok(*record));
                }
                continue;
            }
            let frame = match self.scanner.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.next = 0;
            self.batch.clear();
            if frame.last_seq() < self.from_seq {
                continue;
            }
            if let Err(e) = decode_frame(
                self.scanner.records(&frame),
                &frame,
                self.scanner.path(),
                &mut self.batch,
            ) {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.done = true;
        None
    }
}
